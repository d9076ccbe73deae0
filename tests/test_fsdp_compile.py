"""The FSDP + torch.compile experiment: its levers, its plan of runs, how it decides its claims,
and a whole smoke-scale run (real processes, real FSDP over two ranks, real compilation)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from digestlab.claims import Claim
from digestlab.configs import GPTConfig
from digestlab.experiments import ExperimentError, load_spec, merge_params
from digestlab.experiments.fsdp_compile import (
    SCALES,
    Params,
    checkpoint_name,
    parity_setups,
    setups,
)
from digestlab.experiments.fsdp_compile.run import decide_claims, shifts
from digestlab.nn import GPT
from digestlab.parallel import checkpoint_blocks, checkpointed_blocks, compile_blocks, launch


@pytest.mark.parametrize(("n_layer", "fraction", "chosen"), [
    (4, 0.0, []), (4, 0.5, [1, 3]), (4, 1.0, [0, 1, 2, 3]), (6, 1 / 3, [2, 5]), (3, 0.5, [1]),
])
def test_checkpointed_blocks_are_spread_evenly_over_depth(n_layer, fraction, chosen):
    assert checkpointed_blocks(n_layer, fraction) == chosen


def test_checkpointed_fraction_must_lie_in_the_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        checkpointed_blocks(4, 1.5)


def test_checkpointing_recomputes_the_same_gradients():
    config = GPTConfig(block_size=16, n_layer=4, d_model=32, n_heads=2, n_kv_heads=2,
                       head_dim=16)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    grads = []
    for fraction in (0.0, 1.0):
        torch.manual_seed(0)
        model = GPT(config)
        assert len(checkpoint_blocks(model, fraction)) == 4 * fraction
        _, loss = model(x, x)
        loss.backward()
        grads.append({n.replace("._checkpoint_wrapped_module", ""): p.grad
                      for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_compiling_each_block_keeps_the_model_and_its_gradients():
    config = GPTConfig(block_size=16, n_layer=2, d_model=32, n_heads=2, n_kv_heads=2,
                       head_dim=16)
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = GPT(config)
        checkpoint_blocks(model, 0.5)
        if compiled:
            compile_blocks(model)
        _, loss = model(x, x)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()  # compiled in place: the same parameter names
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_failing_launch_raises_with_the_exit_status(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(RuntimeError, match="status 3"):
        launch([str(script)])


def params(**changes) -> dict:
    return SCALES["smoke"].model_dump() | changes


@pytest.mark.parametrize(("changes", "message"), [
    ({"world_sizes": [2]}, "include 1"),
    ({"seq_len": 1000}, "block_size"),
    ({"repeats": 1}, "greater than or equal to 2"),
    ({"memory_rounds": 3}, "memory_rounds"),
    ({"parity": SCALES["smoke"].parity.model_dump() | {"batch_size": 3}}, "split evenly"),
    ({"parity": SCALES["smoke"].parity.model_dump() | {"seeds": 1}},
     "greater than or equal to 2"),
])
def test_params_refuse_what_cannot_be_run(changes, message):
    with pytest.raises(ValueError, match=message):
        Params.model_validate(params(**changes))


def test_entry_params_merge_over_the_scale_and_are_checked():
    spec = load_spec("fsdp_compile")
    assert merge_params(spec, "cpu", {"repeats": 4}).repeats == 4
    with pytest.raises(ExperimentError, match="world_sizes"):
        merge_params(spec, "cpu", {"world_sizes": [2, 4]})


def test_the_cpu_parity_runs_are_long_and_many_enough_to_judge_a_shift():
    parity = SCALES["cpu"].parity
    assert parity.steps >= 200 and parity.seeds >= 3
    assert SCALES["gpu"].parity.steps >= 200 and SCALES["gpu"].repeats >= 4


def test_rounds_pair_the_timed_configurations_and_memory_runs_only_on_cpu():
    p = SCALES["cpu"]
    cpu = setups(p, gpu=False)
    timed = [s for s in cpu if not s.memory]
    names = ["eager", "compile", "compile + checkpoint 0.5", "compile + checkpoint 1"]
    assert sorted((s.seed, s.name) for s in timed) == sorted(
        (r, n) for r in range(p.repeats) for n in names)
    assert [s.name for s in timed[:8]] == names + names[1:] + names[:1]  # the order turns
    assert all(s.compile == (s.name != "eager") and not s.fsdp for s in timed)
    memory = [s for s in cpu if s.memory]
    assert [(s.name, s.seed, s.checkpoint) for s in memory] == [
        (name, r, f) for r in range(p.memory_rounds)
        for name, f in (("eager", 0.0), ("eager + checkpoint 0.5", 0.5),
                        ("eager + checkpoint 1", 1.0))]
    assert not any(s.compile or s.fsdp for s in memory)

    gpu = setups(p, gpu=True)
    assert not any(s.memory for s in gpu)
    assert [s.name for s in gpu if s.fsdp] == ["FSDP x1 + bf16 params"]


def test_parity_runs_share_a_process_per_world_size_and_run_every_seed_with_every_lever():
    p = SCALES["cpu"]
    alone, pair = parity_setups(p, devices=2)
    assert [(s.name, s.seed, s.compile) for s in alone] == [
        (name, seed, name == "compile") for seed in range(p.parity.seeds)
        for name in ("eager", "compile")]
    assert {s.world for s in alone} == {1} and all(s.parity for s in alone + pair)
    assert [(s.name, s.seed, s.world) for s in pair] == [
        ("FSDP x2", seed, 2) for seed in range(p.parity.seeds)]
    assert len(parity_setups(p, devices=1)) == 1  # one GPU: no second rank


def fake_runs(speed: dict[str, list[float]], eager_mfu: float = 0.4) -> dict[str, list[dict]]:
    """Timed runs as the workers report them, with the given tokens/s; MFU follows speed,
    eager at `eager_mfu`, against one measured peak."""
    return {name: [{"setup": {"name": name, "seed": i}, "tokens_per_s": v,
                    "mfu": eager_mfu * v / speed["eager"][i], "peak_flops": 1e12}
                   for i, v in enumerate(values)]
            for name, values in speed.items()}


SPEED = {"eager": [100.0, 102.0, 98.0], "compile": [130.0, 131.0, 128.0],
         "compile + checkpoint 0.5": [120.0, 121.0, 118.0],
         "compile + checkpoint 1": [105.0, 106.0, 104.0]}
MEMORY = {0.0: [150e6, 150.1e6, 149.9e6], 0.5: [100e6, 100.1e6, 99.9e6],
          1.0: [60e6, 60.2e6, 59.9e6]}
EAGER = [2.05, 2.06, 2.04, 2.07, 2.03, 2.05]  # sd 0.0141 over seeds
LOSSES = {"eager": EAGER,
          "compile": [x + d for x, d in zip(EAGER, [0.002, -0.003, 0.001, 0.0, -0.002, 0.003],
                                            strict=True)],
          "FSDP x2": [x + d for x, d in zip(EAGER, [0.001, -0.001, 0.0, 0.002, -0.002, 0.0],
                                            strict=True)]}


def decided(speed=SPEED, memory=MEMORY, losses=LOSSES, eager_mfu=0.4) -> dict[str, Claim]:
    return {c.id: c for c in decide_claims(fake_runs(speed, eager_mfu), memory, losses)}


def test_every_claim_is_declared_and_its_bounds_say_where_they_come_from():
    spec = load_spec("fsdp_compile")
    assert list(spec.CLAIMS) == ["compile-speeds-up", "compile-keeps-the-loss",
                                 "selective-checkpointing-under-a-memory-cap",
                                 "fsdp-world-size-keeps-the-loss"]
    speed_up = spec.CLAIMS["compile-speeds-up"].comparisons["speed-up"].bound
    assert (speed_up.value, speed_up.source) == (1.10, "paper") and speed_up.where
    assert spec.CLAIMS["compile-keeps-the-loss"].kind == "finding"
    assert spec.CLAIMS["selective-checkpointing-under-a-memory-cap"].kind == "finding"
    assert spec.CLAIMS["fsdp-world-size-keeps-the-loss"].kind == "property"
    cap = spec.CLAIMS["selective-checkpointing-under-a-memory-cap"].comparisons["fits the cap"]
    assert (cap.bound.value, cap.bound.source) == (0.75, "ours") and cap.bound.why["en"]


def test_clear_measurements_reproduce_every_claim():
    claims = decided()
    assert {k: c.verdict for k, c in claims.items()} == dict.fromkeys(claims, "reproduced")
    assert claims["compile-speeds-up"].from_clock
    assert not claims["compile-keeps-the-loss"].from_clock
    speed_up = claims["compile-speeds-up"].comparisons[0]
    assert speed_up.values == pytest.approx([1.3, 131 / 102, 128 / 98])
    low, high = speed_up.interval
    assert 1.1 < low < 1.3 < high
    assert (claims["compile-speeds-up"].unit, claims["compile-speeds-up"].n) == ("rounds", 3)


def test_a_compile_gain_below_the_bound_is_not_reproduced_and_a_noisy_one_is_undecided():
    slow = decided(SPEED | {"compile": [104.0, 106.0, 102.0]})["compile-speeds-up"]
    assert slow.verdict == "not_reproduced"
    noisy = decided(SPEED | {"compile": [150.0, 105.0, 112.0]})["compile-speeds-up"]
    assert noisy.verdict == "inconclusive" and noisy.comparisons[0].to_decide > 3


@pytest.mark.parametrize(("eager_mfu", "verdict"), [(0.77, "not_testable"), (0.57, "reproduced")])
def test_the_compile_claim_is_tested_only_where_eager_leaves_the_matmul_units_idle(
        eager_mfu, verdict):
    claim = decided(eager_mfu=eager_mfu)["compile-speeds-up"]
    assert claim.verdict == verdict
    (premise,) = claim.premises
    assert premise.value == pytest.approx(eager_mfu) and premise.holds == (eager_mfu <= 0.6)
    # the ratio is measured and kept either way
    assert claim.comparisons[0].verdict == "reproduced"


def test_a_slow_compile_on_a_busy_device_is_not_testable_rather_than_not_reproduced():
    slow = SPEED | {"compile": [104.0, 106.0, 102.0]}
    assert decided(slow, eager_mfu=0.77)["compile-speeds-up"].verdict == "not_testable"
    assert decided(slow, eager_mfu=0.5)["compile-speeds-up"].verdict == "not_reproduced"


def test_a_shift_is_measured_in_seed_sds_within_a_band_of_one():
    shift = shifts(LOSSES)
    assert shift["seed_sd"] == pytest.approx(0.014142, rel=1e-4)
    assert shift["compile"][0] == pytest.approx(0.002 / 0.014142, rel=1e-4)
    assert shift["world"] == 2
    claim = decided()["compile-keeps-the-loss"]
    assert [c.direction for c in claim.comparisons] == ["<", ">"]
    assert [c.bound.value for c in claim.comparisons] == [1.0, -1.0]
    low, high = claim.comparisons[0].interval
    assert -1 < low < high < 1
    assert (claim.unit, claim.n, claim.base_models) == ("training seeds", 6, None)


def test_compile_that_shifts_the_loss_by_a_seed_sd_is_not_reproduced_and_a_noisy_one_is_open():
    shifted = LOSSES | {"compile": [x + 0.03 for x in EAGER]}  # two seed sds above, every seed
    claim = decided(losses=shifted)["compile-keeps-the-loss"]
    assert claim.verdict == "not_reproduced"
    assert [c.verdict for c in claim.comparisons] == ["not_reproduced", "reproduced"]
    noisy = LOSSES | {"compile": [x + d for x, d in zip(
        EAGER, [0.02, -0.02, 0.015, -0.01, 0.02, -0.015], strict=True)]}
    assert decided(losses=noisy)["compile-keeps-the-loss"].verdict == "inconclusive"


def test_selective_checkpointing_must_fit_the_cap_and_beat_full_checkpointing():
    claim = decided()["selective-checkpointing-under-a-memory-cap"]
    fits, faster = claim.comparisons
    assert fits.values == pytest.approx([100 / 150, 100.1 / 150.1, 99.9 / 149.9])
    assert faster.values == pytest.approx([120 / 105, 121 / 106, 118 / 104])
    too_big = MEMORY | {0.5: [130e6, 130.1e6, 129.9e6]}
    claim = decided(memory=too_big)["selective-checkpointing-under-a-memory-cap"]
    assert claim.verdict == "not_reproduced"
    assert [c.verdict for c in claim.comparisons] == ["not_reproduced", "reproduced"]
    slower = SPEED | {"compile + checkpoint 0.5": [100.0, 101.0, 99.0]}
    claim = decided(speed=slower)["selective-checkpointing-under-a-memory-cap"]
    assert [c.verdict for c in claim.comparisons] == ["reproduced", "not_reproduced"]


def test_without_a_second_rank_the_world_size_claim_is_not_testable():
    one = {k: v for k, v in LOSSES.items() if k != "FSDP x2"}
    claim = decided(losses=one)["fsdp-world-size-keeps-the-loss"]
    assert claim.verdict == "not_testable"
    (premise,) = claim.premises
    assert (premise.value, premise.holds) == (1, False)
    assert claim.comparisons[0].values == [0.0] * 6  # eager against itself, recorded


def test_the_gpu_scale_builds_and_takes_a_step_at_reduced_width():
    """The gpu scale's recipe (its depth, MLP ratio, untied embeddings, its levers: each block
    compiled, half the blocks checkpointed, FSDP) builds and trains a step on the CPU."""
    gpu = SCALES["gpu"]
    small = gpu.model.__class__(**(gpu.model.__dict__ | {
        "d_model": 64, "n_heads": 2, "n_kv_heads": 2, "head_dim": 32, "mlp_hidden": 176,
        "block_size": 64}))
    params = gpu.model_copy(update={
        "model": small, "seq_len": 64, "batch_size": 2,
        "train": gpu.train.__class__(**(gpu.train.__dict__ | {"steps": 2, "warmup_steps": 1}))})
    setup = next(s for s in setups(params, gpu=True)
                 if s.name == "compile + checkpoint 0.5")
    from digestlab.experiments.fsdp_compile.worker import run_plan

    (measured,) = run_plan(params, [setup], torch.device("cpu"))  # in this process
    assert measured["checkpointed_blocks"] == list(range(1, gpu.model.n_layer, 2))
    assert math.isfinite(measured["loss_curve"][-1]) and measured["tokens_per_s"] > 0


def test_fsdp_on_one_process_trains_what_eager_does_to_the_bit_in_bf16(tmp_path):
    """Why the parity runs compare FSDP on several processes with eager training."""
    from digestlab.experiments.fsdp_compile import Setup
    from digestlab.experiments.fsdp_compile.run import run_job

    eager, sharded = run_job(SCALES["smoke"], [Setup("eager", 1, parity=True),
                                               Setup("FSDP x1", 1, fsdp=True, parity=True)],
                             torch.device("cpu"), tmp_path)
    assert sharded["loss_curve"] == eager["loss_curve"] and sharded["val_loss"] == eager["val_loss"]


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from Linux's /proc")
def test_smoke_run_measures_every_configuration(smoke_runs):
    root, (first, _) = smoke_runs("fsdp_compile")
    names = [c["name"] for c in first["timing"]["configurations"]]
    assert names == ["eager", "compile", checkpoint_name(0.5, True), checkpoint_name(1.0, True)]
    for c in first["timing"]["configurations"]:
        assert c["tokens_per_s"] > 0 and c["step_time_ms"] > 0 and 0 < c["mfu"] < 1
    assert set(first["timing"]["training_memory_mb"]) == {"0", "0.5", "1"}
    claims = {c["id"]: c for c in first["claims"]}
    parity = first["metrics"]["parity"]
    assert set(parity["final_loss"]) == {"eager", "compile", "FSDP x2"}
    assert claims["compile-keeps-the-loss"]["n"] == SCALES["smoke"].parity.seeds
    # The compile claim's premise is the eager runs' MFU, against the same peak as the table's
    (regime,) = claims["compile-speeds-up"]["premises"]
    eager = first["timing"]["configurations"][0]
    assert regime["value"] == pytest.approx(eager["mfu"])  # two runs: median and mean agree
    assert regime["holds"] == (regime["value"] <= 0.6)
    assert (claims["compile-speeds-up"]["verdict"] == "not_testable") == (not regime["holds"])
    figures = json.loads((root / "a" / "figures" / "data.json").read_text())
    assert first["figures"] == list(figures) == ["throughput", "checkpointing", "parity"]
    # that the second run repeats the first, timings aside, test_experiments.py checks


# --- methods.py: the levers credited to their papers ----------------------------------------------

def _parity(world: int = 2) -> dict:
    """metrics["parity"] as run.py writes it, with only what methods.py reads."""
    losses = {"eager": [2.0, 2.2, 2.1], "compile": [2.1, 2.2, 2.3]}
    if world > 1:
        losses[f"FSDP x{world}"] = [2.0, 2.1, 2.1]
    return {"final_loss": losses, "shifts": shifts(losses)}


# made-up measurements of the timed and memory runs: tokens/s of each timed configuration in
# round 0 (a round later adds 10 tokens/s; memory runs time nothing), and peak memory (MB) of
# each checkpointed fraction in round 0 (a round later adds 1 MB; compiled runs add 5 MB)
TIMED_SPEED = {"eager": 100.0, "compile": 130.0, "compile + checkpoint 0.5": 120.0,
         "compile + checkpoint 1": 90.0, "FSDP x1 + bf16 params": 140.0}
PEAK_MB = {0.0: 100.0, 0.5: 80.0, 1.0: 60.0}


def _timing(gpu: bool) -> dict:
    """result["timing"] as run.py writes it from the runs `setups` plans at the cpu scale (4
    rounds, memory runs in the first 2 on a CPU), measured as TIMED_SPEED and PEAK_MB say."""
    from digestlab.experiments.fsdp_compile import FULL, SELECTIVE
    from digestlab.experiments.fsdp_compile.run import configuration_table

    runs: dict[str, list[dict]] = {}
    memory_runs: dict[str, list[dict]] = {}
    for setup in setups(SCALES["cpu"], gpu):
        peak = PEAK_MB[setup.checkpoint] + setup.seed + (5.0 if setup.compile else 0.0)
        measured = {"setup": setup.__dict__, "checkpointed_blocks": [],
                    "tokens_per_s": TIMED_SPEED.get(setup.name, 1.0) + 10.0 * setup.seed,
                    "step_time_s": 0.1,
                    "mfu": 0.5, "mfu_spec": None, "peak_flops": 1e11, "wall_time_s": 1.0,
                    "training_memory_bytes": peak * 1e6}
        (memory_runs if setup.memory else runs).setdefault(setup.name, []).append(measured)
    memory = {name: [r["training_memory_bytes"] for r in rs]
              for name, rs in (memory_runs or runs).items()}
    by_fraction = {f: memory[checkpoint_name(f, compiled=not memory_runs)]
                   for f in (0.0, SELECTIVE, FULL)}
    return {"configurations": configuration_table(runs, memory),
            "training_memory_mb": {f"{f:g}": [m / 1e6 for m in by_fraction[f]]
                                   for f in by_fraction}}


def _result(world: int = 2, gpu: bool = False) -> dict:
    """A metrics.json with what methods.py reads."""
    return {"experiment": "fsdp_compile", "params": SCALES["gpu" if gpu else "cpu"].model_dump(),
            "metrics": {"parity": _parity(world)}, "timing": _timing(gpu)}


def test_method_rows_are_the_final_loss_over_seeds_and_the_shift_from_eager():
    import statistics

    from digestlab.claims import mean_interval
    from digestlab.experiments.fsdp_compile.methods import FINAL_LOSS, SHIFT, rows

    result = _result()
    parity = result["metrics"]["parity"]
    got = rows(result)
    assert set(got) == {"eager", "torch-compile", "fsdp", "activation-checkpointing"}
    # the headline: every lever of the parity runs heads with its final loss
    eager = got["eager"][0]
    assert eager.quantity == FINAL_LOSS and eager.value == pytest.approx(2.1)
    assert eager.interval == pytest.approx(mean_interval([2.0, 2.2, 2.1]))
    assert (eager.n, eager.unit, eager.better) == (3, "training seeds", "lower")
    loss, shift = got["torch-compile"][:2]
    assert loss.quantity == FINAL_LOSS and loss.value == pytest.approx(2.2)
    assert shift.quantity == SHIFT and shift.better is None
    assert shift.value == pytest.approx(0.1 / parity["shifts"]["seed_sd"])
    assert shift.interval == pytest.approx(mean_interval(parity["shifts"]["compile"]))
    loss, shift = got["fsdp"]  # no timed FSDP run on a CPU
    assert loss.setting["en"] == "2 processes" and loss.value == pytest.approx(6.2 / 3)
    assert shift.value == pytest.approx(statistics.mean(parity["shifts"]["fsdp"]))


def test_method_rows_give_each_lever_the_speed_and_memory_its_claims_are_about():
    from digestlab.claims import mean_interval
    from digestlab.experiments.fsdp_compile.methods import MEMORY, TOKENS_PER_S, rows

    got = rows(_result())
    assert "timed" in TOKENS_PER_S["en"] and "timings" in MEMORY["en"]  # they vary run to run
    # the speed claim's numbers: tokens/s of eager and compiled runs over the 4 rounds, with no
    # setting, so that the two rows compare
    speed = {m: next(r for r in got[m] if r.quantity == TOKENS_PER_S)
             for m in ("eager", "torch-compile")}
    assert speed["eager"].key == speed["torch-compile"].key
    assert speed["eager"].value == pytest.approx(115.0)
    assert speed["torch-compile"].value == pytest.approx(145.0)
    assert speed["eager"].interval == pytest.approx(mean_interval([100.0, 110.0, 120.0, 130.0]))
    assert all((r.n, r.unit, r.better) == (4, "rounds", "higher") for r in speed.values())
    # on a CPU the memory runs are eager: the peak without checkpointing is eager's, over the
    # 2 memory rounds, and torch.compile has none
    (memory,) = [r for r in got["eager"] if r.quantity == MEMORY]
    assert (memory.value, memory.n, memory.unit, memory.better) == (100.5, 2, "rounds", "lower")
    assert memory.setting is None
    assert MEMORY not in [r.quantity for r in got["torch-compile"]]
    # checkpointing heads with the memory claim's number, the peak with every second block
    # checkpointed, which the page sets against eager's peak; then every block, then speeds
    ckpt = got["activation-checkpointing"]
    assert [(r.quantity, r.setting["en"]) for r in ckpt] == [
        (MEMORY, "every second block checkpointed, eager"),
        (MEMORY, "every block checkpointed, eager"),
        (TOKENS_PER_S, "every second block checkpointed, compiled"),
        (TOKENS_PER_S, "every block checkpointed, compiled")]
    assert [r.value for r in ckpt] == pytest.approx([80.5, 60.5, 135.0, 105.0])
    assert [r.n for r in ckpt] == [2, 2, 4, 4]
    assert [r.better for r in ckpt] == ["lower", "lower", "higher", "higher"]


def test_method_rows_give_a_gpus_memory_to_the_compiled_runs_that_measured_it():
    from digestlab.experiments.fsdp_compile.methods import MEMORY, rows

    got = rows(_result(world=1, gpu=True))
    assert MEMORY not in [r.quantity for r in got["eager"]]
    (memory,) = [r for r in got["torch-compile"] if r.quantity == MEMORY]
    assert (memory.value, memory.n) == (106.5, 4)  # compiled, over every timed round
    ckpt = got["activation-checkpointing"]
    assert ckpt[0].setting["en"] == "every second block checkpointed, compiled"
    assert ckpt[0].value == pytest.approx(86.5)


def test_method_rows_leave_out_fsdp_where_only_one_process_ran():
    from digestlab.experiments.fsdp_compile.methods import rows

    got = rows(_result(world=1))  # one GPU: eager stands in for FSDP's shift
    assert set(got) == {"eager", "torch-compile", "activation-checkpointing"}


def test_credit_gives_each_lever_its_rows_and_none_of_the_post_s_claims():
    from digestlab.experiments.fsdp_compile import CLAIMS
    from digestlab.experiments.fsdp_compile.methods import FINAL_LOSS, MEMORY
    from digestlab.methods import credit

    result = _result() | {"scale": "cpu", "claims_schema": 3,
                          "claims": [{"id": c, "verdict": "reproduced"} for c in CLAIMS]}
    credited = credit(result, ("digestlab.experiments",))
    by_id = {m["id"]: m for m in credited["methods"]}
    assert credited["reference"] == "eager"
    assert {m: by_id[m]["rows"][0]["quantity"] for m in ("eager", "torch-compile", "fsdp")} \
        == dict.fromkeys(("eager", "torch-compile", "fsdp"), FINAL_LOSS)
    assert by_id["activation-checkpointing"]["rows"][0]["quantity"] == MEMORY
    assert all(m["decided"] == [] for m in credited["methods"])


def test_methods_credit_the_levers_to_their_papers_and_leave_the_post_its_claims():
    from digestlab.experiments.fsdp_compile import methods

    by_id = {m.id: m for m in methods.METHODS}
    assert methods.REFERENCE == "eager" and by_id["eager"].role == "baseline"
    assert {m.id for m in methods.METHODS if m.role == "proposed"} == {
        "torch-compile", "fsdp", "activation-checkpointing"}
    assert by_id["fsdp"].paper == "2304.11277"
    # the claims are the post's, about its recipe: no lever's paper is credited with one
    assert all(m.claims == () for m in methods.METHODS)
