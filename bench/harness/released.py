"""Fits released with bench: the quick profile's fitted states on the demo faces (each
generator's LoRA patch, PG's and ID-Guard's generators, CMUA's perturbation, and the
transfer scenario's universal fits), the same for every user of that recipe.

They live in `bench/released/` in the cache's own layout (`<kind>/<key[:2]>/<key>/`,
tensors and manifest): a fit step whose key (the hash of its whole recipe: plugin and
parameters, generator weights, the faces' pixels, seed, device kind, precision, harness
version) names a released entry reads it from there, verified by its hash, instead of
fitting, unless `released_fits` is false (`bench run --refit`, `--no-cache`). The run's
own cache is unchanged: what a run fits itself is stored there as always. Each released
manifest's `info.released` records the commit, command and machine that made it.

`python -m bench.harness.released RUN_DIR [--into FOLDER]` releases the fits of a
finished run (`results/make.sh released-fits` re-makes them all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench.contract.errors import BenchError
from bench.contract.io import atomic_write_json, file_sha256
from bench.contract.results import RunRecord
from bench.harness.cache import MANIFEST, TENSORS, Cache
from bench.harness.estimates import TIMINGS, reference_timings
from bench.harness.plan import FIT_KINDS
from bench.harness.provenance import cpu_name

RELEASED = Path(__file__).resolve().parents[1] / "released"
INDEX = "index.json"


def released_folder() -> Path:
    """The released fits' folder: $BENCH_RELEASED_FITS or the package's own."""
    return Path(os.environ.get("BENCH_RELEASED_FITS", RELEASED)).expanduser()


def released_root(config: dict) -> Path | None:
    """The folder a run reads released fits from, or None where it refits; resolved once
    by the run, which hands it to every process that runs its steps."""
    return released_folder() if config.get("released_fits", True) else None


def open_cache(root: str | Path, released: str | Path | None) -> Cache:
    """The cache at `root`, reading the fits released in folder `released` (None: none)
    where it lacks them."""
    store = Cache(released, read_only=True, kinds=FIT_KINDS) if released is not None else None
    return Cache(root, released=store)


def is_released(info: dict) -> bool:
    return "released" in info


def release(run_dir: Path, into: Path, allow_dirty: bool = False) -> list[dict]:
    """Release the fits a finished run made itself (status "ran": on an empty cache, as
    `--refit` does) into `into`, replacing what it held, each manifest with what made it,
    with the run's step timings (the estimates of machines with no history of their own);
    returns the index entries (also written to index.json). The run must come from a
    committed checkout, unless `allow_dirty`, and this must be the machine it ran on."""
    record = RunRecord.read(run_dir)
    if record is None or record.finished is None:
        raise BenchError(f"{run_dir} holds no finished run (no run.json, or one without its finish time)")
    cache = Cache(record.plan["cache"])
    made_by = {"commit": record.git["commit"], "dirty": record.git["dirty"], "command": record.command,
               "finished": record.finished, "cpu": record.environment.get("cpu"),
               "torch": record.environment.get("packages", {}).get("torch"), "plan": record.plan["id"]}
    if made_by["dirty"] is not False and not allow_dirty:
        raise BenchError(f"{run_dir} was run from a checkout with uncommitted changes (or none): release fits made "
                         "by a commit")
    if made_by["cpu"] != cpu_name():
        raise BenchError(f"{run_dir} ran on {made_by['cpu']}: release its fits on that machine, where its timings "
                         "can be scaled by the same probe")
    fits = [step for step in record.plan["steps"]["list"] if step["id"].split("/")[0] in FIT_KINDS
            and step["status"] != "not needed"]
    for step in fits:
        kind, key = step["id"].split("/")
        if step["status"] != "ran" or cache.load(kind, key) is None:
            raise BenchError(f"fit {step['what']} was not made by {run_dir} itself, or is no longer in its cache "
                             f"{cache.root}: release the fits of a run made with --refit on an empty cache")
    into.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".release.", dir=into.parent))
    try:
        index = [copy_entry(cache, step, staging, made_by) for step in fits]
        atomic_write_json(staging / INDEX, {"made_by": made_by, "fits": index})
        atomic_write_json(staging / TIMINGS, reference_timings(record, cache))
        shutil.rmtree(into, ignore_errors=True)  # the release replaces the last one whole
        shutil.move(str(staging), into)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def copy_entry(cache: Cache, step: dict, into: Path, made_by: dict) -> dict:
    """Copy one fit's cache entry into the release folder `into`; its index entry."""
    kind, key = step["id"].split("/")
    manifest = cache.manifest(kind, key)
    manifest["info"] = {**manifest["info"], "released": made_by}
    target = Cache(into).path(kind, key)
    target.mkdir(parents=True)
    shutil.copyfile(cache.path(kind, key) / TENSORS, target / TENSORS)
    atomic_write_json(target / MANIFEST, manifest)
    return {"what": step["what"], "id": step["id"], "sha256": file_sha256(target / TENSORS),
            "bytes": (target / TENSORS).stat().st_size, "fit_seconds": round(step["seconds"], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness.released", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run folder whose fits to release")
    parser.add_argument("--into", type=Path, default=RELEASED, help=f"the released fits' folder (default {RELEASED})")
    args = parser.parse_args(argv)
    index = release(args.run, args.into)
    total = sum(entry["bytes"] for entry in index)
    print(f"released {len(index)} fits ({total / 2**20:.1f} MiB) into {args.into}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
