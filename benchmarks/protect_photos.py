"""`bench protect` on photos like people's: 20 photos composed from held-out CelebA-HQ
faces (29001.., 64 px) pasted at 2-4x their size at random places into larger textured
backgrounds (every fourth photo with two faces), after one 12-megapixel photo (4000x3000,
one face at 4x) on its own, first (so that the peak memory is its own). Prints and writes what `bench protect` reports (every copy at
its photo's size, L-inf on the file, pixels changed outside the faces, DSR as the attacker
cuts the copy: detector, centre crop, after JPEG 90) and the 12 MP photo's seconds and
peak memory (the child process's peak resident set).

    python benchmarks/protect_photos.py --out DIR [--defense disrupting] [--generators all]

The composed photos and their copies stay in DIR/photos and DIR/protected (CelebA-HQ
faces: never commit them); DIR/summary.json holds the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.harness.provenance import cpu_name
from bench.toolkit.composed_photos import compose


def compose_folder(data: Path, folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    face = 29001
    for i in range(count):
        n = 2 if i % 4 == 3 else 1
        crops = [np.asarray(Image.open(data / "images_64" / f"{face + k}.jpg").convert("RGB")) for k in range(n)]
        face += n
        scales = list(rng.uniform(2, 4, n))
        width, height = int(rng.integers(480, 900)), int(rng.integers(400, 700))
        compose(crops, (width, height), scales, seed=i).image.save(folder / f"photo{i + 1:02d}.png")


def protect(photos: Path, out: Path, defense: str, generators: str) -> tuple[float, float]:
    """Runs `bench protect` in a child process: (wall seconds, the child's peak RSS in MB)."""
    started = time.time()
    subprocess.run(["bench", "protect", "--defense", defense, "--generators", generators, str(photos), str(out)],
                   check=True)
    return time.time() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data", default="../shared/data/celebahq", type=Path)
    parser.add_argument("--defense", default="disrupting")
    parser.add_argument("--generators", default="all")
    parser.add_argument("--photos", type=int, default=20)
    args = parser.parse_args()
    big = args.out / "big"
    big.mkdir(parents=True, exist_ok=True)
    crop = np.asarray(Image.open(args.data / "images_64" / "29101.jpg").convert("RGB"))
    compose([crop], (4000, 3000), [4.0], seed=100).image.save(big / "twelve_megapixels.jpg", quality=92)
    seconds, peak_mb = protect(big / "twelve_megapixels.jpg", args.out / "big-protected", args.defense, "stargan")
    compose_folder(args.data, args.out / "photos", args.photos)
    protect(args.out / "photos", args.out / "protected", args.defense, args.generators)
    report = json.loads((args.out / "protected" / "report" / "protect.json").read_text())
    (big_record,) = [json.loads(p.read_text())["record"]
                     for p in (args.out / "big-protected" / "report" / "photos").glob("*.json")]
    summary = {"cpu": cpu_name(), "defense": args.defense, "photos": report["photos"],
               "protected": report["protected"], "generators": report["generators"],
               "twelve_megapixels": {"size": [big_record["width"], big_record["height"]],
                                     "seconds_per_photo": big_record["seconds"],
                                     "command_seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb)},
               "command": " ".join(sys.argv)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print((args.out / "protected" / "report" / "protect.md").read_text())
    print(f"12 MP photo ({cpu_name()}): {big_record['seconds']:.1f} s for the photo, {seconds:.1f} s for the whole "
          f"command, peak memory {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
