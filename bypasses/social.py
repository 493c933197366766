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
import torch.nn.functional as F
from annotated_types import Interval
from PIL import Image

from bench.contract.params import JpegQuality
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import differentiable_jpeg, each_image, encoded, resized


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

    def purify_for_gradients(self, x):
        p = self.params
        if p.gradients == "identity":
            return super().purify_for_gradients(x)
        small = (max(1, round(x.size(-2) * p.scale)), max(1, round(x.size(-1) * p.scale)))
        surrogate = F.interpolate(x, size=small, mode="bicubic", antialias=True, align_corners=False)
        if small[0] % 16 == 0 and small[1] % 16 == 0:
            surrogate = differentiable_jpeg(surrogate, torch.full((x.size(0),), float(p.quality)))
        surrogate = F.interpolate(surrogate, size=x.shape[-2:], mode="bicubic", align_corners=False)
        with torch.no_grad():
            real = self.purify(x)
        return surrogate + (real - surrogate).detach()
