"""What the Snakemake workflow needs while it is parsed. Kept light: no torch, no plotting."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from digestlab.experiments import (
    base_models,
    experiment_exists,
    load_spec,
    merge_params,
    param_problems,
)
from digestlab.io import read_json, write_json_atomic
from digestlab.methods import declared
from digestlab.papers import Paper, PaperError, describe_error, load_papers, load_tags


class FetchSettings(BaseModel):
    """How the fetch stage asks arXiv (config/config.yaml, `fetch:`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    api_url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(gt=0)
    num_retries: int = Field(ge=0)
    delay_s: float = Field(ge=0)
    retry_offline_after_min: float = Field(ge=0)
    download_pdf: bool


class ExperimentJobSettings(BaseModel):
    """What each experiment job asks for. Not strict: `--config experiment_job='{threads: 8}'`
    hands its numbers over as strings."""

    model_config = ConfigDict(extra="forbid")

    threads: int | Literal["all"] = "all"
    mem_mb: Annotated[int, Field(gt=0)] = 8000

    @field_validator("threads", mode="before")
    @classmethod
    def _all_or_cores(cls, value: Any) -> Any:
        # one message for both ways of getting it wrong
        if value == "all" or (str(value).isdigit() and int(value) > 0):
            return value
        raise ValueError(f"must be 'all' or a number of cores >= 1, got {value!r}")


class Settings(BaseModel):
    """The workflow's configuration: config/config.yaml with --configfile and --config over it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    scale: Literal["auto", "smoke", "cpu", "gpu"]
    papers_dir: str
    tags: str
    experiment_packages: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]] = (
        Field(min_length=1))
    fetch: FetchSettings
    experiment_job: ExperimentJobSettings = ExperimentJobSettings()


def check_config_or_exit(config: Mapping[str, Any], files: list[str],
                         command_line: bool = False) -> Settings:
    """The validated configuration; on any problem print one line each, naming where it came
    from (the config files, and --config when the command line set values) and the field, and
    stop before any job runs."""
    try:
        return Settings.model_validate(config)
    except ValidationError as exc:
        here = Path.cwd()
        paths = [Path(f).resolve() for f in files]
        shown = [str(p.relative_to(here) if p.is_relative_to(here) else p) for p in paths]
        where = " + ".join([*dict.fromkeys(shown), *(["--config"] if command_line else [])])
        problems = [f"{where}: {field}: {message}"
                    for field, message in map(describe_error, exc.errors())]
        n = len(problems)
        sys.exit("\n".join(problems) + f"\n{n} problem{'s' * (n != 1)} in the configuration")


def load_papers_or_exit(config: Mapping[str, Any]) -> dict[str, Paper]:
    """Validate every entry; on any problem print one line each and stop before any job runs."""
    packages = tuple(config["experiment_packages"])
    try:
        tags = load_tags(config["tags"])
        return load_papers(
            config["papers_dir"], tags, lambda name: experiment_exists(name, packages),
            lambda name: [method.id for method in declared(name, packages).methods],
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
    bases: dict[str, dict[str, Any]]  # each base model (or replica) by name, to its own params
    budget_s: float  # what the experiment may take at this scale, all its jobs together
    parents: dict[str, str]  # base model -> the base model it fine-tunes (STARTS_FROM)


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
                base_models(spec, params), spec.BUDGET_S[scale],
                dict(getattr(spec, "STARTS_FROM", {})),
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


# Beside Snakemake's locks, each run that takes them records itself, so that a run on another
# host of a shared filesystem, which cannot see that run's processes, does not take its locks
# for stale. Snakemake removes the whole folder, these records included, when a run ends.
LOCKS = Path(".snakemake") / "locks"
UNLOCK = "snakemake --unlock"


def _read_first_line(path: str | Path) -> str | None:
    """The first line of a small text file (of /proc, say), or None where it cannot be read."""
    try:
        return Path(path).read_text().split("\n", 1)[0].strip()
    except OSError:
        return None


def process_start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/PID/stat, field 22): with
    the pid it tells the process from a later one given the same pid. None where /proc has no
    such process (or only one that has ended and awaits its parent), or no /proc."""
    stat = _read_first_line(f"/proc/{pid}/stat")
    try:
        fields = stat.rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        return None if fields[0] == "Z" else int(fields[19])
    except (AttributeError, ValueError, IndexError):
        return None


def _process_started(start_ticks: int | None) -> str:
    """When a process that started `start_ticks` after boot started, in UTC (now where /proc
    cannot tell)."""
    started = dt.datetime.now(dt.UTC)
    stat = Path("/proc/stat")
    if start_ticks is not None and stat.exists():
        boot = [line.split()[1] for line in stat.read_text().splitlines()
                if line.startswith("btime ")]
        if boot:
            seconds = int(boot[0]) + start_ticks / os.sysconf("SC_CLK_TCK")
            started = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return started.strftime("%Y-%m-%d %H:%M:%S UTC")


def this_run() -> dict[str, Any]:
    """This process as the holder of Snakemake's locks: host, pid, and its start (as ticks
    since this boot, and as a time for people)."""
    pid = os.getpid()
    ticks = process_start_ticks(pid)
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": ticks,
            "boot_id": _read_first_line("/proc/sys/kernel/random/boot_id"),
            "started": _process_started(ticks)}


def record_lock_holder(workdir: str | Path = ".", before_locking: bool = False) -> Path | None:
    """Write this run's holder record beside Snakemake's locks in `workdir`, atomically, and
    return its path. Called while the workflow is parsed (`before_locking`: only when no locks
    stand, since a run that finds locks is refused or holds other files), so that no moment of
    the run's hold goes unrecorded, and again once it holds them. None when nothing is written."""
    locks = Path(workdir) / LOCKS
    held = locks.is_dir() and any(locks.glob("*.lock"))
    if held == before_locking:
        return None
    holder = this_run()
    path = locks / f"holder.{holder['host']}.{holder['pid']}.json"
    write_json_atomic(path, holder)
    return path


# Command-line words of a Snakemake call that runs no job: a dry run, --unlock (which clears the
# locks itself), and the calls that only read or describe the workflow.
NO_RUN = frozenset("--dry-run --dryrun --unlock --lint --summary --detailed-summary --list-rules "
                   "--list --dag --rulegraph --filegraph --d3dag --containerize --report "
                   "--generate-unit-tests --cleanup-metadata --list-changes --lc".split())


def runs_jobs(argv: list[str]) -> bool:
    """Whether a `snakemake` command line may run jobs: none of NO_RUN, and no -n among short
    flags (`-n`, `-pn`). The workflow's settings are not known while it is parsed, hence argv."""
    return not any(arg.split("=")[0] in NO_RUN or (re.fullmatch(r"-[A-Za-z]+", arg)
                                                   and "n" in arg) for arg in argv[1:])


def _holder_records(locks: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """The holder records beside the locks, and the files among them that cannot be read."""
    holders, unreadable = [], []
    for path in sorted(locks.glob("holder.*.json")):
        try:
            holder = read_json(path)
            holder["host"], holder["pid"] = str(holder["host"]), int(holder["pid"])
            if holder["pid"] <= 0:
                raise ValueError("no process has this pid")
            ticks = holder.get("start_ticks")
            if ticks is not None and (type(ticks) is not int or ticks < 0):
                raise ValueError("a start that is not a count of clock ticks")
            holders.append(holder)
        except (OSError, ValueError, TypeError, KeyError):
            unreadable.append(path)
    return holders, unreadable


def holder_is_gone(holder: Mapping[str, Any]) -> bool:
    """Whether the run of a holder record made on this host has ended: its pid is free, or now
    names a process that started at another time, or the host has restarted since."""
    boot_id = _read_first_line("/proc/sys/kernel/random/boot_id")
    if holder.get("boot_id") and boot_id and holder["boot_id"] != boot_id:
        return True
    ticks = process_start_ticks(holder["pid"])
    if ticks is not None:
        return holder.get("start_ticks") is not None and ticks != holder["start_ticks"]
    if Path("/proc/self/stat").exists():
        return True  # /proc works, and has no such process
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a process of another user
    return False


def describe_holder(holder: Mapping[str, Any]) -> str:
    """The holder in words: its pid, host and start."""
    return f"pid {holder['pid']} on {holder['host']}, started {holder.get('started', '?')}"


def clear_stale_locks(workdir: str | Path = ".") -> str | None:
    """Remove Snakemake's locks in `workdir` when the run that holds them has ended; returns
    the line to print: what was removed, or why the locks were kept (None: nothing to say).

    A run killed outright (SIGKILL, a power cut) leaves its locks behind, and the next plain
    `snakemake` would refuse to start until someone found `--unlock`. A lock held by a live run
    is left alone, so that a second run at the same time is still refused. Locks are removed
    only when every run that recorded itself as their holder ran on this host and is gone, and
    no other Snakemake run works in `workdir` here: a holder on another host of a shared
    filesystem cannot be checked from this one. Locks without a holder record (a run that was
    stopped before it wrote one) are removed when no other Snakemake run works here."""
    locks = Path(workdir) / LOCKS
    stale = sorted(locks.glob("*.lock")) if locks.is_dir() else []
    if not stale:
        return None
    holders, unreadable = _holder_records(locks)
    if unreadable:
        return (f"{unreadable[0]}: (file): a lock holder record that cannot be read; the locks "
                f"in {locks} were kept; if no run is working here, clear them with `{UNLOCK}`")
    here = socket.gethostname()
    for holder in holders:
        if holder["host"] != here:
            return (f"{locks}: the locks were kept: they belong to the run of "
                    f"{describe_holder(holder)}, which this host cannot check; if that run has "
                    f"stopped, clear them with `{UNLOCK}`")
    for holder in holders:
        if not holder_is_gone(holder):
            return (f"{locks}: the locks were kept: they belong to the run of "
                    f"{describe_holder(holder)}, still running; wait for it to end, or stop it "
                    f"and clear them with `{UNLOCK}`")
    if live_snakemake_runs(workdir) != []:
        return None
    for path in [*stale, *locks.glob("holder.*.json")]:
        path.unlink(missing_ok=True)
    whose = f" ({'; '.join(describe_holder(h) for h in holders)})" if holders else ""
    return f"removed the locks of an earlier run{whose} that was stopped without cleaning up"


def experiment_threads(threads: int | str, scale: str) -> int:
    """The cores an experiment job uses: `threads`, or every core of this machine for "all"
    (Snakemake caps it at --cores). At the smoke scale a job is mostly its own start-up, so each
    takes one and jobs run side by side (74 s -> 49 s on 2 cores)."""
    if scale == "smoke":
        return 1
    return (os.cpu_count() or 1) if threads == "all" else int(threads)


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
