"""Kill a run with SIGKILL at random moments, run it again each time, and check that it
ends with exactly the rows of an uninterrupted run.

    python benchmarks/kill_resume.py --reference RUN_DIR --output DIR [--kills 10] [--seed 0] \\
        -- --profile ci --defenses all --bypass all --generators all

The arguments after `--` are `bench run`'s (without --output). The run uses a fresh
cache folder under DIR unless $BENCH_CACHE is set. Prints the rows on disk at each
kill and the comparison with RUN_DIR/cells.jsonl.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_rows import rows  # noqa: E402  (the rows of a run, as compare_rows.py reads them)


def lines_on_disk(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="an uninterrupted run of the same command")
    parser.add_argument("--output", required=True)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--between", type=float, nargs=2, default=(3.0, 40.0),
                        help="seconds after each start to kill at, drawn uniformly (default 3 40)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    out = Path(args.output)
    env = {**os.environ}
    env.setdefault("BENCH_CACHE", str(out.parent / f"{out.name}-cache"))
    command = [sys.executable, "-m", "bench", "run", *[a for a in args.bench_args if a != "--"], "--output", str(out)]
    rng = random.Random(args.seed)
    started = time.time()
    for kill in range(1, args.kills + 1):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(*args.between)
        try:
            process.wait(timeout=delay)
            print(f"kill {kill}: the run finished before {delay:.1f} s")
            break
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        print(f"kill {kill}: after {delay:5.1f} s, {lines_on_disk(out / 'cells.jsonl'):4d} rows on disk")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:])
        return 1
    ours, reference = rows(out), rows(Path(args.reference))
    differ = [k for k in reference if k not in ours or ours[k][1:] != reference[k][1:]
              or abs(ours[k][0] - reference[k][0]) > 1e-6]
    extra = [k for k in ours if k not in reference]
    print(f"final run: {len(ours)} rows, reference {len(reference)}; {len(differ)} differ, {len(extra)} extra "
          f"({time.time() - started:.0f} s in all)")
    return 0 if not differ and not extra else 1


if __name__ == "__main__":
    sys.exit(main())
