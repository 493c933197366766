"""JC: JPEG compression of the protected image before editing (Dziugaite et al., 2016).

Real JPEG re-encoding (libjpeg through Pillow, its default 4:2:0 chroma subsampling)
of the 8-bit image. The paper does
not state the quality; social networks use about 71-95, so it is a parameter.
Not differentiable: the leakage scenario handles it with straight-through gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import io

import numpy as np
import torch
from PIL import Image

from bench.plugins import Bypass


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image of x (N,3,H,W in [-1,1]) as JPEG at `quality` and decode it."""
    decoded = [np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, quality))).convert("RGB"))
               for img in to_uint8(x)]
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return out.to(x.device, x.dtype)


class JPEGCompression(Bypass):
    name = "jpeg"
    version = "1"
    paper = "Dziugaite et al., A study of the effect of JPG compression on adversarial images, 2016"
    kind = "purifier"
    differentiable = False

    @dataclass
    class Params:
        quality: int = 75

    def purify(self, x):
        return jpeg_roundtrip(x, self.params.quality)
