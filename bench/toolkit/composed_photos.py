"""Photos composed from aligned face crops: each crop scaled up and pasted into a larger,
textured background at a known place, so that what a detector, an alignment or
`bench protect` does with the photo can be checked against where the face really is
(the tests and `benchmarks/` use them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.toolkit.face_align import Quad


@dataclass
class ComposedPhoto:
    image: Image.Image  # RGB
    faces: list[Quad]  # where each pasted crop lies (its aligned square)


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colour field with fine texture (uint8 HxWx3): not flat, so that a copy
    that changes it shows."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (4, 4, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    texture = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    return np.clip(field + texture, 0, 255).astype(np.uint8)


def compose(crops: list[np.ndarray], size: tuple[int, int], scales: list[float], seed: int) -> ComposedPhoto:
    """Paste each crop (uint8 RxRx3) at `scales[i]` times its size into a background of
    `size` (width, height), at random places where no two overlap."""
    rng = np.random.default_rng(seed)
    width, height = size
    canvas = Image.fromarray(background(width, height, seed))
    placed: list[tuple[int, int, int]] = []
    for crop, scale in zip(crops, scales):
        side = round(crop.shape[0] * scale)
        for _ in range(200):
            left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            if all(left + side <= l or l + s <= left or top + side <= t or t + s <= top for l, t, s in placed):
                break
        else:
            raise ValueError(f"no room for a {side} px face in a {width}x{height} photo")
        face = Image.fromarray(crop).resize((side, side), Image.Resampling.LANCZOS)
        canvas.paste(face, (left, top))
        placed.append((left, top, side))
    return ComposedPhoto(canvas, [Quad.square(left, top, side) for left, top, side in placed])


def corner_error(found: Quad, truth: Quad) -> float:
    """Mean distance of the found quad's corners from the true ones, as a share of the
    true side: how far an alignment is from the crop the face was cut as."""
    return float(np.linalg.norm(found.corners() - truth.corners(), axis=1).mean() / truth.side)
