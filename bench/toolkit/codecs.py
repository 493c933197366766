"""Channel transforms, real and differentiable, on images in [-1, 1].

The real ones run on the 8-bit image through Pillow, as a photo meets them online:
JPEG (libjpeg, 4:2:0 chroma subsampling), WebP (libwebp), down-and-up resizing
(Pillow's antialiased bicubic), Gaussian blur and Gaussian noise (rounded to 8 bits).
They score bypasses. The differentiable ones (kornia's JPEG with standard quantisation
tables, torch's antialiased resizing, a true Gaussian kernel) are what defenses and
leakage-scenario defenders optimise through: approximations, named as such where used.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from bench.contract.errors import ConfigError


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def from_uint8(images: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    """N images H x W x 3 uint8 -> N x 3 x H x W in [-1, 1], on `like`'s device and dtype."""
    out = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return out.to(like.device, like.dtype)


def each_image(x: torch.Tensor, transform: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """`transform` applied to each image of x as an 8-bit RGB Pillow image."""
    return from_uint8([np.asarray(transform(Image.fromarray(img)).convert("RGB")) for img in to_uint8(x)], x)


def encoded(image: Image.Image, format: str, **options) -> Image.Image:
    """`image` saved in `format` with `options` and read back (a lossy codec's round trip)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def webp_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Lossy WebP (libwebp through Pillow) at `quality`, encoded and decoded."""
    return each_image(x, lambda img: encoded(img, "WEBP", quality=int(quality)))


def resized(image: Image.Image, scale: float) -> Image.Image:
    """Down to `scale` of its size (Pillow's bicubic, antialiased when shrinking)."""
    small = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(small, Image.Resampling.BICUBIC)


def resize_roundtrip(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Down to `scale` of the size and back up (bicubic both ways), 8 bits in between."""
    size = (x.size(-1), x.size(-2))
    return each_image(x, lambda img: resized(img, scale).resize(size, Image.Resampling.BICUBIC))


def differentiable_resize_roundtrip(x: torch.Tensor, scale: float,
                                    between: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """`resize_roundtrip`'s differentiable approximation: torch's antialiased bicubic both
    ways, no 8-bit rounding; `between` (e.g. a differentiable codec) acts on the small image."""
    small = (max(1, round(x.size(-2) * scale)), max(1, round(x.size(-1) * scale)))
    down = F.interpolate(x, size=small, mode="bicubic", antialias=True, align_corners=False)
    if between is not None:
        down = between(down)
    return F.interpolate(down, size=x.shape[-2:], mode="bicubic", align_corners=False)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Pillow's Gaussian blur of standard deviation `sigma` pixels (its box approximation)."""
    return each_image(x, lambda img: img.filter(ImageFilter.GaussianBlur(sigma)))


def differentiable_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`blur`'s differentiable approximation: a true Gaussian kernel (3 sigma each side),
    edges reflected."""
    from torchvision.transforms.functional import gaussian_blur

    radius = max(1, int(np.ceil(3 * sigma)))
    return gaussian_blur(x, [2 * radius + 1] * 2, [float(sigma)] * 2)


def gaussian_noise(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Gaussian noise of `sigma` 8-bit levels added to the 8-bit image, rounded and
    clipped. The noise of each image is drawn from `seed` and the image's own bytes, so
    it is the same whatever batch the image comes in."""
    def noisy(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(image.tobytes())])
        return np.clip(np.round(image + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8)

    return from_uint8([noisy(img) for img in to_uint8(x)], x)


def jpeg_roundtrip(x: torch.Tensor, quality: int | torch.Tensor) -> torch.Tensor:
    """Encode each image of x (N, 3, H, W in [-1, 1]) as 8-bit JPEG and decode it; `quality`
    is one value for all images or one per image."""
    qualities = torch.as_tensor(quality).expand(x.size(0)).tolist()
    decoded = [np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, q))).convert("RGB"))
               for img, q in zip(to_uint8(x), qualities)]
    return from_uint8(decoded, x)


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
