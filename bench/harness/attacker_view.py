"""What a protected copy does, measured the way an attacker would use it.

The attacker loads the written file, finds each face with the same detector, cuts it
out along CelebA-HQ's quad and resizes it with Pillow (or, with no detector at all,
takes the photo's central square), and edits it. Each generator's edits of the copy are
compared with its edits of the original photo cut the same way: edit L2 and DSR. The
same again after the copy is re-saved as JPEG at quality 90, as an upload would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from bench.toolkit.face_align import Quad, centre_crop_like_attacker, warp_like_attacker
from bench.toolkit.face_detection import detect_faces
from bench.toolkit.metrics import DSR, L2

DETECTOR_PATH, CENTRE_CROP, JPEG90 = "detector", "centre_crop", "jpeg90"
PATHS = (DETECTOR_PATH, CENTRE_CROP, JPEG90)
UPLOAD_QUALITY = 90


@dataclass
class Crop:
    centre: np.ndarray  # where it lies in the photo (to pair a copy's faces with the original's)
    image: torch.Tensor  # (1, 3, R, R) on [-1, 1]


def as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1


def detected_crops(photo: Image.Image, resolution: int) -> list[Crop]:
    crops = []
    for face in detect_faces(photo):
        quad = Quad.from_landmarks(face.landmarks)
        crops.append(Crop(quad.centre, as_tensor(warp_like_attacker(photo, quad, resolution))))
    return crops


def centre_crop(photo: Image.Image, resolution: int) -> list[Crop]:
    return [Crop(np.array(photo.size) / 2, as_tensor(centre_crop_like_attacker(photo, resolution)))]


def reencoded(photo: Image.Image, quality: int = UPLOAD_QUALITY) -> Image.Image:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def pair(copy: list[Crop], original: list[Crop], tolerance: float) -> list[tuple[Crop, Crop]]:
    """Each original crop with the copy's crop nearest it, where one lies within `tolerance` pixels."""
    pairs = []
    for o in original:
        distances = [np.hypot(*(c.centre - o.centre)) for c in copy]
        if distances and min(distances) <= tolerance:
            pairs.append((copy[int(np.argmin(distances))], o))
    return pairs


def edit_scores(generator, conditions_of, pairs: list[tuple[Crop, Crop]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (face, target): L2 of the copy's edit against the original's, and whether disrupted."""
    l2s, disrupted = [], []
    with torch.no_grad():
        for copy, original in pairs:
            for condition in conditions_of(original.image):
                device = next(generator.parameters()).device
                edited = generator(copy.image.to(device), condition.to(device))
                reference = generator(original.image.to(device), condition.to(device))
                l2s.append(L2.per_pair(edited, reference).cpu())
                disrupted.append(DSR.per_pair(edited, reference).cpu())
    return (torch.cat(l2s), torch.cat(disrupted)) if l2s else (torch.zeros(0), torch.zeros(0))


def attacker_scores(generator, conditions_of, copy: Image.Image, original: Image.Image, resolution: int,
                    faces: int) -> dict[str, dict]:
    """Edit L2 and DSR of the copy against the original, on each attacker's path; `faces`
    the faces protected (a face the detector no longer finds in the copy is counted)."""
    tolerance = max(copy.size) * 0.05
    original_faces = detected_crops(original, resolution)
    scores = {}
    for path, copy_crops, original_crops in (
            (DETECTOR_PATH, detected_crops(copy, resolution), original_faces),
            (CENTRE_CROP, centre_crop(copy, resolution), centre_crop(original, resolution)),
            (JPEG90, detected_crops(reencoded(copy), resolution), original_faces)):
        pairs = pair(copy_crops, original_crops, tolerance)
        l2, disrupted = edit_scores(generator, conditions_of, pairs)
        scores[path] = {"edit_l2": float(l2.mean()) if len(l2) else None,
                        "dsr": float(disrupted.mean()) if len(disrupted) else None, "edits": len(l2),
                        "faces_found": len(pairs) if path != CENTRE_CROP else None}
    scores[DETECTOR_PATH]["faces_protected"] = faces
    return scores
