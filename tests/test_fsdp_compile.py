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
from digestlab.experiments.fsdp_compile import SCALES, Params, checkpoint_name, setups
from digestlab.experiments.fsdp_compile.run import decide_claims, mean_abs_gap
from digestlab.nn import GPT
from digestlab.parallel import checkpoint_blocks, checkpointed_blocks, launch


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


def test_a_failing_launch_raises_with_the_exit_status(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(RuntimeError, match="status 3"):
        launch([str(script)])


def params(**changes) -> dict:
    return SCALES["smoke"].model_dump() | changes


@pytest.mark.parametrize(("changes", "message"), [
    ({"checkpoint_fractions": [0.5, 1.0]}, "rise from 0"),
    ({"checkpoint_fractions": [0.0, 1.0, 0.5]}, "rise from 0"),
    ({"checkpoint_fractions": [0.0]}, "rise from 0"),
    ({"checkpoint_fractions": [0.0, 2.0]}, "cannot exceed 1"),
    ({"world_sizes": [2]}, "include 1"),
    ({"batch_size": 3}, "split evenly"),
    ({"seq_len": 1000}, "block_size"),
    ({"repeats": 1}, "greater than or equal to 2"),
    ({"memory_rounds": 3}, "memory_rounds"),
    ({"checkpoint_rounds": 3}, "checkpoint_rounds"),
])
def test_params_refuse_what_cannot_be_run(changes, message):
    with pytest.raises(ValueError, match=message):
        Params.model_validate(params(**changes))


def test_entry_params_merge_over_the_scale_and_are_checked():
    spec = load_spec("fsdp_compile")
    assert merge_params(spec, "cpu", {"repeats": 4}).repeats == 4
    with pytest.raises(ExperimentError, match="world_sizes"):
        merge_params(spec, "cpu", {"world_sizes": [2, 4]})


def test_rounds_pair_every_single_process_configuration_and_memory_runs_only_on_cpu():
    p = SCALES["cpu"]
    cpu = setups(p, gpu=False, devices=2)
    timed = [s for s in cpu if not s.memory and not s.fsdp]
    names = ["eager", "compile", "checkpoint 0.5", "checkpoint 1"]
    assert sorted((s.seed, s.name) for s in timed) == sorted(
        (r, n) for r in range(p.repeats) for n in names[:4 if r < p.checkpoint_rounds else 2])
    assert [s.name for s in timed[:6]] == ["eager", "compile", "checkpoint 0.5", "checkpoint 1",
                                           "compile", "eager"]  # the pair's order alternates
    memory = [s for s in cpu if s.memory]
    assert [(s.name, s.seed, s.checkpoint) for s in memory] == [
        (name, r, f) for r in range(p.memory_rounds)
        for name, f in (("eager", 0.0), ("checkpoint 0.5", 0.5), ("checkpoint 1", 1.0))]
    assert not any(s.compile or s.fsdp for s in memory)
    assert [s.name for s in cpu if s.fsdp] == ["FSDP x1", "FSDP x2", "FSDP x2 + compile"]

    gpu = setups(p, gpu=True, devices=1)
    assert not any(s.memory for s in gpu)
    assert [s.name for s in gpu if s.fsdp] == ["FSDP x1", "FSDP x1 + compile",
                                              "FSDP x1 + bf16 params"]


def fake_runs(p: Params, speed: dict[str, list[float]], curves: dict[str, list[list[float]]],
              eager_mfu: float = 0.4) -> dict[str, list[dict]]:
    """Runs as the workers report them, with the given tokens/s and loss curves; MFU follows
    speed, eager at `eager_mfu`, against one measured peak."""
    runs = {}
    for name, values in speed.items():
        fsdp = name.startswith("FSDP")
        world = 2 if "x2" in name else 1
        runs[name] = [{
            "setup": {"name": name, "seed": i, "compile": "compile" in name, "fsdp": fsdp,
                      "world": world, "checkpoint": 0.0, "bf16_params": False},
            "world": world, "tokens_per_s": v, "loss_curve": curves[name][i],
            "mfu": eager_mfu * v / speed["eager"][i % len(speed["eager"])], "peak_flops": 1e12,
        } for i, v in enumerate(values)]
    return runs


def curve(start: float, wiggle: float = 0.0) -> list[float]:
    return [start - 0.1 * i + wiggle * math.sin(i) for i in range(10)]


EAGER_CURVES = [curve(5.0), curve(5.0, 0.05), curve(5.0, -0.05)]


def decided(speed, memory, curves=None, eager_mfu=0.4) -> dict[str, Claim]:
    p = SCALES["cpu"]
    curves = curves or {}
    curves = {"eager": EAGER_CURVES, "compile": [c[:] for c in EAGER_CURVES],
              "checkpoint 0.5": EAGER_CURVES, "checkpoint 1": EAGER_CURVES,
              "FSDP x1": EAGER_CURVES[:1], "FSDP x2": [EAGER_CURVES[0][:]]} | curves
    runs = fake_runs(p, speed, curves, eager_mfu)
    return {c.id: c for c in decide_claims(p, runs, memory)}


SPEED = {"eager": [100.0, 102.0, 98.0], "compile": [130.0, 131.0, 128.0],
         "checkpoint 0.5": [90.0, 91.0, 88.0], "checkpoint 1": [80.0, 81.0, 79.0],
         "FSDP x1": [95.0], "FSDP x2": [60.0]}
MEMORY = {"eager": [150e6, 150.1e6, 149.9e6], "checkpoint 0.5": [130e6, 130.1e6, 129.9e6],
          "checkpoint 1": [110e6, 110.2e6, 109.9e6]}


def test_params_no_longer_take_the_claims_bounds():
    for bound in ({"compile_gain": 1.2}, {"agreement": 0.5}):
        with pytest.raises(ValueError, match="Extra inputs are not permitted"):
            Params.model_validate(params(**bound))


def test_every_claim_is_declared_and_its_bounds_say_where_they_come_from():
    spec = load_spec("fsdp_compile")
    assert set(spec.CLAIMS) == {"compile-speeds-up", "compile-keeps-the-loss",
                                "checkpointing-trades-speed-for-memory",
                                "fsdp-world-size-keeps-the-loss"}
    speed_up = spec.CLAIMS["compile-speeds-up"].comparisons["speed-up"].bound
    assert (speed_up.value, speed_up.source) == (1.10, "paper") and speed_up.where
    assert spec.CLAIMS["compile-keeps-the-loss"].kind == "property"
    assert spec.CLAIMS["checkpointing-trades-speed-for-memory"].kind == "property"
    assert spec.CLAIMS["fsdp-world-size-keeps-the-loss"].kind == "finding"


def test_clear_measurements_reproduce_every_claim():
    claims = decided(SPEED, MEMORY)
    assert {k: c.verdict for k, c in claims.items()} == dict.fromkeys(claims, "reproduced")
    assert claims["compile-speeds-up"].from_clock
    assert not claims["compile-keeps-the-loss"].from_clock
    speed_up = claims["compile-speeds-up"].comparisons[0]
    assert speed_up.values == pytest.approx([1.3, 131 / 102, 128 / 98])
    low, high = speed_up.interval
    assert 1.1 < low < 1.3 < high
    assert (claims["compile-speeds-up"].unit, claims["compile-speeds-up"].n) == ("rounds", 3)


def test_a_compile_gain_below_the_bound_is_not_reproduced_and_a_noisy_one_is_undecided():
    slow = decided(SPEED | {"compile": [104.0, 106.0, 102.0]}, MEMORY)["compile-speeds-up"]
    assert slow.verdict == "not_reproduced"
    noisy = decided(SPEED | {"compile": [150.0, 105.0, 112.0]}, MEMORY)["compile-speeds-up"]
    assert noisy.verdict == "inconclusive" and noisy.comparisons[0].to_decide > 3


@pytest.mark.parametrize(("eager_mfu", "verdict"), [(0.77, "not_testable"), (0.57, "reproduced")])
def test_the_compile_claim_is_tested_only_where_eager_leaves_the_matmul_units_idle(
        eager_mfu, verdict):
    claim = decided(SPEED, MEMORY, eager_mfu=eager_mfu)["compile-speeds-up"]
    assert claim.verdict == verdict
    (premise,) = claim.premises
    assert premise.value == pytest.approx(eager_mfu) and premise.holds == (eager_mfu <= 0.6)
    # the ratio is measured and kept either way
    assert claim.comparisons[0].verdict == "reproduced"


def test_a_slow_compile_on_a_busy_device_is_not_testable_rather_than_not_reproduced():
    slow = SPEED | {"compile": [104.0, 106.0, 102.0]}
    assert decided(slow, MEMORY, eager_mfu=0.77)["compile-speeds-up"].verdict == "not_testable"
    assert decided(slow, MEMORY, eager_mfu=0.5)["compile-speeds-up"].verdict == (
        "not_reproduced")


def test_loss_curves_apart_by_a_seed_gap_do_not_agree():
    drifted = {"compile": [curve(5.0, 0.03) for _ in range(3)]}
    claim = decided(SPEED, MEMORY, drifted)["compile-keeps-the-loss"]
    assert claim.verdict == "not_reproduced" and claim.kind == "property"
    assert max(claim.comparisons[0].values) > 0.1


def test_checkpointing_compares_each_step_up_for_memory_and_speed():
    claim = decided(SPEED, MEMORY)["checkpointing-trades-speed-for-memory"]
    assert [c.name for c in claim.comparisons] == [
        "memory, 0 → 0.5", "tokens/s, 0 → 0.5", "memory, 0.5 → 1", "tokens/s, 0.5 → 1"]
    assert claim.comparisons[1].values == pytest.approx([0.9, 91 / 102, 88 / 98])
    assert all(c.scale == "log" and c.verdict == "reproduced" for c in claim.comparisons)


def test_checkpointing_that_saves_no_memory_is_not_reproduced():
    flat = MEMORY | {"checkpoint 1": [131e6, 131.1e6, 130.9e6]}
    claim = decided(SPEED, flat)["checkpointing-trades-speed-for-memory"]
    assert claim.verdict == "not_reproduced"
    assert [c.verdict for c in claim.comparisons] == [
        "reproduced", "reproduced", "not_reproduced", "reproduced"]


def test_without_a_second_rank_the_world_size_claim_is_not_testable():
    speed = {k: v for k, v in SPEED.items() if k != "FSDP x2"}
    claim = decided(speed, MEMORY)["fsdp-world-size-keeps-the-loss"]
    assert claim.verdict == "not_testable"
    (premise,) = claim.premises
    assert (premise.value, premise.holds) == (1, False)
    assert claim.comparisons[0].values == [0.0]  # FSDP x1 against eager, still recorded


def test_a_second_rank_that_drifts_from_the_single_process_curve_is_not_reproduced():
    claims = decided(SPEED, MEMORY, {"FSDP x2": [curve(5.0, 0.03)]})
    claim = claims["fsdp-world-size-keeps-the-loss"]
    assert claim.verdict == "not_reproduced" and claim.premises[0].holds
    assert (claim.unit, claim.n) == ("runs", 2)


def test_mean_abs_gap_is_stepwise():
    assert mean_abs_gap([1.0, 2.0], [1.5, 1.0]) == pytest.approx(0.75)


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory is read from Linux's /proc")
def test_smoke_run_measures_every_configuration_and_repeats_its_losses(smoke_runs):
    root, (first, second) = smoke_runs("fsdp_compile")
    names = [c["name"] for c in first["timing"]["configurations"]]
    assert names == ["eager", "compile", checkpoint_name(1.0), "FSDP x1", "FSDP x2",
                     "FSDP x2 + compile"]
    for c in first["timing"]["configurations"]:
        assert c["tokens_per_s"] > 0 and c["step_time_ms"] > 0 and 0 < c["mfu"] < 1
    memory = {c["name"]: c["training_memory_mb"] for c in first["timing"]["configurations"]}
    assert memory["eager"] > 0 and memory["compile"] is None
    claims = {c["id"]: c for c in first["claims"]}
    # One seed's losses do not depend on compilation or on the world size, far below the gap
    # between seeds; these follow from the arithmetic, not the clock.
    assert claims["compile-keeps-the-loss"]["verdict"] == "reproduced"
    assert claims["fsdp-world-size-keeps-the-loss"]["verdict"] == "reproduced"
    assert first["metrics"]["loss_gaps"]["fsdp_vs_eager"]["1"] == 0.0
    # The compile claim's premise is the eager runs' MFU, against the same peak as the table's
    (regime,) = claims["compile-speeds-up"]["premises"]
    eager = first["timing"]["configurations"][0]
    assert regime["value"] == pytest.approx(eager["mfu"])  # two runs: median and mean agree
    assert regime["holds"] == (regime["value"] <= 0.6)
    assert (claims["compile-speeds-up"]["verdict"] == "not_testable") == (not regime["holds"])
    assert claims["checkpointing-trades-speed-for-memory"]["kind"] == "property"
    figures = json.loads((root / "a" / "figures" / "data.json").read_text())
    assert first["figures"] == list(figures) == ["throughput", "checkpointing", "loss_curves"]

    for m in (first, second):
        del m["timing"], m["provenance"]
        m["claims"] = [c for c in m["claims"] if not c["from_clock"]]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
