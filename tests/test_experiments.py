from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import digestlab.experiments as experiments_package
from digestlab.claims import SCHEMA_VERSION, Claim, ClaimSpec
from digestlab.experiments import (
    ExperimentError,
    Selection,
    base_models,
    base_sources,
    experiment_exists,
    experiment_sources,
    figure_sources,
    load_spec,
    merge_params,
    overrides_from,
    param_problems,
    parent_base,
    pretrain,
    reproduce,
    resolve_scale,
    selection_problems,
)
from digestlab.modelfile import read_model_file

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
    # the modules of the experiments package itself are not experiments
    assert not any(experiment_exists(m) for m in ("registry", "contract", "params", "drivers"))
    assert experiment_exists("cla")
    sources = experiment_sources("noisy_mean", PACKAGES)
    assert any(s.endswith("experiments_for_tests/noisy_mean/run.py") for s in sources)
    assert any(s.endswith("digestlab/nn/model.py") for s in sources)


def test_analysis_and_base_model_sources_are_apart():
    analysis = experiment_sources("tiny_lm", PACKAGES)
    base = base_sources("tiny_lm", "lm", PACKAGES)
    assert any(s.endswith("tiny_lm/run.py") for s in analysis)
    assert not any(s.endswith("tiny_lm/base_lm.py") for s in analysis)
    assert any(s.endswith("tiny_lm/base_lm.py") for s in base)
    assert not any(s.endswith("tiny_lm/run.py") or s.endswith("tiny_lm/__init__.py")
                   for s in base)
    assert any(s.endswith("digestlab/train.py") for s in base)
    # deciding claims is analysis: editing it never retrains a base model
    assert not any(s.endswith("digestlab/claims.py") for s in base)
    assert any(s.endswith("digestlab/claims.py") for s in analysis)


def test_figures_are_drawn_apart_from_the_analysis():
    analysis = experiment_sources("noisy_mean", PACKAGES)
    figures = figure_sources("noisy_mean", PACKAGES)
    assert not any(s.endswith("figures.py") for s in analysis)  # a new label reruns nothing
    assert any(s.endswith("noisy_mean/figures.py") for s in figures)
    assert any(s.endswith("digestlab/figures.py") for s in figures)
    assert any(s.endswith("ko/LC_MESSAGES/messages.po") for s in figures)


def test_specs_import_without_torch():
    # every registered experiment: the workflow reads them all while it plans
    code = ("import pkgutil, sys; import digestlab.experiments as e; "
            "names = [m.name for m in pkgutil.iter_modules(e.__path__) if m.ispkg]; "
            "assert len(names) >= 5, names; [e.load_spec(n) for n in names]; "
            "import digestlab.workflow; assert 'torch' not in sys.modules, 'torch imported'; "
            # the figures are drawn in the render environment, which has no torch
            "from digestlab.figures import experiment_figures; "
            "assert all(experiment_figures(n) for n in names); "
            "assert 'torch' not in sys.modules, 'figures import torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_metrics_json_follows_the_contract(tmp_path):
    metrics = run(tmp_path, {"samples": 50})
    assert metrics["experiment"] == "noisy_mean" and metrics["scale"] == "smoke"
    assert metrics["params"] == {"true_mean": 0.0, "samples": 50, "seeds": [0, 1, 2],
                                 "pause_s": 0.0}
    assert metrics["provenance"]["bases"] == {}
    assert metrics["seeds"] == [0, 1, 2] and metrics["device"] == "cpu"
    assert metrics["claims_schema"] == SCHEMA_VERSION
    (claim,) = metrics["claims"]
    assert Claim.model_validate(claim).verdict == "reproduced"
    assert claim["unit"] == "training seeds" and claim["n"] == 3
    (comparison,) = claim["comparisons"]
    assert comparison["bound"]["source"] == "ours" and comparison["level"] == 0.9
    assert metrics["figures"] == ["means"]
    assert json.loads((tmp_path / "figures" / "data.json").read_text())["means"]["bound"] == 1.0
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
    spec = load_spec("noisy_mean", PACKAGES)
    with pytest.raises(ExperimentError, match="steps: unknown param.*allowed: true_mean, samples"):
        merge_params(spec, "smoke", {"steps": 3})


def test_wrong_types_name_the_nested_field():
    spec = load_spec("cla")
    problems = dict(param_problems(spec, "cpu", {"model": {"n_layer": "six", "n_layers": 4},
                                                 "train": {"learning_rate": "fast"},
                                                 "seeds": []}))
    assert problems["model.n_layer"].startswith("Input should be a valid integer")
    assert problems["model.n_layers"].startswith("unknown param (allowed: vocab_size, block_size")
    assert problems["train.learning_rate"].startswith("Input should be a valid number")
    assert problems["seeds"].startswith("List should have at least 2 items")
    assert param_problems(spec, "cpu", {"model": {"n_kv_heads": 3}}) == [
        ("model", "n_heads (4) must be a multiple of n_kv_heads (3)")]
    assert param_problems(spec, "cpu", {"seq_len": 256}) == [
        ("", "seq_len 256 exceeds model.block_size 128")]


def test_auto_scale_follows_the_gpu(monkeypatch):
    monkeypatch.setattr("digestlab.experiments.registry.cuda_visible", lambda: True)
    assert resolve_scale("auto") == "gpu"
    monkeypatch.setattr("digestlab.experiments.registry.cuda_visible", lambda: False)
    assert resolve_scale("auto") == "cpu"
    assert resolve_scale("smoke") == "smoke"
    with pytest.raises(ExperimentError, match="unknown scale"):
        resolve_scale("huge")


def test_nested_params_merge_key_by_key():
    spec = load_spec("cla")
    params = merge_params(spec, "smoke", {"model": {"n_layer": 12}, "train": {"steps": 5}})
    assert params.model.n_layer == 12 and params.model.d_model == 64
    assert params.train.steps == 5 and params.train.learning_rate == 6e-3
    with pytest.raises(ExperimentError, match="model.n_layers: unknown param"):
        merge_params(spec, "smoke", {"model": {"n_layers": 4}})
    with pytest.raises(ExperimentError, match="seeds: List should have at least 2 items"):
        merge_params(spec, "smoke", {"seeds": []})


def test_set_assignments_become_nested_overrides_that_merge_like_an_entrys():
    overrides = overrides_from(["train.steps=5", "seeds=[3, 4]", "corpus=generated",
                                "model.n_layer=12", "train.learning_rate=1e-3"])
    assert overrides == {"train": {"steps": 5, "learning_rate": 1e-3}, "seeds": [3, 4],
                         "corpus": "generated", "model": {"n_layer": 12}}
    params = merge_params(load_spec("cla"), "smoke", overrides)
    assert (params.train.steps, params.seeds, params.corpus) == (5, [3, 4], "generated")
    smoke = load_spec("cla").SCALES["smoke"]
    assert params.train.warmup_steps == smoke.train.warmup_steps  # the rest kept
    assert params.model.d_model == smoke.model.d_model


def test_gpu_scale_without_a_gpu_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ExperimentError, match="needs a CUDA device"):
        run(tmp_path, scale="gpu")


def test_single_seed_keeps_metrics_valid_json(tmp_path):
    metrics = run(tmp_path, {"seeds": [7]})
    assert metrics["claims"][0]["verdict"] == "inconclusive"
    (comparison,) = metrics["claims"][0]["comparisons"]
    assert comparison["sd"] is None and comparison["interval"] is None
    assert json.loads(json.dumps(metrics)) == metrics


def test_a_base_model_is_trained_saved_and_recorded_with_its_provenance(tmp_path):
    metrics = reproduce("tiny_lm", "smoke", {}, tmp_path / "out" / "metrics.json",
                        tmp_path / "out" / "figures", PACKAGES, log=lambda _: None)
    (claim,) = metrics["claims"]
    assert claim["verdict"] == "reproduced"  # 30 steps take a byte model well below ln 256
    base = metrics["provenance"]["bases"]["lm"]
    assert base["file"] == "lm.pt" and len(base["sha256"]) == 64
    assert base["provenance"]["experiment"] == "tiny_lm" and base["provenance"]["base"] == "lm"
    assert base["train"]["items_seen"] == 30 * 8 * 32 and "loss_curve" not in base["train"]
    assert metrics["metrics"]["base_final_train_loss"] == base["train"]["final_train_loss"]


def test_a_checkpoint_records_the_params_it_was_trained_with(tmp_path):
    path = tmp_path / "lm.pt"
    values = {"train": {"steps": 3}}
    pretrain("tiny_lm", "lm", "smoke", values, path, PACKAGES, log=lambda _: None)
    spec = load_spec("tiny_lm", PACKAGES)
    expected = merge_params(spec, "smoke", {"lm": values}).lm.model_dump(mode="json")
    assert read_model_file(path)["provenance"]["params"] == expected


def test_a_fine_tune_comes_after_the_base_it_starts_from_and_needs_its_checkpoint(tmp_path):
    spec = load_spec("sirllm")
    assert list(base_models(spec, spec.SCALES["smoke"])) == ["lm", "robust"]
    assert parent_base(spec, "robust") == "lm" and parent_base(spec, "lm") is None
    for wrong in ({"BASES": ("robust", "lm")}, {"REPLICATES": {"lm": "eval_seed"}}):
        bad = SimpleNamespace(**{"BASES": spec.BASES, "STARTS_FROM": spec.STARTS_FROM} | wrong)
        with pytest.raises(ExperimentError, match="STARTS_FROM"):
            base_models(bad, spec.SCALES["smoke"])
    with pytest.raises(ExperimentError, match="starts from 'lm'"):
        pretrain("sirllm", "robust", "smoke", {}, tmp_path / "robust.pt", log=lambda _: None)


REGISTERED = sorted(m.name for m in pkgutil.iter_modules(experiments_package.__path__)
                    if m.ispkg)


def clock_free(metrics: dict) -> dict:
    """metrics.json without what depends on the clock: the timing and provenance fields, and
    the numbers and verdicts of claims decided from timings (`from_clock`)."""
    out = {k: v for k, v in metrics.items() if k not in ("timing", "provenance")}
    out["claims"] = [{"id": c["id"]} if c["from_clock"] else c for c in metrics["claims"]]
    # Holm ranks a paper's claims together: with one decided from the clock among them, every
    # claim's correction (its rank's threshold, and the family's size) moves with the clock
    if any(c["from_clock"] for c in metrics["claims"]):
        out["claims"] = [{k: v for k, v in c.items() if k != "holm"} for c in out["claims"]]
    return out


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_experiment_repeats_itself_at_smoke_scale(smoke_runs, name):
    _, (first, second) = smoke_runs(name)
    assert clock_free(first) == clock_free(second)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_registered_experiments_figures_are_drawn_and_shown_in_both_languages(
        smoke_runs, name, tmp_path):
    from conftest import ROOT, entry, write_entry

    from digestlab.figures import draw_figures
    from digestlab.papers import LANGUAGES
    from digestlab.render import render_paper_pages

    root, (metrics, _) = smoke_runs(name)
    assert metrics["figures"], "every experiment draws at least one figure"
    drawn = draw_figures(name, root / "a" / "figures", tmp_path / "one")
    assert sorted(drawn) == sorted(f"{f}.{lang}.svg" for f in metrics["figures"]
                                   for lang in LANGUAGES)
    hangul = re.compile("[가-힣]")
    for figure in metrics["figures"]:
        ko = (tmp_path / "one" / f"{figure}.ko.svg").read_text()
        en = (tmp_path / "one" / f"{figure}.en.svg").read_text()
        assert hangul.search(ko) and not hangul.search(en), figure
    # the same data draws the same files, byte for byte
    draw_figures(name, root / "b" / "figures", tmp_path / "two")
    if name != "fsdp_compile":  # its figures show timings
        for file in drawn:
            assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes()
    # and the experiment's page shows every one of them, captioned, in the page's language
    path = write_entry(tmp_path, entry("paper", reproduction={"experiment": name}))
    out = {lang: tmp_path / f"{lang}.md" for lang in LANGUAGES}
    render_paper_pages(path, ROOT / "config" / "tags.yaml", None, root / "a" / "metrics.json",
                       out)
    for lang in LANGUAGES:
        page = out[lang].read_text()
        for figure in metrics["figures"]:
            assert f"../../assets/figures/paper/{figure}.{lang}.svg)" in page, (lang, figure)
        assert page.count("<figcaption>") == len(metrics["figures"])


@pytest.mark.parametrize("name", REGISTERED)
def test_every_experiment_declares_its_claims_bounds_and_premises_in_its_spec(name):
    spec = load_spec(name)
    assert spec.CLAIMS and all(isinstance(c, ClaimSpec) for c in spec.CLAIMS.values())
    assert all(claim_id == c.id for claim_id, c in spec.CLAIMS.items())
    for c in spec.CLAIMS.values():
        for bound in [t.bound for t in c.comparisons.values()] + [
                p.bound for p in c.premises.values()]:
            # the paper's number says where it stands, ours says why in both languages
            assert bound.where if bound.source == "paper" else bound.why, (c.id, bound)


@pytest.mark.parametrize("name", REGISTERED)
def test_every_experiments_claims_come_from_its_spec_with_their_declared_premises(
        smoke_runs, name):
    spec = load_spec(name)
    _, (metrics, _) = smoke_runs(name)
    for claim in map(Claim.model_validate, metrics["claims"]):
        declared = spec.CLAIMS[claim.id]
        assert [p.name for p in claim.premises] == list(declared.premises), claim.id
        # comparisons may follow the params (one per step of a sweep), their bounds may not
        declared_bounds = [t.bound for t in declared.comparisons.values()]
        assert all(t.bound in declared_bounds for t in claim.comparisons), claim.id


@pytest.mark.parametrize("name", REGISTERED)
def test_what_a_spec_chose_by_measurement_was_never_chosen_on_what_votes(name):
    spec = load_spec(name)
    for scale, params in spec.SCALES.items():
        assert selection_problems(spec, params) == [], (name, scale)


def test_tuning_units_that_overlap_the_scored_ones_are_refused():
    import types

    spec = types.SimpleNamespace(__name__="x.fake", SELECTIONS=(
        Selection("the learning rate", "tuning_seeds", "seeds"),))
    from pydantic import BaseModel

    class Params(BaseModel):
        tuning_seeds: list[int]
        seeds: list[int]

    assert selection_problems(spec, Params(tuning_seeds=[0, 1], seeds=[2, 3])) == []
    (problem,) = selection_problems(spec, Params(tuning_seeds=[0, 1], seeds=[1, 2]))
    assert problem[0] == "tuning_seeds" and "[1]" in problem[1] and "seeds" in problem[1]
