"""Two `bench run`s of the same matrix at once on one fresh cache: both must finish
with the same rows, no cache entry damaged, and no step computed by both.

    python benchmarks/concurrent_runs.py --output DIR -- --profile ci --defenses all --bypass all

The arguments after `--` are `bench run`'s (without --output). Prints each run's wall
time, the steps each computed and took from the cache, and the checks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contract.results import RunRecord  # noqa: E402
from bench.harness.cache import Cache  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    out = Path(args.output)
    cache = out / "cache"
    env = {**os.environ, "BENCH_CACHE": str(cache)}
    bench_args = [a for a in args.bench_args if a != "--"]
    started = time.time()
    runs = {name: subprocess.Popen([sys.executable, "-m", "bench", "run", *bench_args, "--output", str(out / name)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for name in ("a", "b")}
    failed = False
    for name, process in runs.items():
        _, err = process.communicate()
        if process.returncode != 0:
            print(f"run {name} failed:\n{err[-3000:]}")
            failed = True
    if failed:
        return 1
    print(f"both finished after {time.time() - started:.0f} s")
    total = 0
    for name in runs:
        record = RunRecord.read(out / name)
        steps = record.plan["steps"]
        total = len(steps["list"])
        print(f"run {name}: {record.wall_seconds:.0f} s; computed {sum(steps['ran'].values())} steps {steps['ran']}, "
              f"from the cache {sum(steps['from_cache'].values())}")
    computed = sum(sum(RunRecord.read(out / n).plan["steps"]["ran"].values()) for n in runs)
    print(f"steps in the plan: {total}; computed by either run: {computed} (each once: {computed == total})")
    entries = list(cache.glob("*/*/*/manifest.json"))
    damaged = [p for p in entries if Cache(cache).load(p.parent.parent.parent.name, p.parent.name) is None]
    print(f"cache entries: {len(entries)}, damaged: {len(damaged)}")
    same = subprocess.run([sys.executable, str(Path(__file__).parent / "compare_rows.py"), str(out / "a"),
                           str(out / "b")], capture_output=True, text=True)
    print(same.stdout.strip())
    return 0 if computed == total and not damaged and same.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
