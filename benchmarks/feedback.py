"""Time what a developer waits for, on a fresh copy of the shipped tree: the smoke pipeline job by
job, the no-op rerun against Snakemake's own floor (a 25-job toy workflow), the forced site build
and render stage, and the ten slowest tests.

    python benchmarks/feedback.py                    # everything: ~3 min workflow + ~5 min tests
    python benchmarks/feedback.py --skip-tests       # the workflow only
    python benchmarks/feedback.py --rev HEAD~5       # the same for an older commit (before/after)
    python benchmarks/feedback.py --keep /tmp/fb     # keep the copy (results/, site/, logs/)

The copy is a `git clone` of one commit (HEAD unless --rev) into a temporary folder: uncommitted
edits are not measured, and this tree's results/ and site/ are left alone. It runs with this
interpreter (its snakemake, pytest) and the copy first on PYTHONPATH. Per-job seconds come from
Snakemake's log, whose timestamps have 1-second resolution; jobs with a `benchmark:` file also
show its finer figure (the job's own process, without Snakemake's start-up of it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDER_RULES = ("draw_figures", "render_paper", "render_pages", "site")
NOOP_TARGET = 1.2  # the no-op rerun may cost at most this multiple of Snakemake's floor
TOY_SNAKEFILE = """\
rule all:
    input:
        expand("out/{i}.txt", i=range(25)),


rule touch:
    output:
        "out/{i}.txt",
    shell:
        "touch {output}"
"""


def environment(tree: Path) -> dict[str, str]:
    """This process's environment with the copy first on PYTHONPATH and this venv first on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def run(args: list[str], cwd: Path,
        env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion; exit with its output's tail when it fails. Returns wall s."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"`{shlex.join(args)}` failed in {cwd} (kept there):\n"
                 f"{(done.stdout + done.stderr)[-3000:]}")
    return wall, done


def snakemake(cwd: Path, env: dict[str, str], cores: int, *args: str):
    """Run Snakemake with this interpreter in `cwd`; returns (wall s, finished process)."""
    return run([sys.executable, "-m", "snakemake", "--cores", str(cores), *args], cwd, env)


def copy_tree(rev: str, dest: Path) -> str:
    """Clone this repository into `dest` at `rev`; returns the commit's short hash."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(dest)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", commit], cwd=dest, check=True)
    return commit[:7]


def parse_log(log: Path) -> list[dict]:
    """The jobs of one Snakemake log: rule, wildcards, start and end (datetimes), benchmark path.

    A job's block opens with a `[Thu Dec  3 06:58:39 2026]` line, then `rule NAME:` or
    `localrule NAME:` and indented `jobid:`, `wildcards:` and `benchmark:` lines; it closes with
    a timestamp and `Finished jobid: N`.
    """
    jobs, now, current = {}, None, None
    for line in log.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]{8} \d{4})\]", line):
            now = dt.datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"(?:local)?rule (\w+):$", line):
            current = {"rule": m[1], "wildcards": "", "start": now, "end": None, "benchmark": None}
        elif current and (m := re.match(r"\s+jobid: (\d+)$", line)):
            jobs[int(m[1])] = current
        elif current and (m := re.match(r"\s+(wildcards|benchmark): (.*)$", line)):
            current[m[1]] = m[2]
        elif (m := re.match(r"Finished jobid: (\d+)", line)) and int(m[1]) in jobs:
            jobs[int(m[1])]["end"] = now
    return [job for job in jobs.values() if job["end"] is not None]


def benchmark_seconds(tree: Path, path: str | None) -> float | None:
    """The `s` column of a job's benchmark file, or None without one."""
    if not path or not (tree / path).exists():
        return None
    header, *rows = (tree / path).read_text().splitlines()
    return float(rows[-1].split("\t")[header.split("\t").index("s")]) if rows else None


def logged_jobs(tree: Path) -> list[dict]:
    """The jobs of the newest run in the copy, less `all`, with name, start offset and seconds."""
    log = max((tree / ".snakemake" / "log").glob("*.log"), key=lambda p: p.stat().st_mtime)
    jobs = [job for job in parse_log(log) if job["rule"] != "all"]
    first = min(job["start"] for job in jobs)
    for job in jobs:
        job["name"] = job["rule"] + (f"[{job['wildcards']}]" if job["wildcards"] else "")
        job["offset"] = (job["start"] - first).total_seconds()
        job["seconds"] = (job["end"] - job["start"]).total_seconds()
        job["bench"] = benchmark_seconds(tree, job["benchmark"])
    return sorted(jobs, key=lambda job: (-job["seconds"], job["offset"]))


def by_rule(jobs: list[dict]) -> str:
    """Job seconds summed per rule, largest first, on one line."""
    sums: dict[str, float] = {}
    for job in jobs:
        sums[job["rule"]] = sums.get(job["rule"], 0.0) + job["seconds"]
    return ", ".join(f"{rule} {s:.0f} s" for rule, s in sorted(sums.items(), key=lambda kv: -kv[1]))


def plural(n: int, word: str) -> str:
    """`1 job`, `2 jobs`."""
    return f"{n} {word}{'s' * (n != 1)}"


def smoke_pipeline(tree: Path, env: dict[str, str], cores: int) -> tuple[float, list[dict]]:
    """Run the smoke pipeline from nothing; print its jobs, slowest first. Returns (wall, jobs)."""
    wall, _ = snakemake(tree, env, cores, "--config", "scale=smoke")
    jobs = logged_jobs(tree)
    print(f"smoke pipeline: {plural(len(jobs), 'job')} in {wall:.1f} s wall ({cores} cores); "
          "seconds from the log, 1 s resolution")
    width = max(len(job["name"]) for job in jobs)
    print(f"  {'job':<{width}}  {'start':>6}  {'seconds':>7}  {'benchmark':>9}")
    for job in jobs:
        bench = f"{job['bench']:9.2f}" if job["bench"] is not None else ""
        print(f"  {job['name']:<{width}}  {job['offset']:6.0f}  {job['seconds']:7.0f}  "
              f"{bench}".rstrip())
    print(f"  by rule: {by_rule(jobs)}")
    print(f"  sum of job seconds {sum(job['seconds'] for job in jobs):.0f} s, "
          f"wall {wall:.1f} s\n")
    return wall, jobs


def noop_seconds(cwd: Path, env: dict[str, str], cores: int, *args: str) -> float:
    """Wall seconds of one rerun that must find nothing to do."""
    wall, done = snakemake(cwd, env, cores, *args)
    if "Nothing to be done" not in done.stdout + done.stderr:
        sys.exit(f"the rerun in {cwd} was not a no-op:\n{done.stderr[-3000:]}")
    return wall


def noop_rerun(tree: Path, toy: Path, env: dict[str, str], cores: int,
               repeats: int) -> tuple[float, float, float]:
    """Time the digest's no-op rerun against the toy workflow's, in pairs run back to back so
    that both of a pair meet the same machine (a shared 2-core machine drifts by 30% within
    minutes); print the medians and the median paired ratio. Returns (digest, toy, ratio)."""
    toy.mkdir(parents=True)
    (toy / "Snakefile").write_text(TOY_SNAKEFILE)
    snakemake(toy, env, cores)
    pairs = [(noop_seconds(tree, env, cores, "--config", "scale=smoke"),
              noop_seconds(toy, env, cores)) for _ in range(repeats)]
    digest = statistics.median(d for d, _ in pairs)
    floor = statistics.median(f for _, f in pairs)
    ratio = statistics.median(d / f for d, f in pairs)
    print(f"no-op rerun ({repeats} pairs): digest {digest:.2f} s, 25-job toy workflow "
          f"{floor:.2f} s (Snakemake's floor), median paired ratio {ratio:.2f}x "
          f"(target <= {NOOP_TARGET}x)\n")
    return digest, floor, ratio


def forced_render(tree: Path, env: dict[str, str], cores: int) -> dict[str, tuple[float, int]]:
    """Time the site build alone, then the whole render stage, both forced. Label -> (s, jobs)."""
    times = {}
    for label, rules in (("site", ("site",)), ("render stage", RENDER_RULES)):
        wall, _ = snakemake(tree, env, cores, "--config", "scale=smoke", "--forcerun", *rules)
        jobs = logged_jobs(tree)
        span = max(job["offset"] + job["seconds"] for job in jobs)
        times[label] = (wall, len(jobs))
        print(f"forced {label} ({', '.join(rules)}): {plural(len(jobs), 'job')} in {wall:.1f} s "
              f"wall, {span:.0f} s from first job start to last job end; {by_rule(jobs)}")
    print()
    return times


def slowest_tests(tree: Path, env: dict[str, str], extra: str) -> tuple[float, str]:
    """Run the test suite in the copy; print its ten slowest tests. Returns (wall, result line)."""
    print("test suite: running (5-6 minutes on 2 cores)...", flush=True)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
            *shlex.split(extra)]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    lines = done.stdout.splitlines()
    header = next((i for i, line in enumerate(lines) if "slowest" in line and "durations" in line),
                  None)
    durations = ([line for line in lines[header + 1:] if re.match(r"\d+\.\d+s ", line)]
                 if header is not None else [])
    result = next((line.strip("= ") for line in reversed(lines) if line.strip()), "no output")
    print(f"test suite: {result}; {wall:.1f} s wall")
    print("  ten slowest:" if durations else "  no durations reported")
    for line in durations:
        print(f"  {line}")
    if done.returncode != 0:
        print(f"  pytest exited {done.returncode}")
    print()
    return wall, result


def main() -> None:
    """Copy the tree, run every measurement and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2, help="snakemake --cores (default: 2, "
                        "the project's machine)")
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (default: HEAD)")
    parser.add_argument("--repeats", type=int, default=9,
                        help="pairs of no-op reruns (digest, toy); the medians are shown")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the test suite")
    parser.add_argument("--keep", type=Path, help="make the copy here (a new folder) and keep it")
    parser.add_argument("--tests-args", default="", help=argparse.SUPPRESS)  # e.g. a test file
    args = parser.parse_args()

    if args.keep and args.keep.exists():
        sys.exit(f"{args.keep} exists: --keep wants a new folder")
    work = (args.keep.resolve() if args.keep
            else Path(tempfile.mkdtemp(prefix="digestlab-feedback-")))
    tree, toy = work / "tree", work / "toy"
    commit = copy_tree(args.rev, tree)
    env = environment(tree)
    _, found = run([sys.executable, "-c", "import digestlab; print(digestlab.__file__)"], tree, env)
    if not Path(found.stdout.strip()).is_relative_to(tree):
        sys.exit(f"the copy's digestlab is shadowed by {found.stdout.strip()}")
    print(f"commit {commit} copied to {tree}\n", flush=True)

    smoke_wall, jobs = smoke_pipeline(tree, env, args.cores)
    digest, floor, ratio = noop_rerun(tree, toy, env, args.cores, args.repeats)
    render = forced_render(tree, env, args.cores)
    tests = None if args.skip_tests else slowest_tests(tree, env, args.tests_args)

    slowest = jobs[0]
    print(f"summary (commit {commit}, {args.cores} cores)")
    print(f"  smoke pipeline      {smoke_wall:6.1f} s, {plural(len(jobs), 'job')}; slowest "
          f"{slowest['name']} {slowest['seconds']:.0f} s")
    print(f"  no-op rerun         {digest:6.2f} s vs floor {floor:.2f} s: {ratio:.2f}x paired "
          f"(target <= {NOOP_TARGET}x)")
    for label, (wall, n) in render.items():
        print(f"  {'forced ' + label:<20}{wall:6.1f} s ({plural(n, 'job')})")
    print(f"  test suite          {tests[0]:6.1f} s ({tests[1]})" if tests else
          "  test suite          skipped")
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
