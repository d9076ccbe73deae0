from __future__ import annotations

import json

import pytest

from digestlab.experiments import reproduce
from digestlab.experiments.cla import SCALES
from digestlab.experiments.cla.run import VARIANTS, decide_claims, variant_config


@pytest.mark.parametrize("scale", ["smoke", "cpu", "gpu"])
def test_designs_sit_where_the_paper_puts_them_on_the_memory_axis(scale):
    kv = {name: variant_config(name, SCALES[scale]).kv_bytes_per_token() for name in VARIANTS}
    assert kv["MQA-CLA2"] * 2 == kv["MQA"]
    assert kv["MQA d/2"] == kv["MQA-CLA2"]  # the equal-memory comparison of the paper
    assert kv["MQA-CLA3"] < kv["MQA-CLA2"] < kv["MQA"] < kv["GQA-4"] < kv["MHA"]
    assert variant_config("GQA-4", SCALES[scale]).n_kv_heads == 4
    assert variant_config("MHA", SCALES[scale]).n_kv_heads > 4


def fake_variants(ppl: dict[str, list[float]]) -> dict:
    return {name: {"val_ppl": values,
                   "kv_bytes_per_token": variant_config(name, SCALES["cpu"]).kv_bytes_per_token()}
            for name, values in ppl.items()}


def test_claims_follow_the_paired_ratios():
    variants = fake_variants({
        "MQA": [10.0, 11.0, 12.0],
        "MQA-CLA2": [10.05, 11.02, 12.1],  # within 1% of MQA on every seed
        "MQA d/2": [10.3, 11.4, 12.5],  # CLA2 better on every seed
        "MQA-CLA3": [9.5, 10.4, 11.5],  # CLA3 better than CLA2 on every seed
    })
    verdicts = {c["id"]: c["verdict"] for c in decide_claims(variants)}
    assert verdicts == {
        "cla2-halves-kv": "reproduced",
        "cla2-matches-mqa": "reproduced",
        "cla2-beats-smaller-heads": "reproduced",
        "cla2-beats-cla3": "not_reproduced",
    }


def test_seed_noise_makes_a_claim_inconclusive():
    variants = fake_variants({
        "MQA": [10.0, 11.0, 12.0], "MQA-CLA2": [9.0, 11.6, 12.3],
        "MQA d/2": [9.5, 11.5, 12.2], "MQA-CLA3": [9.1, 11.7, 12.4],
    })
    verdicts = {c["id"]: c["verdict"] for c in decide_claims(variants)}
    assert verdicts["cla2-beats-smaller-heads"] == "inconclusive"


def run_smoke(out, threads, steps=6):
    reproduce("cla", "smoke", {"train": {"steps": steps, "warmup_steps": 2}}, out / "metrics.json",
              out / "figures", threads=threads, log=lambda _: None)
    return json.loads((out / "metrics.json").read_text())


def test_smoke_run_writes_every_design_claim_and_figure(tmp_path):
    metrics = run_smoke(tmp_path, threads=1)
    assert list(metrics["metrics"]["variants"]) == list(VARIANTS)
    assert [c["id"] for c in metrics["claims"]] == [
        "cla2-halves-kv", "cla2-matches-mqa", "cla2-beats-smaller-heads", "cla2-beats-cla3"]
    assert all(len(v["val_ppl"]) == 2 for v in metrics["metrics"]["variants"].values())
    assert (tmp_path / "figures" / "ppl_vs_kv_bytes.svg").read_text().startswith("<?xml")
    assert len(metrics["metrics"]["corpus_sha256"]) == 64


def test_results_do_not_depend_on_how_many_workers_share_the_machine(tmp_path):
    one = run_smoke(tmp_path / "one", threads=1, steps=3)
    two = run_smoke(tmp_path / "two", threads=2, steps=3)
    for m in (one, two):
        del m["timing"], m["provenance"]
    assert one == two
    svg = [(tmp_path / d / "figures" / "ppl_vs_kv_bytes.svg").read_bytes() for d in ("one", "two")]
    assert svg[0] == svg[1]
