"""JC: JPEG compression of the protected image before editing (Dziugaite et al., 2016).

Real JPEG re-encoding (libjpeg through Pillow, its default 4:2:0 chroma subsampling)
of the 8-bit image. The paper does
not state the quality; social networks use about 71-95, so it is a parameter.
Not differentiable: the leakage scenario handles it with straight-through gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.codecs import jpeg_roundtrip
from bench.plugins import Bypass


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
