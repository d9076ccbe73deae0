"""Time the render stage over the results on disk, through the workflow itself: everything
(each result's methods credited to their papers, every figure in both languages, every page,
the feeds, the strict MkDocs build with its link check), and then the pages and site alone,
which is what editing a note or a template reruns (figures are redrawn only when their data,
code or translations change). The target: the digest's site in under 10 seconds.

    python benchmarks/site_build.py       # after `snakemake --cores all` has produced results

It refuses to start when the workflow would run an experiment first: it times rendering only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDER_RULES = ("credit_methods", "draw_figures", "render_paper", "render_pages", "site")
PAGE_RULES = RENDER_RULES[2:]


def snakemake(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", *args],
                          cwd=ROOT, capture_output=True, text=True)


def main() -> None:
    plan = snakemake("-n", "--forcerun", *RENDER_RULES)
    other = sorted(set(re.findall(r"^(?:local)?rule (\w+):", plan.stdout, re.M))
                   - set(RENDER_RULES) - {"all", "fetch"})
    if plan.returncode != 0 or other:
        sys.exit(f"the workflow would first run {', '.join(other) or 'nothing it can plan'}: "
                 "run `snakemake --cores all` once, then time the site")
    for label, rules in (("everything", RENDER_RULES), ("pages and site", PAGE_RULES)):
        started = time.perf_counter()
        done = snakemake("--forcerun", *rules)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(done.stderr[-2000:])
        jobs = len(re.findall(r"^Finished jobid", done.stderr, re.M)) - 1  # less `all`
        print(f"{label}: {jobs} jobs in {wall:.1f} s (target < 10 s)")
    pages = len(list((ROOT / "site").rglob("*.html")))
    figures = len(list((ROOT / "site" / "assets" / "figures").rglob("*.svg")))
    print(f"the site: {pages} pages, {figures} figures")

if __name__ == "__main__":
    main()
