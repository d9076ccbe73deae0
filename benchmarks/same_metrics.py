"""Are two runs' results the same? Compares every metrics.json and figures/data.json of two
results folders, leaving out what depends on the clock (`timing`) or on where the run happened
(`provenance`), and prints, per result, "identical" or the paths that differ.

    python benchmarks/same_metrics.py /old/results results          # after a refactor
    python benchmarks/same_metrics.py /old/results results --strict # no renames applied

A change that renames keys on purpose says so in RENAMES below; the old tree is read through
them (and through ADDED, fields a change adds with the value that keeps the old behaviour), so
that what remains is a difference in what was measured. Numbers must be equal exactly: the runs
are deterministic on the CPU. Claims decided on timings (fsdp_compile's speed and memory claims)
differ from run to run by nature; their paths are listed under "clock-derived" and are not
counted as differences; nor are the data of the figures that plot timings (CLOCK_FIGURES).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Keys renamed when one word came to mean one thing (checkpoint, budget, scale, variant):
# old key -> new key, anywhere in a result, and the old -> new wording of texts that name them.
RENAMES = {
    "variants": "designs", "variant": "design",  # cla: one word, "design"
    "budgets": "cache_sizes", "budget": "cache_size",  # sirllm: a cache size, not a budget
    "by_budget": "by_cache_size", "correct_at_budget": "correct_at_cache_size",
    "oracle_scale": "oracle_factor",  # spo: a factor, not a scale
}
CLAIM_RENAMES = {"scale": "space"}  # a comparison is decided in linear or log space
TEXT_RENAMES = {"cache budget": "cache size", "캐시 예산이 같을 때": "캐시 크기가 같을 때"}
VALUE_RENAMES = {"variant": "design"}  # cla's reference table's first column
ADDED = {"accumulate": 1}  # TrainConfig's gradient accumulation; 1 is the old loop
SKIPPED = {"timing", "provenance", "claims_schema"}
# Claims whose numbers come from the clock: their estimates move between any two runs.
CLOCK_CLAIMS = ("compile-speeds-up", "selective-checkpointing-under-a-memory-cap")
# Figures that show timings and memory (fsdp_compile's): their data move the same way.
CLOCK_FIGURES = ("throughput", "checkpointing")


def renamed(value: Any, in_claims: bool = False) -> Any:
    """`value` (an old result) with RENAMES applied to its keys and texts."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = RENAMES.get(key, key)
            if in_claims:
                key = CLAIM_RENAMES.get(key, key)
            out[key] = renamed(item, in_claims or key == "claims")
        return out
    if isinstance(value, list):
        return [renamed(item, in_claims) for item in value]
    if isinstance(value, str):
        for old, new in TEXT_RENAMES.items():
            value = value.replace(old, new)
        return VALUE_RENAMES.get(value, value)
    return value


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """The paths at which `new` differs from `old` (fields in ADDED with their old value aside)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if path == "" and key in SKIPPED:
                continue
            if key not in old and ADDED.get(key, object()) == new[key]:
                continue
            if key not in old or key not in new:
                out.append(f"{path}.{key} ({'added' if key not in old else 'removed'})")
                continue
            out += differences(old[key], new[key], f"{path}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path} (length {len(old)} -> {len(new)})"]
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new and type(old) is type(new) else [path]


def clock_derived(path: str, claims: list[dict]) -> bool:
    """True when `path` lies in a claim about a timing, or in a figure of timings."""
    if path.startswith(tuple(f".{name}" for name in CLOCK_FIGURES)):
        return True
    if not path.startswith(".claims["):
        return False
    index = int(path[len(".claims["):].split("]", 1)[0])
    return index < len(claims) and claims[index]["id"].startswith(CLOCK_CLAIMS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the results folder of the earlier run")
    parser.add_argument("new", type=Path, help="the results folder of the later run")
    parser.add_argument("--strict", action="store_true", help="apply no renames")
    args = parser.parse_args()
    different = 0
    for old_file in sorted(args.old.glob("*/metrics.json")):
        paper = old_file.parent.name
        for name in ("metrics.json", "figures/data.json"):
            before = json.loads((args.old / paper / name).read_text())
            after_file = args.new / paper / name
            if not after_file.exists():
                print(f"{paper}/{name}: missing in {args.new}")
                different += 1
                continue
            after = json.loads(after_file.read_text())
            diff = differences(before if args.strict else renamed(before), after)
            clock = [d for d in diff if clock_derived(d, after.get("claims", []))]
            rest = [d for d in diff if d not in clock]
            note = f" ({len(clock)} clock-derived paths in timing claims)" if clock else ""
            print(f"{paper}/{name}: " + ("identical" + note if not rest else
                                         f"{len(rest)} paths differ{note}"))
            for d in rest[:20]:
                print(f"    {d}")
            different += bool(rest)
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
