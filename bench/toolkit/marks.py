"""The visible warning mark of defensive LoRA patching, rendered by the project.

A red warning triangle with white letters (default "AI") in the bottom-left corner,
covering about `area` of the image (the paper: about 5% of the pixels). It is drawn
four times larger and downsampled with antialiasing, so it stays legible at 64 px.
The mark w has values in [0, 1]; as in the public code, the defensive target is
y_w = clamp(y + strength * w, -1, 1) on [-1, 1] (strength 2: marked pixels saturate).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from bench.contract.metric import MetricSpec

SUPERSAMPLE = 4
RED, WHITE = (255, 0, 0), (255, 255, 255)
HALO = 0.1


@functools.lru_cache(maxsize=16)
def _render(size: int, text: str, area: float, margin: float) -> np.ndarray:
    big = size * SUPERSAMPLE
    side = math.sqrt(4 * area * big * big / math.sqrt(3))  # equilateral triangle of that area
    height = side * math.sqrt(3) / 2
    left, bottom = margin * big, big - margin * big
    canvas = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(canvas)
    draw.polygon([(left, bottom), (left + side, bottom), (left + side / 2, bottom - height)], fill=RED)
    font = ImageFont.load_default(size=max(1, int(height * 0.45)))
    centre = (left + side / 2, bottom - height * 0.33)
    draw.text(centre, text, fill=WHITE, font=font, anchor="mm")
    small = np.asarray(canvas.resize((size, size), Image.LANCZOS), dtype=np.float32) / 255.0
    return np.where(small.max(-1, keepdims=True) < HALO, 0.0, small)  # drop the resampling's faint ringing


def warning_mark(size: int, text: str = "AI", area: float = 0.05, margin: float = 0.03) -> torch.Tensor:
    """The mark w: (3, size, size) in [0, 1], zero outside the triangle."""
    return torch.from_numpy(_render(size, text, area, margin).copy()).permute(2, 0, 1)


def mark_region(mark: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the pixels the mark touches (antialiased edges included), so that the
    marked target equals the original fake everywhere else."""
    return mark.amax(0) > 0


def apply_mark(y: torch.Tensor, mark: torch.Tensor, strength: float = 2.0) -> torch.Tensor:
    """The defensive target y_w = clamp(y + strength * w, -1, 1) for outputs y (..., 3, H, W)."""
    return (y + strength * mark.to(y.device, y.dtype)).clamp(-1, 1)


def mark_recovery(outputs, marked, clean, region) -> torch.Tensor:
    """How much of the mark each output (T, N, ...) carries, per image: 1 - the squared
    error to the marked fake over that of the unmarked fake, inside the mark region
    (1: the mark exactly, 0: no closer to it than the original fake, below 0: further)."""
    inside = region.expand_as(marked).float()
    missed = ((outputs - marked) ** 2 * inside).flatten(-3).sum(-1)
    absent = ((clean - marked) ** 2 * inside).flatten(-3).sum(-1).clamp_min(1e-12)
    return 1 - missed / absent


MARK_RECOVERY = MetricSpec(
    name="mark_recovery", higher_is_better=True, kind="mark", implementation="bench.toolkit.marks.mark_recovery",
    description="how much of the warning mark a defensive patch's output carries (1: all of it, 0: none)")
