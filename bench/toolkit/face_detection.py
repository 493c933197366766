"""Finding faces, with their five landmarks, in a photo: MTCNN, offline.

MTCNN (Zhang et al. 2016) as facenet-pytorch implements it; its three small networks'
weights ship inside that package's wheel, so nothing is downloaded. It was chosen over
OpenCV's Haar cascades (no landmarks, and fewer faces found) and BlazeFace (its package
needs TensorFlow) by `benchmarks/face_detectors.py`: detection rate, alignment error
and seconds per photo on photos composed from held-out CelebA-HQ faces and the demo faces.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bench.contract.errors import BenchError

DETECTOR = "mtcnn (facenet-pytorch)"
# MTCNN's cost grows with the pixels it scans: a larger photo is scanned at this long side
# (a face must then be at least MIN_FACE pixels across at that scale)
DETECTION_SIDE = 1600
MIN_FACE = 20
# a candidate counts as a face at this probability (facenet-pytorch's last-stage threshold
# is 0.7; its weakest accepted candidates are often not faces)
MIN_PROBABILITY = 0.9


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # left, top, right, bottom in the photo's pixels
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left and right mouth corner (x, y)
    probability: float


@functools.lru_cache(maxsize=1)
def mtcnn():
    try:
        from facenet_pytorch import MTCNN
    except ImportError as err:
        raise BenchError(f"bench protect finds faces with facenet-pytorch's MTCNN, which is not installed ({err}): "
                         "pip install --no-deps facenet-pytorch==2.6.0 requests") from None
    return MTCNN(keep_all=True, min_face_size=MIN_FACE, device="cpu").eval()


def detect_faces(photo: Image.Image) -> list[DetectedFace]:
    """The faces MTCNN finds in `photo` (any mode), largest first."""
    rgb = photo.convert("RGB")
    scale = min(1.0, DETECTION_SIDE / max(rgb.size))
    if scale < 1:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
    with torch.inference_mode():
        boxes, probabilities, points = mtcnn().detect(rgb, landmarks=True)
    if boxes is None:
        return []
    faces = [DetectedFace(tuple(float(v) / scale for v in box), np.asarray(lm, dtype=np.float64) / scale, float(p))
             for box, p, lm in zip(boxes, probabilities, points) if p >= MIN_PROBABILITY]
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
