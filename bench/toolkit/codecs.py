"""JPEG, real and differentiable, on images in [-1, 1].

Real JPEG (libjpeg through Pillow, its default 4:2:0 chroma subsampling) is what a
social network or an attacker applies; differentiable JPEG (kornia, standard
quantisation tables) is what defenses optimise through.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from bench.contract.errors import ConfigError


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def jpeg_roundtrip(x: torch.Tensor, quality: int | torch.Tensor) -> torch.Tensor:
    """Encode each image of x (N, 3, H, W in [-1, 1]) as 8-bit JPEG and decode it; `quality`
    is one value for all images or one per image."""
    qualities = torch.as_tensor(quality).expand(x.size(0)).tolist()
    decoded = [np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, q))).convert("RGB"))
               for img, q in zip(to_uint8(x), qualities)]
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return out.to(x.device, x.dtype)


def differentiable_jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG round trip with gradients: x (N, 3, H, W) in [-1, 1], quality (N,) in 1..100.
    H and W must be multiples of 16 (JPEG's chroma-subsampled blocks)."""
    from kornia.enhance import jpeg_codec_differentiable

    if x.shape[-1] % 16 or x.shape[-2] % 16:
        raise ConfigError(f"differentiable JPEG needs sizes that are multiples of 16, got {tuple(x.shape[-2:])}")
    with torch.autocast(x.device.type, enabled=False):  # its quantisation needs float32, even in bf16 attacks
        out = jpeg_codec_differentiable((x.float() + 1) / 2, quality.to(x.device, torch.float32))
    return (out * 2 - 1).to(x.dtype)


class QualitySampler:
    """Draws JPEG qualities from a discrete distribution, reproducibly from a seed."""

    def __init__(self, qualities: list[int], weights: list[float], seed: int):
        if len(qualities) != len(weights) or not qualities or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError("JPEG qualities and weights must be non-empty lists of the same length, weights >= 0")
        if min(qualities) < 1 or max(qualities) > 100:
            raise ConfigError(f"JPEG qualities must lie in 1..100, got {qualities}")
        self.qualities = torch.tensor(qualities, dtype=torch.float32)
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.rng = torch.Generator().manual_seed(seed)

    def __call__(self, n: int) -> torch.Tensor:
        return self.qualities[torch.multinomial(self.weights, n, replacement=True, generator=self.rng)]
