from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, entry, write_entry

from digestlab.experiments import load_spec, param_problems, reproduce
from digestlab.experiments.cla import (
    CLAIMED,
    CLAIMS,
    DESIGNS,
    PAPER_SHARE,
    SCALES,
    LearningRates,
    Params,
    design_config,
)
from digestlab.experiments.cla.run import (
    PAIRED_CLAIMS,
    decide_claims,
    evaluation_noise,
    initial_states,
    measured_kv_bytes_per_token,
)
from digestlab.nn import GPT
from digestlab.render import number, render_paper_pages


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_designs_sit_where_the_paper_puts_them_on_the_memory_axis(scale):
    params = SCALES[scale]
    kv = {name: design_config(name, params).kv_bytes_per_token() for name in params.designs}
    assert kv["MQA-CLA2"] * 2 == kv["MQA"]
    assert kv["MQA d/2"] == kv["MQA-CLA2"]  # the equal-memory comparisons of the paper
    assert kv["MQA-CLA3 3d/2"] == kv["MQA-CLA2"]
    if "MQA-CLA3" in params.designs:
        assert kv["MQA-CLA3"] < kv["MQA-CLA2"] < kv["MQA"]
    if "MHA" in params.designs:
        assert kv["MQA"] < kv["MHA"]
        assert design_config("MHA", params).n_kv_heads == design_config("MHA", params).n_heads
    if "GQA-4" in params.designs:
        assert kv["MQA"] < kv["GQA-4"] < kv["MHA"]
        assert design_config("GQA-4", params).n_kv_heads == 4


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_every_design_has_a_query_as_wide_as_the_model_as_near_as_whole_heads_allow(scale):
    params = SCALES[scale]
    configs = {name: design_config(name, params) for name in params.designs}
    for name, config in configs.items():
        width = config.n_heads * config.head_dim
        assert abs(width - config.d_model) <= config.head_dim / 2, name
    assert configs["MQA d/2"].n_heads == 2 * configs["MQA"].n_heads
    assert configs["MQA d/2"].n_heads * configs["MQA d/2"].head_dim == params.model.d_model
    assert configs["MQA-CLA3 3d/2"].head_dim * 2 == configs["MQA"].head_dim * 3


def test_designs_that_cannot_hold_equal_kv_bytes_are_refused():
    fields = SCALES["smoke"].model_dump()
    with pytest.raises(ValueError, match="multiple of 6"):
        Params(**fields | {"model": fields["model"] | {"n_layer": 4}})
    with pytest.raises(ValueError, match="multiple of 4"):
        Params(**fields | {"model": fields["model"] | {"head_dim": 6}})


def test_each_design_trains_at_the_rate_of_lowest_tuning_loss():
    tuned = LearningRates(seed=0, grid=[1e-3, 2e-3, 3e-3], val_loss={
        "MQA": [2.0, 1.9, 1.95], "MQA-CLA2": [2.0, 1.95, 1.9], "MQA d/2": [1.8, 1.9, 2.0],
        "MQA-CLA3 3d/2": [2.0, 2.0, None]})  # diverged at the highest rate
    assert tuned.chosen == {"MQA": 2e-3, "MQA-CLA2": 3e-3, "MQA d/2": 1e-3,
                            "MQA-CLA3 3d/2": 1e-3}  # a tie keeps the lowest rate
    with pytest.raises(ValueError, match="diverged at every rate"):
        LearningRates(seed=0, grid=[1e-3, 2e-3], val_loss={"MQA": [None, None]})
    params = SCALES["cpu"].model_copy(update={"learning_rates": tuned})
    assert params.learning_rate("MQA-CLA2") == 3e-3
    untuned = params.model_copy(update={"learning_rates": None})
    assert untuned.learning_rate("MQA-CLA2") == params.train.learning_rate
    fields = SCALES["cpu"].model_dump() | {"designs": [*CLAIMED, "MHA"],
                                           "learning_rates": tuned.model_dump()}
    with pytest.raises(ValueError, match=r"no tuned rate for \['MHA'\]"):
        Params(**fields)


def test_the_cpu_scale_trains_the_rates_its_tuning_seed_chose():
    """The record the benchmark wrote is the one the cpu scale reads, on a seed that never
    votes, for every design it trains."""
    record = json.loads((ROOT / "digestlab/experiments/cla/learning_rates.json").read_text())
    tuned = SCALES["cpu"].learning_rates
    assert tuned is not None and tuned.model_dump() == record["cpu"]
    assert tuned.seed in SCALES["cpu"].tuning_seeds and tuned.seed not in SCALES["cpu"].seeds
    assert set(tuned.val_loss) == set(SCALES["cpu"].designs)
    shared = SCALES["cpu"].train.learning_rate
    assert tuned.grid[0] < shared < tuned.grid[-1]


def test_every_scale_trains_the_designs_the_claims_compare():
    for params in SCALES.values():
        assert set(CLAIMED) <= set(params.designs)
    fields = SCALES["smoke"].model_dump() | {"designs": ["MQA", "MQA-CLA2"]}
    with pytest.raises(ValueError, match="must include"):
        Params(**fields)


def test_common_random_numbers_give_every_design_the_same_shared_weights():
    params = SCALES["smoke"]
    states = dict(zip(params.designs, initial_states(params, seed=0), strict=True))
    first: dict = {}
    shared = 0
    for name in params.designs:
        for key, value in states[name].items():
            if (key, value.shape) in first:
                assert torch.equal(value, first[key, value.shape]), (name, key)
                shared += 1
            else:
                first[key, value.shape] = value
    # embeddings, norms, MLPs, output projections; MQA's K/V for the CLA layers computing K/V
    assert torch.equal(states["MHA"]["wte.weight"], states["MQA-CLA3"]["wte.weight"])
    assert torch.equal(states["MHA"]["blocks.5.mlp.up_proj.weight"],
                       states["MLA"]["blocks.5.mlp.up_proj.weight"])
    assert torch.equal(states["MQA"]["blocks.2.attn.kv_proj.weight"],
                       states["MQA-CLA2"]["blocks.2.attn.kv_proj.weight"])
    assert shared > 100
    # a different seed, and independent initialisation, give different weights
    other = dict(zip(params.designs, initial_states(params, seed=1), strict=True))
    assert not torch.equal(states["MQA"]["wte.weight"], other["MQA"]["wte.weight"])
    independent = params.model_copy(update={"common_init": False})
    alone = dict(zip(params.designs, initial_states(independent, seed=0), strict=True))
    assert torch.equal(alone["MHA"]["wte.weight"], states["MHA"]["wte.weight"])
    assert not torch.equal(alone["MQA"]["blocks.0.mlp.up_proj.weight"],
                           states["MQA"]["blocks.0.mlp.up_proj.weight"])


def fake_designs(ppl: dict[str, list[float]]) -> dict:
    return {name: {"val_ppl": values,
                   "kv_bytes_per_token": design_config(name, SCALES["cpu"]).kv_bytes_per_token()}
            for name, values in ppl.items()}


def test_claims_follow_the_paired_ratios():
    measured = fake_designs({
        "MQA": [10.0, 11.0, 12.0],
        "MQA-CLA2": [10.05, 11.02, 12.1],  # within 1% of MQA on every seed
        "MQA d/2": [10.3, 11.4, 12.5],  # CLA2 better on every seed
        "MQA-CLA3 3d/2": [9.5, 10.4, 11.5],  # CLA3 better than CLA2 on every seed
    })
    claims = {c.id: c for c in decide_claims(measured)}
    assert list(claims) == list(CLAIMS)
    assert {k: c.verdict for k, c in claims.items()} == {
        "cla2-halves-kv": "reproduced",
        "cla2-matches-mqa": "reproduced",
        "cla2-keeps-most-of-mqa": "reproduced",
        "cla2-beats-smaller-heads": "reproduced",
        "cla2-beats-cla3": "not_reproduced",
    }
    matches = claims["cla2-matches-mqa"]
    assert (matches.unit, matches.n, matches.base_models) == ("training seeds", 3, None)
    ratio = matches.comparisons[0]
    assert ratio.space == "log" and ratio.bound.value == 1.02 and ratio.bound.source == "ours"
    assert ratio.values == pytest.approx([1.005, 11.02 / 11, 12.1 / 12])
    low, high = ratio.interval
    assert low < ratio.estimate < high < 1.02
    assert ratio.to_decide is None
    assert claims["cla2-halves-kv"].kind == "property"
    assert all(c.kind == "finding" for k, c in claims.items() if k != "cla2-halves-kv")


def test_a_cache_that_does_not_halve_fails_the_exact_check():
    measured = fake_designs({name: [10.0 + i, 11.0 + i] for i, name in enumerate(CLAIMED)})
    measured["MQA-CLA2"]["kv_bytes_per_token"] += 2  # one more bf16 element than half
    claim = {c.id: c for c in decide_claims(measured)}["cla2-halves-kv"]
    assert claim.verdict == "not_reproduced"
    assert claim.comparisons[0].rule == "exact"


def test_seed_noise_makes_a_claim_inconclusive_and_says_how_many_seeds_would_decide_it():
    measured = fake_designs({
        "MQA": [10.0, 11.0, 12.0], "MQA-CLA2": [9.0, 11.6, 12.3],
        "MQA d/2": [9.5, 11.5, 12.2], "MQA-CLA3 3d/2": [9.1, 11.7, 12.4],
    })
    claim = {c.id: c for c in decide_claims(measured)}["cla2-beats-smaller-heads"]
    assert claim.verdict == "inconclusive"
    ratio = claim.comparisons[0]
    low, high = ratio.interval
    assert low < 1.0 < high and ratio.level == pytest.approx(0.9)
    assert ratio.to_decide > 3


def test_every_bound_says_where_it_comes_from_and_the_paper_numbers_are_its_table_1():
    for spec in CLAIMS.values():
        for comparison in spec.comparisons.values():
            bound = comparison.bound
            assert bound.where if bound.source == "paper" else bound.why["en"]
    theirs = {k: c.theirs.value for k, c in CLAIMS.items()}
    assert theirs == pytest.approx({"cla2-halves-kv": 0.5, "cla2-matches-mqa": 13.60 / 13.54,
                                    "cla2-keeps-most-of-mqa": 0.2239,
                                    "cla2-beats-smaller-heads": 13.60 / 13.81,
                                    "cla2-beats-cla3": 13.73 / 13.77}, abs=1e-4)
    assert PAPER_SHARE == pytest.approx(0.22, abs=0.005)  # the anchor, from Table 1
    # the paired claims in the run are exactly the declared ones, comparing the claimed designs
    assert {claim_id for claim_id, *_ in PAIRED_CLAIMS} == set(CLAIMS) - {
        "cla2-halves-kv", "cla2-keeps-most-of-mqa"}
    for claim_id, a, b in PAIRED_CLAIMS:
        assert CLAIMS[claim_id].comparisons["ratio"].statistic == f"ppl({a}) / ppl({b})"


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
def test_kv_bytes_are_measured_in_a_filled_cache_and_agree_with_the_config(scale):
    params = SCALES[scale]
    prompt = torch.randint(0, 256, (2, 4))
    measured = {}
    for name in params.designs:
        torch.manual_seed(0)
        model = GPT(design_config(name, params))
        measured[name] = measured_kv_bytes_per_token(model, prompt)
        assert measured[name] == design_config(name, params).kv_bytes_per_token(), name
        assert next(model.parameters()).dtype == torch.float32  # measured on a bf16 copy
    assert measured["MQA-CLA2"] / measured["MQA"] == 0.5


def test_tuning_seeds_never_score_the_claims():
    spec = load_spec("cla")
    cpu = SCALES["cpu"]
    assert cpu.tuning_seeds == [0, 1, 2, 3, 4, 5] and cpu.seeds == [6, 7, 8]
    for params in SCALES.values():
        assert not set(params.tuning_seeds) & set(params.seeds)
    assert param_problems(spec, "cpu", {}) == []
    problems = param_problems(spec, "cpu", {"tuning_seeds": [6]})
    assert [field for field, _ in problems] == ["tuning_seeds"]
    assert "[6]" in problems[0][1]
    assert param_problems(spec, "smoke", {"seeds": [0, 1], "tuning_seeds": [2]}) == []
    # the per-design learning rates too: a record tuned on a scored seed is refused
    tuned = cpu.learning_rates.model_dump() | {"seed": 7}
    problems = param_problems(spec, "cpu", {"learning_rates": tuned})
    assert [field for field, _ in problems] == ["learning_rates.seed"]


def test_evaluation_noise_is_the_standard_error_of_the_paired_window_differences():
    gen = torch.Generator().manual_seed(0)
    windows = {}
    for seed in (0, 1):
        base = torch.rand(400, generator=gen, dtype=torch.float64)
        for name in CLAIMED:
            windows[name, seed] = base + 0.1 * torch.rand(400, generator=gen, dtype=torch.float64)
    noise = evaluation_noise(windows, [0, 1])
    # the difference of two uniform(0, 0.1) draws has sd 0.1 / sqrt(6); over 400 windows
    assert noise["MQA-CLA2", "MQA"] == pytest.approx(0.1 / math.sqrt(6) / 20, rel=0.15)


def run_smoke(out, threads, **params):
    reproduce("cla", "smoke", params, out / "metrics.json", out / "figures", threads=threads,
              log=lambda _: None)
    return json.loads((out / "metrics.json").read_text())


def test_smoke_run_writes_every_design_claim_curve_and_figure(smoke_runs, tmp_path):
    root, (metrics, _) = smoke_runs("cla")
    train = SCALES["smoke"].train
    assert (train.steps, train.log_every, train.eval_every) == (6, 2, 3)  # the curves below
    measured = metrics["metrics"]["designs"]
    assert list(measured) == list(DESIGNS)
    assert [c["id"] for c in metrics["claims"]] == list(CLAIMS)
    assert all(len(v["val_ppl"]) == 2 for v in measured.values())
    curves = measured["MQA"]["curves"]
    assert [c["seed"] for c in curves] == [0, 1]
    tokens_per_step = SCALES["smoke"].batch_size * SCALES["smoke"].seq_len
    assert [t for t, _ in curves[0]["train"]] == [2 * tokens_per_step, 4 * tokens_per_step,
                                                  6 * tokens_per_step]
    assert [t for t, _ in curves[0]["val"]] == [3 * tokens_per_step, 6 * tokens_per_step]
    assert curves[0]["val"][-1][1] == pytest.approx(math.log(measured["MQA"]["val_ppl"][0]))
    figures = json.loads((root / "a" / "figures" / "data.json").read_text())
    assert metrics["figures"] == list(figures) == ["ppl_vs_kv_bytes", "loss_curves"]
    assert figures["loss_curves"]["MQA"] == curves
    corpus = metrics["metrics"]["corpus"]
    assert corpus["name"] == "torch-source" and len(corpus["sha256"]) == 64
    assert 0.5 < corpus["xz_bits_per_byte"] < 3

    # the design table shows the bytes the filled caches held, which the config's count confirms
    for name, v in measured.items():
        assert v["kv_bytes_per_token"] == v["kv_bytes_per_token_from_config"], name
    assert measured["MQA-CLA2"]["kv_bytes_per_token"] * 2 == measured["MQA"]["kv_bytes_per_token"]
    halves = metrics["claims"][0]
    assert halves["kind"] == "property" and halves["verdict"] == "reproduced"
    assert halves["comparisons"][0]["values"] == [0.5]

    # the paired spread and the evaluation noise of each paired claim, read from the claims
    pairs = metrics["metrics"]["pairs"]
    assert list(pairs) == [claim_id for claim_id, *_ in PAIRED_CLAIMS]
    sds = {c["id"]: c["comparisons"][0]["sd"] for c in metrics["claims"] if c["id"] in pairs}
    assert {k: p["paired_sd"] for k, p in pairs.items()} == sds
    assert all(0 < p["evaluation_noise"] < 0.1 for p in pairs.values())
    spread = metrics["metrics"]["design_spread"]
    low, high = metrics["metrics"]["paired_sd_range"]
    assert spread > 0 and [low, high] == [min(sds.values()), max(sds.values())]

    # the page explains the paired comparisons and shows each pair's spread and noise
    path = write_entry(tmp_path, entry("cla", reproduction={"experiment": "cla"}))
    out = {lang: tmp_path / lang / "cla.md" for lang in ("ko", "en")}
    render_paper_pages(path, ROOT / "config" / "tags.yaml", None, root / "a" / "metrics.json", out)
    pages = {lang: p.read_text(encoding="utf-8") for lang, p in out.items()}
    assert "### Paired comparisons" in pages["en"] and "### 짝지은 비교" in pages["ko"]
    assert "so it is a two-sided 90% interval" in pages["en"]
    assert "loss_curves.en.svg" in pages["en"]
    assert f"mean perplexities lie within {number(100 * spread)}% of each other" in pages["en"]
    for p in pairs.values():
        a, b = p["designs"]
        row = (f"| ppl({a}) / ppl({b}) | {number(100 * p['paired_sd'])}% | "
               f"{number(100 * p['evaluation_noise'])}% |")
        assert row in pages["en"]
    config = measured["MQA"]["config"]
    mqa = (f"| MQA | {config['n_heads']} × {config['head_dim']} | "
           f"{number(measured['MQA']['kv_bytes_per_token'])} |")
    assert mqa in pages["en"]
    assert "no per-design rates have been chosen at this scale" in pages["en"]


def test_results_do_not_depend_on_how_many_workers_share_the_machine(tmp_path):
    few = {"designs": list(CLAIMED), "train": {"steps": 3, "warmup_steps": 1}}  # 8 runs
    one = run_smoke(tmp_path / "one", threads=1, **few)
    two = run_smoke(tmp_path / "two", threads=2, **few)
    for m in (one, two):
        del m["timing"], m["provenance"]
    assert one == two
    data = [(tmp_path / d / "figures" / "data.json").read_bytes() for d in ("one", "two")]
    assert data[0] == data[1]


def test_noise_benchmark_trains_the_experiments_own_runs(smoke_runs):
    """benchmarks/cla_noise.py trains what the experiment trains: its per-seed validation loss
    is the experiment's, on the experiment's validation batches."""
    _, (metrics, _) = smoke_runs("cla")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cla_noise.py"), "--scale", "smoke",
         "--designs", "MQA", "MQA-CLA2", "--seeds", "0", "1", "--twins", "1", "--big-eval", "256"],
        capture_output=True, text=True, check=True).stdout
    exp_section = out.split("[exp]")[1].split("[big]")[0]
    for design in ("MQA", "MQA-CLA2"):
        line = next(row for row in exp_section.splitlines() if row.split()[:1] == [design])
        losses = [float(x) for x in line.split()[1:3]]
        expected = [math.log(p) for p in metrics["metrics"]["designs"][design]["val_ppl"]]
        assert losses == pytest.approx(expected, abs=1e-4)
    assert "MQA - MQA-CLA2" in exp_section and "paired sd" in exp_section
    assert "[big] 256 windows" in out
    assert out.count("twin 1 of") == 2 * 2 * 2  # 2 designs x 2 seeds, on both validation sets


def test_noise_benchmark_tunes_on_the_tuning_seeds_only():
    """Without --seeds the benchmark trains the scale's tuning seeds; the smoke scale has none,
    so it refuses rather than train the seeds that score the claims."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cla_noise.py"), "--scale", "smoke"],
        capture_output=True, text=True)
    assert done.returncode == 2
    assert "smoke scale has no tuning seeds" in done.stderr


# --- methods.py: the designs credited to their papers ---------------------------------------------

def _design(val_ppl: list[float], kv: float, params: int) -> dict:
    """A design's entry of metrics["designs"], with only what methods.py reads."""
    return {"val_ppl": val_ppl, "kv_bytes_per_token": kv, "params": params}


def _result(designs: dict[str, dict]) -> dict:
    """A metrics.json of the designs trained, with what methods.py reads."""
    return {"experiment": "cla", "params": {"designs": list(designs)},
            "metrics": {"designs": designs}}


def test_method_rows_are_each_designs_seed_mean_then_its_exact_kv_bytes_and_parameters():
    from digestlab.claims import LEVEL, mean_interval
    from digestlab.experiments.cla.methods import KV_BYTES, PARAMETERS, PERPLEXITY, rows

    got = rows(_result({"MQA": _design([3.5, 3.6, 3.4], 384.0, 1000),
                        "MQA d/2": _design([3.7, 3.7, 3.7], 192.0, 900),
                        "MQA-CLA2": _design([3.6, 3.8, 3.7], 192.0, 900),
                        "MQA-CLA3 3d/2": _design([3.9, 3.6], 192.0, 1000)}))
    cla, mqa = got["cla"], got["mqa"]
    # CLA's headline is MQA-CLA2's perplexity, set against MQA's: the same quantity
    assert [r.quantity for r in cla] == [PERPLEXITY, KV_BYTES, PARAMETERS] * 2
    assert [r.setting["en"].split(":")[0] for r in cla[::3]] == ["MQA-CLA2", "MQA-CLA3 3d/2"]
    assert [r.setting["en"].split(":")[0] for r in mqa[::3]] == ["MQA", "MQA d/2"]
    assert cla[0].value == pytest.approx(3.7) and cla[0].n == 3 and cla[0].unit == "training seeds"
    assert cla[0].interval == pytest.approx(mean_interval([3.6, 3.8, 3.7]))
    assert cla[0].level == LEVEL and cla[0].better == "lower"
    assert (cla[1].value, cla[1].n, cla[1].interval, cla[1].better) == (192.0, 1, None, "lower")
    assert (mqa[1].value, mqa[2].value) == (384.0, 1000)
    assert mqa[3].value == pytest.approx(3.7) and mqa[3].interval is None  # seeds agree exactly


def test_method_rows_leave_out_designs_the_scale_did_not_train():
    from digestlab.experiments.cla.methods import rows

    cpu = {name: _design([3.5, 3.6], 192.0, 900) for name in CLAIMED}  # no MHA, GQA-4 or MLA
    got = rows(_result(cpu))
    assert not got["mha"] and not got["gqa"] and not got["mla"]
    smoke = rows(_result({name: _design([50.0, 60.0], 96.0, 900) for name in DESIGNS}))
    assert [r.setting["en"].split(":")[0] for r in smoke["mla"]] == ["MLA"] * 3
    assert len(smoke["cla"]) == 3 * 3  # MQA-CLA2, MQA-CLA3 and MQA-CLA3 3d/2


def test_methods_credit_every_design_to_one_paper_and_name_only_declared_claims():
    from digestlab.experiments.cla import methods

    designs = [d for ds in methods.DESIGNS_OF.values() for d in ds]
    assert sorted(designs) == sorted(DESIGNS)  # each design a row of exactly one method
    assert set(methods.DESIGNS_OF) == {m.id for m in methods.METHODS}
    assert methods.REFERENCE == "mqa"
    roles = {m.id: m.role for m in methods.METHODS}
    assert [i for i, role in roles.items() if role == "proposed"] == ["cla"]
    # the claims are the CLA paper's, every one about MQA-CLA2
    claims = {m.id: m.claims for m in methods.METHODS}
    assert sorted(claims.pop("cla")) == sorted(CLAIMS)
    assert not any(claims.values())


def test_credit_gives_the_cpu_scales_methods_their_rows_and_cla_its_decided_claims():
    from digestlab.methods import credit

    result = _result({name: _design([3.5, 3.6, 3.7], 192.0, 900) for name in CLAIMED}) | {
        "scale": "cpu", "claims_schema": 3,
        "claims": [{"id": claim_id, "verdict": "reproduced"} for claim_id in CLAIMS]}
    out = credit(result, ("digestlab.experiments",))
    by_id = {m["id"]: m for m in out["methods"]}
    assert out["reference"] == "mqa"
    assert [c["id"] for c in by_id["cla"]["decided"]] == list(CLAIMS)
    assert len(by_id["cla"]["rows"]) == 2 * 3 and len(by_id["mqa"]["rows"]) == 2 * 3
    assert not by_id.get("mla", {}).get("rows")  # not trained at the cpu scale
