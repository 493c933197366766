"""Aligning a face the way CelebA-HQ's faces were aligned, differentiably or as an attacker would.

CelebA-HQ (Karras et al. 2018, the dataset tool of progressive GAN; FFHQ uses the same
rule) cut each face out of its photo along a square "quad" computed from five
landmarks (the two eyes, the nose, the two mouth corners): its centre sits a tenth of
the way from the eyes' midpoint to the mouth's, its side is the larger of 4x the eye
distance and 3.6x the eye-to-mouth distance, and it is turned with the face. The
generators here learned from those crops, so a face in a photo is cut the same way.

Two ways to cut it: `warp_differentiable` (torch: bilinear sampling at the quad's own
scale, then an antialiased resize, so gradients reach the photo's pixels) and
`warp_like_attacker` (Pillow: a QUAD transform then an antialiased resize, what an
attacker's script does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# the largest side at which the differentiable path samples the quad before its antialiased
# resize: sampling a larger face straight at this side aliases little (at most ~2x per axis)
MAX_SAMPLING_SIDE = 1024


def rot90(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


@dataclass(frozen=True)
class Quad:
    """A face's square in photo coordinates (pixels, x right, y down; pixel k spans [k, k+1]):
    its centre, and the half-side vectors along the crop's x and y axes."""
    centre: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> Quad:
        """CelebA-HQ's quad from five landmarks (left eye, right eye, nose, left and right
        mouth corner, as seen in the image), each (x, y) in pixels."""
        lm = np.asarray(landmarks, dtype=np.float64)
        eye_avg, mouth_avg = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
        eye_to_eye, eye_to_mouth = lm[1] - lm[0], mouth_avg - eye_avg
        x = eye_to_eye - rot90(eye_to_mouth)
        x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
        return cls(eye_avg + eye_to_mouth * 0.1, x, rot90(x))

    @classmethod
    def square(cls, left: float, top: float, side: float) -> Quad:
        """An upright square (a centre crop, or where a known crop was pasted)."""
        half = side / 2
        return cls(np.array([left + half, top + half]), np.array([half, 0.0]), np.array([0.0, half]))

    @property
    def side(self) -> float:
        return float(2 * np.hypot(*self.x))

    def corners(self) -> np.ndarray:
        """Top-left, bottom-left, bottom-right, top-right (Pillow's QUAD order)."""
        c, x, y = self.centre, self.x, self.y
        return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Quad:
        return Quad(self.centre + np.array([dx, dy]), self.x * scale, self.y * scale)

    def jittered(self, fraction: float) -> list[Quad]:
        """This quad and four near it: shifted by `fraction` of its side along each
        diagonal and scaled by 1 -/+ fraction in turn, how far another run of the detector
        on a changed photo moves it (bench protect optimises through all five)."""
        if not fraction:
            return [self]
        step = fraction * self.side
        return [self] + [self.shifted(sx * step, sy * step, 1 + scale * fraction)
                         for sx, sy, scale in ((-1, -1, -1), (1, -1, 1), (-1, 1, 1), (1, 1, -1))]


def bounds(quads: list[Quad], width: int, height: int, margin: int = 2, multiple: int = 16) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) that holds every pixel the quads read,
    within the photo, grown where the photo allows to sides that are multiples of
    `multiple` (what block codecs such as a differentiable JPEG in a defense need)."""
    corners = np.concatenate([q.corners() for q in quads])
    low = np.maximum(np.floor(corners.min(0)).astype(int) - margin, 0)
    high = np.minimum(np.ceil(corners.max(0)).astype(int) + margin, (width, height))
    for axis, limit in enumerate((width, height)):
        side = min(-(-(high[axis] - low[axis]) // multiple) * multiple, limit)
        high[axis] = min(low[axis] + side, limit)
        low[axis] = high[axis] - side
    return int(low[0]), int(low[1]), int(high[0]), int(high[1])


def sampling_side(quad: Quad, resolution: int) -> int:
    return int(np.clip(round(quad.side), resolution, MAX_SAMPLING_SIDE))


def sampling_grid(quad: Quad, origin: tuple[int, int], size: tuple[int, int], resolution: int) -> torch.Tensor:
    """Where the quad's pixels lie in a box of the photo of `size` (h, w) whose top-left
    pixel is `origin` (x, y): (1, S, S, 2) on grid_sample's [-1, 1], S the sampling side."""
    side = sampling_side(quad, resolution)
    h, w = size
    steps = (torch.arange(side, dtype=torch.float64) + 0.5) / side * 2 - 1  # pixel centres on [-1, 1]
    v, u = torch.meshgrid(steps, steps, indexing="ij")
    centre = torch.from_numpy(quad.centre - np.asarray(origin, dtype=np.float64))
    qx, qy = torch.from_numpy(quad.x), torch.from_numpy(quad.y)
    px = centre[0] + u * qx[0] + v * qy[0]
    py = centre[1] + u * qx[1] + v * qy[1]
    return torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1).unsqueeze(0)


def cut_along(patch: torch.Tensor, grid: torch.Tensor, resolution: int) -> torch.Tensor:
    """The crop (N, C, R, R) `grid` (sampling_grid) points at in `patch` (N, C, h, w):
    sampled bilinearly (outside the photo: zeros, i.e. mid-grey on [-1, 1]), then resized
    to R with antialiasing."""
    grid = grid.to(patch.dtype).to(patch.device).expand(patch.size(0), -1, -1, -1)
    sampled = F.grid_sample(patch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if sampled.size(-1) == resolution:
        return sampled
    return F.interpolate(sampled, size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False)


def warp_differentiable(patch: torch.Tensor, quad: Quad, origin: tuple[int, int], resolution: int) -> torch.Tensor:
    """The aligned crop (N, C, R, R) of `patch` (N, C, h, w), a box of the photo whose
    top-left pixel is `origin` (x, y): sampled at the quad's own scale, then resized to R."""
    return cut_along(patch, sampling_grid(quad, origin, tuple(patch.shape[-2:]), resolution), resolution)


def warp_like_attacker(photo: Image.Image, quad: Quad, resolution: int) -> Image.Image:
    """The aligned crop as an attacker's script cuts it with Pillow: the quad, sampled
    bilinearly at its own scale, then a Lanczos (antialiased) resize to R."""
    side = sampling_side(quad, resolution)
    crop = photo.convert("RGB").transform((side, side), Image.Transform.QUAD, tuple(quad.corners().ravel()),
                                          Image.Resampling.BILINEAR)
    return crop if side == resolution else crop.resize((resolution, resolution), Image.Resampling.LANCZOS)


def centre_crop_like_attacker(photo: Image.Image, resolution: int) -> Image.Image:
    """No detector: the photo's central square, resized with Lanczos (antialiased)."""
    w, h = photo.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = photo.convert("RGB").crop((left, top, left + side, top + side))
    return crop.resize((resolution, resolution), Image.Resampling.LANCZOS)
