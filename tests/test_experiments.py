from __future__ import annotations

import json

import pytest

from digestlab.experiments import (
    ExperimentError,
    experiment_exists,
    experiment_sources,
    load_experiment,
    merge_params,
    reproduce,
    resolve_scale,
)

PACKAGES = ("digestlab.experiments", "experiments_for_tests")


def run(tmp_path, overrides=None, scale="smoke"):
    out = tmp_path / "metrics.json"
    reproduce("noisy_mean", scale, overrides or {}, out, tmp_path / "figures", PACKAGES,
              log=lambda _: None)
    return json.loads(out.read_text())


def test_registry_finds_experiments_without_running_them():
    assert experiment_exists("noisy_mean", PACKAGES)
    assert not experiment_exists("noisy_mean")  # test-only: not shipped to users
    assert not experiment_exists("no_such", PACKAGES)
    assert not experiment_exists("../etc", PACKAGES)
    sources = experiment_sources("noisy_mean", PACKAGES)
    assert any(s.endswith("experiments_for_tests/noisy_mean.py") for s in sources)
    assert any(s.endswith("digestlab/nn/model.py") for s in sources)


def test_metrics_json_follows_the_contract(tmp_path):
    metrics = run(tmp_path, {"samples": 50})
    assert metrics["experiment"] == "noisy_mean" and metrics["scale"] == "smoke"
    assert metrics["params"] == {"true_mean": 0.0, "bound": 1.0, "samples": 50, "seeds": [0, 1, 2]}
    assert metrics["seeds"] == [0, 1, 2] and metrics["device"] == "cpu"
    (claim,) = metrics["claims"]
    assert set(claim) == {"id", "text", "measured", "expected", "verdict"}
    assert claim["verdict"] == "reproduced"
    assert metrics["figures"] == ["means.svg"] and (tmp_path / "figures" / "means.svg").exists()
    assert {"digestlab", "git_commit", "python"} <= set(metrics["provenance"])
    assert metrics["timing"]["wall_time_s"] >= 0


def test_verdict_follows_the_measurement(tmp_path):
    assert run(tmp_path, {"true_mean": 3.0})["claims"][0]["verdict"] == "not_reproduced"
    borderline = run(tmp_path, {"true_mean": 1.0, "samples": 20})
    assert borderline["claims"][0]["verdict"] == "inconclusive"


def test_same_seed_gives_the_same_metrics_apart_from_timing(tmp_path):
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    for m in (a, b):
        del m["timing"], m["provenance"]
    assert a == b


def test_unknown_param_names_the_allowed_ones():
    module = load_experiment("noisy_mean", PACKAGES)
    with pytest.raises(ExperimentError, match="unknown param 'steps'.*allowed: bound, samples"):
        merge_params(module, "smoke", {"steps": 3})


def test_auto_scale_follows_the_gpu(monkeypatch):
    monkeypatch.setattr("digestlab.experiments.cuda_visible", lambda: True)
    assert resolve_scale("auto") == "gpu"
    monkeypatch.setattr("digestlab.experiments.cuda_visible", lambda: False)
    assert resolve_scale("auto") == "cpu"
    assert resolve_scale("smoke") == "smoke"
    with pytest.raises(ExperimentError, match="unknown scale"):
        resolve_scale("huge")


def test_nested_params_merge_key_by_key():
    module = load_experiment("cla")
    params = merge_params(module, "smoke", {"model": {"n_layer": 4}, "steps": 3})
    assert params["model"]["n_layer"] == 4 and params["model"]["d_model"] == 32
    with pytest.raises(ExperimentError, match="unknown param 'model.n_layers'"):
        merge_params(module, "smoke", {"model": {"n_layers": 4}})
    with pytest.raises(ExperimentError, match="at least one seed"):
        merge_params(module, "smoke", {"seeds": []})


def test_gpu_scale_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ExperimentError, match="needs a CUDA device"):
        run(tmp_path, scale="gpu")


def test_single_seed_keeps_metrics_valid_json(tmp_path):
    metrics = run(tmp_path, {"seeds": [7]})
    assert metrics["claims"][0]["verdict"] == "inconclusive"
    assert metrics["claims"][0]["measured"]["sd"] is None
