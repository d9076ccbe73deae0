"""What the Snakemake workflow needs while it is parsed. Kept light: no torch, no plotting."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digestlab.experiments import experiment_exists, load_spec, merge_params, param_problems
from digestlab.io import read_json
from digestlab.papers import Paper, PaperError, load_papers, load_tags


def load_papers_or_exit(config: Mapping[str, Any]) -> dict[str, Paper]:
    """Validate every entry; on any problem print one line each and stop before any job runs."""
    packages = tuple(config["experiment_packages"])
    try:
        tags = load_tags(config["tags"])
        return load_papers(
            config["papers_dir"], tags, lambda name: experiment_exists(name, packages)
        )
    except PaperError as exc:
        n = len(exc.problems)
        sys.exit("\n".join(exc.problems) + f"\n{n} problem{'s' * (n != 1)} in the paper entries")


@dataclass(frozen=True)
class Reproduction:
    """An entry's reproduction as the DAG needs it: the experiment, its complete validated
    params (JSON-ready, so a change in any value reruns the jobs that use it) and its bases."""

    experiment: str
    params: dict[str, Any]
    bases: tuple[str, ...]
    budget_s: float  # what the experiment may take at this scale, all its jobs together


def load_reproductions_or_exit(
    papers: Mapping[str, Paper], scale: str, config: Mapping[str, Any]
) -> dict[str, Reproduction]:
    """Merge every entry's params over its experiment's `scale` params and validate them; on
    any problem print one line each (file and field) and stop before any job runs."""
    packages = tuple(config["experiment_packages"])
    problems, reproductions = [], {}
    for paper in papers.values():
        if paper.reproduction is None:
            continue
        spec = load_spec(paper.reproduction.experiment, packages)
        where = f"{config['papers_dir']}/{paper.id}.yaml: reproduction.params"
        found = param_problems(spec, scale, paper.reproduction.params)
        problems += [f"{where}{'.' + field if field else ''}: {message}"
                     for field, message in found]
        if not found:
            params = merge_params(spec, scale, paper.reproduction.params)
            reproductions[paper.id] = Reproduction(
                paper.reproduction.experiment, params.model_dump(mode="json"),
                tuple(getattr(spec, "BASES", ())), spec.BUDGET_S[scale],
            )
    if problems:
        n = len(problems)
        sys.exit("\n".join(problems) + f"\n{n} problem{'s' * (n != 1)} in the entries' params")
    return reproductions


def live_snakemake_runs(workdir: str | Path) -> list[int] | None:
    """Process ids of the other Snakemake runs working in `workdir` (this process and its
    ancestors left out), from /proc; None where /proc cannot tell."""
    proc = Path("/proc")
    if not (proc / "self" / "cmdline").exists():
        return None
    here = Path(workdir).resolve()
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:  # this process and the processes that started it
        mine.add(pid)
        try:
            pid = int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    runs = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:3]
            cwd = Path(os.readlink(entry / "cwd")).resolve()
        except OSError:
            continue
        # `snakemake ...`, `python .../bin/snakemake ...` or `python -m snakemake ...`; the
        # jobs it starts run scripts and never carry that name
        if cwd == here and any(Path(a.decode(errors="replace")).name == "snakemake"
                               for a in argv):
            runs.append(int(entry.name))
    return runs


def clear_stale_locks(workdir: str | Path = ".") -> bool:
    """Remove Snakemake's locks in `workdir` when no other Snakemake run works there.

    A run killed outright (SIGKILL, a power cut) leaves its locks behind, and the next plain
    `snakemake` would refuse to start until someone found `--unlock`. A lock held by a live run
    is left alone, so that a second run at the same time is still refused. Returns whether
    anything was removed."""
    locks = Path(workdir) / ".snakemake" / "locks"
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not stale or live_snakemake_runs(workdir) != []:
        return False
    for lock in stale:
        lock.unlink(missing_ok=True)
    return True


def export_package_path(root: str | Path) -> None:
    """Put `root` first on the PYTHONPATH that jobs inherit, so they import this digestlab."""
    paths = [str(Path(root).resolve()), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def retry_token(path: str | Path, retry_after_min: float, now: float | None = None) -> str:
    """A value that changes exactly when an offline record at `path` is due for another try.

    Snakemake reruns a job whose params changed. Each record stores the token it was made with, so
    this stays equal to the stored token until an offline record has aged past `retry_after_min`;
    then it changes once, and the fetch is retried.
    """
    try:
        meta = read_json(path)
        fetched = dt.datetime.fromisoformat(meta["fetched_at"]).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    stored = str(meta.get("retry_token", ""))
    if meta.get("origin") != "offline":
        return stored
    age_s = (time.time() if now is None else now) - fetched
    return stored if age_s < retry_after_min * 60 else f"retry:{meta['fetched_at']}"


@contextlib.contextmanager
def logged(log_path: str | Path) -> Iterator[None]:
    """Send a script's output, its subprocesses' and any traceback to its Snakemake log.

    The redirection is of file descriptors 1 and 2, so worker processes inherit it. A failure
    ends the script with one line naming the error and the log.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    failure = None
    with open(log_path, "w", encoding="utf-8") as log:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            failure = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    if failure:
        sys.exit(f"{failure} (details in {log_path})")
