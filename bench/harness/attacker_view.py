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

from bench.toolkit.data import to_tensor
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


def cut(photo: Image.Image, quad: Quad, resolution: int) -> Crop:
    """The face along `quad`, cut as the attacker's script cuts it."""
    return Crop(quad.centre, to_tensor(np.asarray(warp_like_attacker(photo, quad, resolution))[None]))


def detected_crops(photo: Image.Image, resolution: int) -> list[Crop]:
    return [cut(photo, Quad.from_landmarks(face.landmarks), resolution) for face in detect_faces(photo)]


def centre_crop(photo: Image.Image, resolution: int) -> list[Crop]:
    return [Crop(np.array(photo.size) / 2, to_tensor(np.asarray(centre_crop_like_attacker(photo, resolution))[None]))]


def reencoded(photo: Image.Image, quality: int = UPLOAD_QUALITY) -> Image.Image:
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


@dataclass
class Original:
    """The original photo as the attacker cuts it (once per photo): its faces on the
    detector's path, and its centre crop."""
    faces: list[Crop]
    centre: list[Crop]


class Edits:
    """A generator's edits of the original's crops, made once: what each path's edits of
    the copy are compared with."""

    def __init__(self, generator, conditions_of, crops: list[Crop]):
        self.generator, self.crops = generator, crops
        self.device = next(generator.parameters()).device
        with torch.no_grad():
            self.made = [[(c, generator(crop.image.to(self.device), c.to(self.device)))
                          for c in conditions_of(crop.image)] for crop in crops]

    def score(self, copies: list[Crop], tolerance: float) -> dict:
        """Edit L2 and DSR over every (face, target): each original crop against the copy's
        crop nearest it, where one lies within `tolerance` pixels."""
        l2s, disrupted, found = [], [], 0
        with torch.no_grad():
            for original, made in zip(self.crops, self.made):
                distances = [np.hypot(*(c.centre - original.centre)) for c in copies]
                if not distances or min(distances) > tolerance:
                    continue
                found += 1
                copy = copies[int(np.argmin(distances))].image.to(self.device)
                for condition, reference in made:
                    edited = self.generator(copy, condition.to(self.device))
                    l2s.append(L2.per_pair(edited, reference).cpu())
                    disrupted.append(DSR.per_pair(edited, reference).cpu())
        l2 = torch.cat(l2s) if l2s else torch.zeros(0)
        return {"edit_l2": float(l2.mean()) if len(l2) else None,
                "dsr": float(torch.cat(disrupted).mean()) if disrupted else None, "edits": len(l2),
                "faces_found": found}


def attacker_scores(generator, conditions_of, copy: Image.Image, original: Original, resolution: int) -> dict[str, dict]:
    """Edit L2 and DSR of the copy against the original, on each attacker's path. A face
    the detector no longer finds in the copy is left out of them (`faces_found` says how
    many it found)."""
    tolerance = max(copy.size) * 0.05
    faces = Edits(generator, conditions_of, original.faces)
    scores = {DETECTOR_PATH: faces.score(detected_crops(copy, resolution), tolerance),
              CENTRE_CROP: Edits(generator, conditions_of, original.centre).score(centre_crop(copy, resolution),
                                                                                  tolerance),
              JPEG90: faces.score(detected_crops(reencoded(copy), resolution), tolerance)}
    scores[CENTRE_CROP]["faces_found"] = None
    scores[DETECTOR_PATH]["faces_protected"] = len(original.faces)
    return scores
