"""Compare the rows of two runs (cells.jsonl) cell by cell: the same coordinates, n,
direction and threshold, and values within a tolerance. Rows of fit costs (written
among the rows by runs of result schema 1) are left out; `cache_hit` and `seconds` are
not compared.

    python benchmarks/compare_rows.py RUN_A RUN_B [--tolerance 1e-6]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COSTS = ("train_seconds", "trainable_params")


def rows(folder: Path) -> dict:
    found = {}
    for line in (folder / "cells.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["metric"] in COSTS:
            continue
        key = (r["generator"], r["defense"], r["bypass"], r["scenario"], r.get("reference"), r["metric"], r["target"])
        found[key] = (r["value"], r["n"], r["higher_is_better"], r["threshold"])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    a, b = rows(Path(args.a)), rows(Path(args.b))
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = [k for k in set(a) & set(b) if a[k][1:] != b[k][1:] or abs(a[k][0] - b[k][0]) > args.tolerance]
    largest = max((abs(a[k][0] - b[k][0]) for k in set(a) & set(b)), default=0.0)
    print(f"{len(a)} rows in {args.a}, {len(b)} in {args.b}: {len(differ)} differ beyond {args.tolerance:g}, "
          f"{len(only_a)} only in the first, {len(only_b)} only in the second; largest difference {largest:.3g}")
    for key in sorted(differ)[:10] + only_a[:5] + only_b[:5]:
        print("  ", key, a.get(key), b.get(key))
    return 0 if not (differ or only_a or only_b) else 1


if __name__ == "__main__":
    sys.exit(main())
