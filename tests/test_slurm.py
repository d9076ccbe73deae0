"""The smoke-scale workflow on a real single-node SLURM cluster gives a local run's results.

Marked `slurm`: it installs Debian's slurm-wlm and munge when they are missing (as root), starts
the daemons on loopback, and stops them afterwards. Deselect it with `pytest -m "not slurm"`.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import entry, write_entry
from slurm_cluster import SlurmCluster, ensure_installed

pytestmark = pytest.mark.slurm


def results(workdir: Path) -> dict[str, dict]:
    """Every metrics.json, less what depends on the clock, the machine or the run."""
    out = {}
    for path in sorted((workdir / "results").glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        del metrics["timing"], metrics["provenance"]
        out[path.parent.name] = metrics
    return out


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 600):
    command = [sys.executable, "-m", "snakemake", *args,
               "--configfile", "config/config.yaml", "config/test.yaml"]
    # -k: a hung executor (it ignores SIGTERM while it polls) is killed outright
    return subprocess.run(["timeout", "-k", "10", str(timeout), *command], cwd=workdir,
                          capture_output=True, text=True, env=env)


def test_smoke_workflow_on_slurm_matches_a_local_run(workspace, tmp_path_factory):
    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    write_entry(workspace / "papers", entry("tiny", source={"url": "https://example.org/t"},
                                            reproduction={"experiment": "tiny_lm"}))
    on_slurm = tmp_path_factory.mktemp("slurm") / "workflow"
    shutil.copytree(workspace, on_slurm, symlinks=True)

    local = snakemake(workspace, "--cores", "2")
    assert local.returncode == 0, local.stderr[-3000:]

    with SlurmCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        done = snakemake(
            on_slurm, "--workflow-profile", "profiles/slurm",
            # this cluster has no accounting database and no accounts
            "--slurm-status-command", "squeue", "--slurm-no-account",
            "--config", "scale=smoke",  # the profile names cpu; the test's config says smoke
            "--slurm-keep-successful-logs",
            # a test cluster answers at once: poll after 2 s, not the default 40
            "--slurm-init-seconds-before-status-checks", "2",
            env=cluster.env(),
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    slurm_logs = on_slurm / ".snakemake" / "slurm_logs"
    submitted = {p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log")}
    assert submitted == {"rule_pretrain", "rule_reproduce"}  # the other rules are local
    for log in slurm_logs.rglob("*.log"):  # the rules' resources and the profile's threads
        text = log.read_text()
        assert "mem_mb=8000" in text and "runtime=" in text, text
        command = next(line for line in text.splitlines() if "--set-threads" in line).split()
        encoded = command[command.index("--set-threads") + 1 :][:2]
        assert sorted(base64.b64decode(e.removeprefix("base64//")).decode() for e in encoded) \
            == ["pretrain=8", "reproduce=8"]
    assert (on_slurm / "site" / ".built").exists()
    assert results(on_slurm) == results(workspace) != {}
