"""Photos as people have them, read and written back pixel for pixel.

A photo is read the way its owner sees it (EXIF orientation applied), kept at its own
size and depth: 8-bit colour or greyscale, 16-bit greyscale, with or without alpha. Its
copy is written as PNG in the same mode; only the pixels a caller changes differ, each
within the budget in the photo's own levels; alpha, when there is one, is kept as it was.
Modes that cannot hold a small change (palette, bilevel, CMYK) are read as 8-bit colour,
and Pillow reads 16-bit colour PNGs at 8 bits: such a photo's copy is 8-bit colour, and
`Photo.notes` says so. HEIC is read where pillow-heif is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.contract.errors import DataError
from bench.toolkit.data import IMAGE_SUFFIXES

PHOTO_SUFFIXES = IMAGE_SUFFIXES | {".tif", ".tiff", ".heic", ".heif"}
try:  # HEIC/HEIF through its Pillow plugin, where installed
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:
    PHOTO_SUFFIXES -= {".heic", ".heif"}
# Pillow refuses larger images as possible decompression bombs; a 100-megapixel photo is a real one
Image.MAX_IMAGE_PIXELS = 200_000_000


@dataclass
class Photo:
    """pixels: H x W x C in the photo's own levels (uint8 or uint16), C = 3 (colour) or
    1 (greyscale); alpha: H x W or None."""
    path: Path
    pixels: np.ndarray
    alpha: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    @property
    def mode(self) -> str:
        """The copy's Pillow mode."""
        if self.pixels.dtype == np.uint16:
            return "I;16"
        return ("L" if self.pixels.shape[2] == 1 else "RGB") + ("A" if self.alpha is not None else "")

    @property
    def top(self) -> int:
        """The largest level: 255 or 65535."""
        return int(np.iinfo(self.pixels.dtype).max)

    def levels(self, eps: float) -> int:
        """The most levels a pixel may move within eps (on [-1, 1])."""
        return math.floor(eps * self.top / 2 + 1e-9)

    def rgb(self) -> Image.Image:
        """The photo as 8-bit colour (what a detector and an attacker's script see)."""
        eight = self.pixels if self.pixels.dtype == np.uint8 else (self.pixels >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(eight, 3, axis=2) if eight.shape[2] == 1 else eight, "RGB")

    def tensor(self, box: tuple[int, int, int, int]) -> torch.Tensor:
        """The box (left, top, right, bottom) as (1, 3, h, w) on [-1, 1]; greyscale repeated."""
        left, top, right, bottom = box
        part = torch.from_numpy(self.pixels[top:bottom, left:right].astype(np.float32))
        part = part.permute(2, 0, 1).unsqueeze(0) / (self.top / 2) - 1
        return part.expand(-1, 3, -1, -1).clone() if part.size(1) == 1 else part

    def with_changes(self, box: tuple[int, int, int, int], changed: torch.Tensor, mask: torch.Tensor,
                     original: Photo, eps: float) -> Photo:
        """This photo with the box's pixels under `mask` (h, w) set from `changed` (1, 3, h,
        w on [-1, 1]; greyscale: its channels' mean), rounded to the photo's levels and kept
        within eps of `original`'s."""
        left, top, right, bottom = box
        values = changed[0].mean(0, keepdim=True) if self.pixels.shape[2] == 1 else changed[0]
        values = ((values.permute(1, 2, 0).double() + 1) * (self.top / 2)).round().numpy()
        was = original.pixels[top:bottom, left:right].astype(np.int64)
        budget = self.levels(eps)
        values = np.clip(values, was - budget, was + budget).clip(0, self.top).astype(self.pixels.dtype)
        pixels = self.pixels.copy()
        keep = mask.numpy()[..., None]
        pixels[top:bottom, left:right] = np.where(keep, values, pixels[top:bottom, left:right])
        return Photo(self.path, pixels, self.alpha, self.notes)

    def image(self) -> Image.Image:
        """The photo as a Pillow image in its own mode (alpha included)."""
        if self.pixels.dtype == np.uint16:
            return Image.fromarray(np.ascontiguousarray(self.pixels[..., 0]))  # mode I;16
        mode = "L" if self.pixels.shape[2] == 1 else "RGB"
        image = Image.fromarray(self.pixels[..., 0] if mode == "L" else self.pixels, mode)
        if self.alpha is not None:
            image.putalpha(Image.fromarray(self.alpha, "L"))
        return image

    def save_png(self, path: Path) -> None:
        self.image().save(path, format="PNG")


def png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" else None


def read_photo(path: str | Path) -> Photo:
    """The photo at `path`, oriented as its EXIF says, in its own depth."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            orientation = opened.getexif().get(0x0112, 1)
            notes = [f"EXIF orientation {orientation} applied"] if orientation != 1 else []
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read photo {path}: {err}") from None
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.int64).clip(0, 65535).astype(np.uint16)[..., None]
        return Photo(path, pixels, None, notes)
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA" if mode != "LA" else "LA")
        alpha = np.asarray(rgba.getchannel("A"))
        image = rgba.convert("L" if mode == "LA" else "RGB")
    elif mode not in ("RGB", "L"):
        notes.append(f"mode {mode} read as 8-bit colour")
        image = image.convert("RGB")
    if png_bit_depth(path) == 16 and image.mode == "RGB":
        notes.append("16-bit colour PNG: Pillow reads it at 8 bits, so the copy is 8-bit")
    pixels = np.asarray(image, dtype=np.uint8)
    return Photo(path, pixels[..., None] if pixels.ndim == 2 else pixels, alpha, notes)
