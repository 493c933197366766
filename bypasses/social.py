"""A social network's upload chain on the protected image before editing: shrunk to
`scale` of its size (Pillow's antialiased bicubic), re-encoded as JPEG at `quality` with
4:2:0 chroma subsampling, and enlarged back to the generator's size by the attacker.

A channel transform (no model, no data). The leakage scenario's defender differentiates
it through torch's antialiased resizing and kornia's differentiable JPEG at the same
quality on the shrunk image (`gradients=surrogate`, default; needs a shrunk side that is
a multiple of 16, else the JPEG step passes gradients as the identity) or as the
identity (`gradients=identity`); the output stays the real chain's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from annotated_types import Interval
from PIL import Image

from bench.contract.params import JpegQuality
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import differentiable_jpeg, differentiable_resize_roundtrip, each_image, encoded, resized


class SocialMediaChain(Bypass):
    name = "social"
    version = "1"
    paper = "a social network's upload chain: downscaling, then JPEG with 4:2:0 chroma subsampling"
    kind = "purifier"
    differentiable = False
    strength = "scale"
    stronger = "lower"

    @dataclass
    class Params:
        scale: Annotated[float, Interval(gt=0, le=1)] = 0.75  # the uploaded size, a fraction of the side
        quality: JpegQuality = 85
        gradients: Literal["surrogate", "identity"] = "surrogate"

    def purify(self, x):
        p, size = self.params, (x.size(-1), x.size(-2))
        return each_image(x, lambda img: encoded(resized(img, p.scale), "JPEG", quality=p.quality, subsampling="4:2:0")
                          .resize(size, Image.Resampling.BICUBIC))

    def surrogate(self, x):
        p = self.params
        if p.gradients == "identity":
            return x
        return differentiable_resize_roundtrip(x, p.scale, between=self.differentiable_upload_jpeg)

    def differentiable_upload_jpeg(self, small):
        """The chain's JPEG, differentiably, on the shrunk image (the identity where its
        sides are not multiples of 16)."""
        if small.size(-1) % 16 or small.size(-2) % 16:
            return small
        return differentiable_jpeg(small, torch.full((small.size(0),), float(self.params.quality)))
