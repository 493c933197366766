"""Which offline face detector `bench protect` uses: detection rate, alignment error and
seconds per photo of MTCNN (facenet-pytorch) and OpenCV's Haar cascade, on photos
composed from faces like the generators' (held-out CelebA-HQ 29001.. at 64 px) and from
the demo faces, each pasted at 2-4x its size into a 640x480 background, some photos with
two faces. A face counts as found when one detection's box centre lies inside the square
it was pasted as; MTCNN's alignment error is the mean corner distance of CelebA-HQ's quad
from that square, as a share of its side (Haar gives no landmarks to align by).

    python benchmarks/face_detectors.py [--photos 100] [--data ../shared/data/celebahq]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.toolkit.composed_photos import compose, corner_error
from bench.toolkit.data import DEMO_FACES
from bench.toolkit.face_align import Quad
from bench.toolkit.face_detection import detect_faces


def haar(photo: Image.Image) -> list[tuple[tuple, None]]:
    """(box, no landmarks) per face OpenCV's frontal-face Haar cascade finds."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = np.asarray(photo.convert("L"))
    return [((x, y, x + w, y + h), None) for x, y, w, h in cascade.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]


def mtcnn(photo: Image.Image) -> list[tuple[tuple, np.ndarray]]:
    """(box, five landmarks) per face MTCNN finds."""
    return [(f.box, f.landmarks) for f in detect_faces(photo)]


def inside(box, quad: Quad) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    (left, top), (right, bottom) = quad.corners().min(0), quad.corners().max(0)
    return left <= cx <= right and top <= cy <= bottom


def photos(crop_files: list[Path], count: int, seed: int):
    rng = np.random.default_rng(seed)
    files = iter(crop_files)
    for i in range(count):
        n = 2 if i % 4 == 3 else 1  # every fourth photo has two faces
        crops = [np.asarray(Image.open(next(files)).convert("RGB").resize((64, 64))) for _ in range(n)]
        yield compose(crops, (640, 480), list(rng.uniform(2, 4, n)), seed=seed + i)


def score(detector, composed) -> dict:
    found = faces = false = 0
    errors, seconds = [], []
    for photo in composed:
        started = time.perf_counter()
        detections = detector(photo.image)
        seconds.append(time.perf_counter() - started)
        for quad in photo.faces:
            hits = [landmarks for box, landmarks in detections if inside(box, quad)]
            faces += 1
            found += bool(hits)
            if hits and hits[0] is not None:
                errors.append(corner_error(Quad.from_landmarks(hits[0]), quad))
        false += sum(not any(inside(box, q) for q in photo.faces) for box, _ in detections)
    return {"faces": faces, "found": found, "detection_rate": found / faces, "false_detections": false,
            "seconds_per_photo": float(np.median(seconds)),
            "alignment_error": float(np.mean(errors)) if errors else None,
            "alignment_error_p95": float(np.percentile(errors, 95)) if errors else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--data", default="../shared/data/celebahq")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sources = {"demo faces": sorted(DEMO_FACES.glob("*.png"))}
    held_out = Path(args.data) / "images_64"
    if held_out.is_dir():
        sources["held-out CelebA-HQ"] = [held_out / f"{i}.jpg" for i in range(29001, 30001)]
    results = {}
    for source, files in sources.items():
        composed = list(photos(files, args.photos, seed=0))
        for name, detector in {"mtcnn": mtcnn, "haar": haar}.items():
            results[f"{source} / {name}"] = r = score(detector, composed)
            print(f"{source:20s} {name:6s} found {r['found']}/{r['faces']} ({r['detection_rate']:.1%}), "
                  f"{r['false_detections']} false, {r['seconds_per_photo'] * 1000:.0f} ms/photo, alignment error "
                  + (f"{r['alignment_error']:.3f} (p95 {r['alignment_error_p95']:.3f})"
                     if r["alignment_error"] is not None else "n/a (no landmarks)"))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": platform.processor() or platform.machine(),
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
