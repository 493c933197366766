"""WebP compression of the protected image before editing, as image hosts re-encode
uploads: lossy WebP (libwebp through Pillow) of the 8-bit image at `quality`.

A channel transform (no model, no data). Not differentiable: the leakage scenario's
defender differentiates it as the identity (BPDA), the output staying the real WebP.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.contract.params import JpegQuality
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import webp_roundtrip


class WebPCompression(Bypass):
    name = "webp"
    version = "1"
    paper = "WebP (Google, 2010): lossy re-encoding as image hosts apply it"
    url = "https://developers.google.com/speed/webp"
    kind = "purifier"
    differentiable = False
    strength = "quality"
    stronger = "lower"

    @dataclass
    class Params:
        quality: JpegQuality = 75  # libwebp's quality, 1-100 (Pillow's default 80)

    def purify(self, x):
        return webp_roundtrip(x, self.params.quality)
