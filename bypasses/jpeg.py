"""JC: JPEG compression of the protected image before editing (Dziugaite et al., 2016).

Real JPEG re-encoding (libjpeg through Pillow, its default 4:2:0 chroma subsampling)
of the 8-bit image. The paper does
not state the quality; social networks use about 71-95, so it is a parameter.
Not differentiable: the leakage scenario's defender differentiates it BPDA-style,
through kornia's differentiable JPEG at the same quality (`gradients=surrogate`,
default) or as the identity (`gradients=identity`), the output staying the real JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.contract.params import JpegQuality
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import differentiable_jpeg, jpeg_roundtrip


class JPEGCompression(Bypass):
    name = "jpeg"
    version = "1"
    paper = "Dziugaite et al., A study of the effect of JPG compression on adversarial images, 2016"
    kind = "purifier"
    differentiable = False
    strength = "quality"
    stronger = "lower"

    @dataclass
    class Params:
        quality: JpegQuality = 75
        # the leakage scenario's gradient through the codec: a differentiable JPEG, or the identity's
        gradients: Literal["surrogate", "identity"] = "surrogate"

    def purify(self, x):
        return jpeg_roundtrip(x, self.params.quality)

    def surrogate(self, x):
        if self.params.gradients == "identity":
            return x
        return differentiable_jpeg(x, torch.full((x.size(0),), float(self.params.quality)))
