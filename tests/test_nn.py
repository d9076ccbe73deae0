"""Tests for the shared transformer and its KV cache."""

import math

import pytest
import torch
from torch.nn import functional as F

from digestlab.nn import GPT, GPTConfig, KVCache
from digestlab.nn.inspect import residual_hook, stream_after
from digestlab.objectives import sequence_logprobs

BASE = {"block_size": 32, "n_layer": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "head_dim": 8}

VARIANTS = {
    "mha": {},
    "gqa": {"n_kv_heads": 2},
    "mqa": {"n_kv_heads": 1},
    "mqa_half_head_dim": {"n_kv_heads": 1, "head_dim": 4},
    "mqa_cla2": {"n_kv_heads": 1, "n_layer": 4, "kv_share": 2},
    "mqa_cla3_5_layers": {"n_kv_heads": 1, "n_layer": 5, "kv_share": 3},
    "mla": {"n_kv_heads": 4, "kv_latent_dim": 12, "kv_rope_dim": 4, "mlp": "gelu"},
}


def make_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **overrides}))
    return model.eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, length), generator=g)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_matches_full_forward(variant):
    model = make_model(**VARIANTS[variant])
    idx = tokens(2, 10)
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(2)
        parts = [model(idx[:, :3], cache=cache)[0], model(idx[:, 3:6], cache=cache)[0]]
        parts += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(6, 10)]
    assert len(cache) == 10
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_bytes_per_token_matches_formula_and_cache_size(variant):
    model = make_model(**VARIANTS[variant])
    c = model.config
    producers = math.ceil(c.n_layer / c.kv_share)
    if c.kv_latent_dim:
        expected = producers * (c.kv_latent_dim + c.kv_rope_dim) * 2
    else:
        expected = producers * 2 * c.n_kv_heads * c.head_dim * 2
    assert model.kv_bytes_per_token() == expected
    assert model.kv_bytes_per_token(dtype_bytes=4) == 2 * expected

    cache = model.new_cache(3)
    with torch.no_grad():
        model(tokens(3, 7), cache=cache)
    assert cache.bytes_per_token() == model.kv_bytes_per_token(dtype_bytes=4)  # fp32 cache
    assert cache.nbytes() == 7 * 3 * cache.bytes_per_token()


def test_cla_variants_cache_less_than_mha():
    mha = make_model(n_layer=4).kv_bytes_per_token()
    assert make_model(n_layer=4, n_kv_heads=1).kv_bytes_per_token() == mha // 4
    assert make_model(n_layer=4, n_kv_heads=1, kv_share=2).kv_bytes_per_token() == mha // 8


def test_cla_consumers_have_no_kv_parameters_and_fewer_params():
    base = make_model(n_layer=5, n_kv_heads=1)
    cla3 = make_model(n_layer=5, n_kv_heads=1, kv_share=3)
    producers = [block.attn.produces_kv for block in cla3.blocks]
    assert producers == [True, False, False, True, False]
    for block, produces in zip(cla3.blocks, producers, strict=True):
        names = [n for n, _ in block.attn.named_parameters()]
        assert any(n.startswith("kv_") for n in names) == produces
    kv_params = base.blocks[0].attn.kv_proj.weight.numel()
    assert base.num_params() - cla3.num_params() == 3 * kv_params


def test_mla_consumers_have_no_latent_parameters():
    model = make_model(n_layer=2, kv_share=2, kv_latent_dim=12, kv_rope_dim=4)
    consumer = [n for n, _ in model.blocks[1].attn.named_parameters()]
    assert consumer == ["q_proj.weight", "out_proj.weight"]


def test_cla_consumers_attend_to_the_producers_values():
    model = make_model(n_layer=4, n_kv_heads=1, kv_share=2)
    outputs = {}
    hooks = [
        model.blocks[i].attn.register_forward_hook(
            lambda m, a, out, i=i: outputs.__setitem__(i, out[0])
        )
        for i in range(4)
    ]
    with torch.no_grad():
        model(tokens(1, 6))
        assert all(outputs[i].abs().max() > 0 for i in range(4))
        model.blocks[0].attn.kv_proj.weight.zero_()  # producer of layers 0 and 1: V = 0
        model(tokens(1, 6))
    for h in hooks:
        h.remove()
    assert outputs[1].abs().max() == 0  # consumer's attention reads the zeroed V
    assert outputs[3].abs().max() > 0  # the other group still has its own producer


@pytest.mark.parametrize(
    "variant",
    [
        {"n_layer": 3, "n_kv_heads": 1, "kv_share": 3},  # every layer reads layer 0's K/V
        {"n_layer": 1, "kv_latent_dim": 12, "kv_rope_dim": 4},
    ],
    ids=["mqa_cla3", "mla_1_layer"],
)
def test_keep_with_reassigned_positions_matches_forward_over_kept_tokens(variant):
    # cached K/V here come straight from token embeddings, so they do not depend on the
    # dropped context and the evicted cache must match a fresh pass over the kept tokens
    model = make_model(**variant)
    idx = tokens(2, 12)
    kept = torch.tensor([[0, 1, 7, 9, 10, 11], [0, 2, 3, 5, 8, 11]])  # per-row slots
    with torch.no_grad():
        cache = model.new_cache(2)
        model(idx, cache=cache)
        cache.keep(kept, positions=torch.arange(6))
        assert len(cache) == 6
        nxt = tokens(2, 2, seed=5)
        step, _ = model(nxt, cache=cache)  # default positions continue at 6, 7
        reference, _ = model(torch.cat([idx.gather(1, kept), nxt], dim=1))
    torch.testing.assert_close(step, reference[:, 6:], atol=1e-5, rtol=1e-5)


def test_keep_without_positions_keeps_old_position_ids():
    model = make_model()
    cache = model.new_cache(1)
    with torch.no_grad():
        model(tokens(1, 8), positions=torch.arange(8) + 100, cache=cache)
    cache.keep(torch.tensor([0, 5, 7]))
    assert cache.positions.tolist() == [[100, 105, 107]]
    assert cache.nbytes() == 3 * cache.bytes_per_token()
    assert cache.next_positions(2).tolist() == [[108, 109]]


def test_logits_depend_only_on_relative_positions():
    model = make_model()
    idx = tokens(1, 8)
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(idx, positions=torch.arange(8) + 50)
        c, _ = model(idx, positions=torch.arange(8) * 2)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert (a - c).abs().max() > 1e-3


def test_residual_hook_reads_block_output():
    model = make_model()
    idx = tokens(2, 5)
    seen = []
    with torch.no_grad(), residual_hook(model, 0, lambda h: seen.append(h.clone())):
        model(idx)
        expected = model.blocks[0](model.wte(idx), *_rope(model, 5), None, None, None)[0]
    assert len(seen) == 2  # once for model(idx), once for the direct block call
    torch.testing.assert_close(seen[0], expected)


def _rope(model: GPT, length: int):
    pos = torch.arange(length).expand(1, length)
    rope = model.rotary(pos)
    return rope, rope


def test_residual_hook_replacement_changes_logits_and_is_removed():
    model = make_model()
    idx = tokens(1, 5)
    with torch.no_grad():
        before, _ = model(idx)
        with residual_hook(model, 1, torch.zeros_like):
            zeroed, _ = model(idx)
        after, _ = model(idx)
    assert (zeroed - before).abs().max() > 1e-3
    # zero residual stream into the final norm gives a zero vector, hence all-zero logits
    assert zeroed.abs().max() == 0
    torch.testing.assert_close(after, before)
    assert not model.blocks[1]._forward_hooks


def test_sequence_logprobs_equals_picked_log_softmax_and_has_gradients():
    model = make_model()
    model.train()
    ids = tokens(2, 7)
    prompt_lengths, lengths = torch.tensor([4, 2]), torch.tensor([7, 6])
    got = sequence_logprobs(model, ids, prompt_lengths, lengths)
    logp = F.log_softmax(model(ids)[0], dim=-1)
    expected = torch.stack([sum(logp[b, t - 1, ids[b, t]] for t in range(p, n))
                            for b, (p, n) in enumerate([(4, 7), (2, 6)])])
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    assert model.wte.weight.grad is not None and model.wte.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("variant", ["mha", "mqa_cla2", "mla"])
def test_padded_batch_logprobs_equal_each_row_alone(variant):
    from digestlab.objectives import pack_rows

    model = make_model(**VARIANTS[variant])
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, 256, (n,), generator=g).tolist() for n in (3, 7, 1)]
    responses = [torch.randint(1, 256, (n,), generator=g).tolist() for n in (5, 2, 9)]
    ids, prompt_lengths, lengths = pack_rows(prompts, responses)
    assert ids.shape == (3, 10) and lengths.tolist() == [8, 9, 10]
    with torch.no_grad():
        batched = sequence_logprobs(model, ids, prompt_lengths, lengths)
        alone = [sequence_logprobs(model, *pack_rows([p], [r]))
                 for p, r in zip(prompts, responses, strict=True)]
    torch.testing.assert_close(batched, torch.cat(alone), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["mha", "mqa_cla3_5_layers", "mla"])
def test_left_padding_with_attention_mask_matches_unpadded_rows(variant):
    model = make_model(**VARIANTS[variant])
    rows = [tokens(1, 6, seed=4)[0], tokens(1, 3, seed=5)[0]]
    idx = torch.zeros(2, 6, dtype=torch.long)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    for b, row in enumerate(rows):
        idx[b, 6 - len(row):], mask[b, 6 - len(row):] = row, True
    with torch.no_grad():
        padded, _ = model(idx, attention_mask=mask)
        for b, row in enumerate(rows):
            alone, _ = model(row[None])
            torch.testing.assert_close(padded[b, 6 - len(row):], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()  # padding queries see themselves, never nothing


def test_generate_from_left_padded_prompts_matches_each_prompt_alone():
    model = make_model()
    prompts = [tokens(1, 5, seed=6)[0], tokens(1, 2, seed=7)[0]]
    idx = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for b, p in enumerate(prompts):
        idx[b, 5 - len(p):], mask[b, 5 - len(p):] = p, True
    together = model.generate(idx, 6, top_k=1, attention_mask=mask)
    for b, p in enumerate(prompts):
        alone = model.generate(p[None], 6, top_k=1)
        assert torch.equal(together[b, 5:], alone[0, len(p):])


def test_cache_is_for_inference_and_never_grows_past_block_size():
    model = make_model(block_size=100)
    cache = model.new_cache(1)
    with pytest.raises(RuntimeError, match="for inference"):
        model(tokens(1, 3), cache=model.new_cache(1))  # gradients on: refused, not corrupted
    with torch.no_grad():
        model(tokens(1, 65), cache=cache)
    assert len(cache) == 65 and cache.capacity == 100  # 128 would pass block_size


def test_cache_grows_geometrically_instead_of_copying_every_step():
    model = make_model(block_size=1024, n_layer=1)
    cache = model.new_cache(1)
    storages, capacities = set(), set()
    with torch.no_grad():
        model(tokens(1, 1), cache=cache)
        for t in range(1, 1024):
            model(tokens(1, 1, seed=t), cache=cache)
            storages.add(cache._buffers[0][0].data_ptr())
            capacities.add(cache.capacity)
    assert len(cache) == 1024 and cache.capacity == 1024
    # 16, 32, ..., 1024: seven allocations for 1,024 appends
    assert sorted(capacities) == [16 * 2**i for i in range(7)]
    assert len(storages) <= len(capacities)


def test_generate_is_deterministic_with_seeded_generator():
    model = make_model()
    prompt = tokens(2, 3)
    a = model.generate(prompt, 6, top_k=20, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 6, top_k=20, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 6, top_k=20, generator=torch.Generator().manual_seed(8))
    assert a.shape == (2, 9)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, :3], prompt)


@pytest.mark.parametrize("variant", ["mqa_cla3_5_layers", "mla"])
def test_generate_top_k_1_is_greedy_argmax_of_full_forward(variant):
    model = make_model(**VARIANTS[variant])
    out = model.generate(tokens(1, 3), 5, top_k=1)
    with torch.no_grad():
        logits, _ = model(out[:, :-1])
    assert torch.equal(logits[:, 2:].argmax(-1), out[:, 3:])


def test_forward_loss_is_mean_cross_entropy():
    model = make_model()
    idx = tokens(2, 6)
    targets = tokens(2, 6, seed=3)
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 6, 256)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)))
    assert model(idx)[1] is None


def test_flops_per_token_formula():
    model = make_model(n_layer=3, head_dim=12)  # attention width 48 differs from d_model 32
    n = sum(p.numel() for p in model.parameters())
    assert model.num_params() == n  # tied head: the embedding matrix is the output matmul
    assert model.flops_per_token(16) == 6 * n + 12 * 3 * 48 * 16

    untied = make_model(tie_embeddings=False)
    total = sum(p.numel() for p in untied.parameters())
    assert untied.num_params(non_embedding=False) == total
    assert untied.num_params() == total - 256 * 32


def test_tied_embeddings_share_one_matrix():
    model = make_model()
    assert model.lm_head.weight is model.wte.weight
    untied = make_model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight


def test_new_cache_matches_model_dtype_and_layers():
    model = make_model(n_layer=5, kv_share=2)
    cache = model.new_cache(2)
    assert isinstance(cache, KVCache)
    assert cache.dtype == torch.float32 and len(cache.layers) == 3 and len(cache) == 0


def test_forward_rejects_more_tokens_than_block_size():
    model = make_model(block_size=8)
    cache = model.new_cache(1)
    with torch.no_grad():
        model(tokens(1, 6), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            model(tokens(1, 3), cache=cache)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_heads": 4, "n_kv_heads": 3}, "multiple of n_kv_heads"),
        ({"kv_latent_dim": 8}, "kv_rope_dim"),
        ({"kv_rope_dim": 4}, "only used with latent"),
        ({"head_dim": 7}, "head_dim must be even"),
        ({"mlp": "relu"}, "mlp must be"),
        ({"kv_share": 0}, "kv_share must be >= 1"),
    ],
)
def test_config_rejects_invalid_combinations(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**BASE, **overrides})


def test_generate_stops_once_every_row_wrote_the_stop_token_and_returns_its_logits():
    model = make_model()
    prompt = tokens(2, 4, seed=3)
    full, logits = model.generate(prompt, 8, temperature=0.0, return_logits=True)
    assert logits.shape == (2, 8, 256)
    assert torch.equal(logits.argmax(-1), full[:, 4:])  # each token drawn from its logits
    stop = int(full[0, 4])  # the first row writes it first
    alone = model.generate(prompt[:1], 8, temperature=0.0, stop_token=stop)
    assert torch.equal(alone, full[:1, :5])  # stopped as soon as the one row wrote it
    assert not (full[1, 4:] == stop).any()  # a row that never writes it keeps both going
    both = model.generate(prompt, 8, temperature=0.0, stop_token=stop)
    assert torch.equal(both, full)


def test_readout_reads_each_row_as_if_it_were_alone():
    from digestlab.nn.readout import greedy, residual, spliced_losses, stream

    model = make_model()
    rows = [tokens(1, 7, seed=4)[0].tolist(), tokens(1, 3, seed=5)[0].tolist()]
    acts = stream(model, rows, layer=0, pad=0)
    last = stream(model, rows, layer=0, pad=0, last_only=True)
    alone = [residual(model, torch.tensor([r]), 0)[0] for r in rows]
    # every position but the leading context token, row after row; and each row's last
    assert torch.allclose(acts, torch.cat([a[1:] for a in alone]), atol=1e-5)
    assert torch.allclose(last, torch.stack([a[-1] for a in alone]), atol=1e-5)
    probs, written = greedy(model, rows, 5, pad=0, stop=None)
    for r, p, w in zip(rows, probs, written, strict=True):
        logits, _ = model(torch.tensor([r]))
        assert torch.allclose(p, logits[0, -1].softmax(-1), atol=1e-5)
        assert w == model.generate(torch.tensor([r]), 5, temperature=0.0)[0, len(r):].tolist()
    # the model's loss over the scored positions, untouched and through an identity hook
    losses = spliced_losses(model, rows, 0, 0, {"model": None, "same": lambda h: h})
    ids = torch.tensor([rows[0]])
    _, own = model(ids[:, :-1], ids[:, 1:])
    assert losses["model"] == pytest.approx(losses["same"])
    total = own.item() * 6
    ids = torch.tensor([rows[1]])
    _, own = model(ids[:, :-1], ids[:, 1:])
    assert losses["model"] == pytest.approx((total + own.item() * 2) / 8, rel=1e-5)


def test_stream_after_is_the_residual_stream_a_hook_reads():
    model = make_model()
    idx = tokens(2, 6)
    seen = []
    with residual_hook(model, 0, lambda h: seen.append(h)):
        model(idx)
    assert torch.equal(stream_after(model, idx, 0), seen[0])
