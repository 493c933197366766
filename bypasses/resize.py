"""Down-and-up resizing of the protected image before editing: shrunk to `scale` of its
size with Pillow's antialiased bicubic, stored in 8 bits, and enlarged back to the
generator's size (bicubic), as a thumbnail or a downscaled upload meets an attacker.

A channel transform (no model, no data). The leakage scenario's defender differentiates
it through torch's antialiased bicubic resizing both ways (`gradients=surrogate`,
default; an approximation of Pillow's kernels, without the 8-bit rounding) or as the
identity (`gradients=identity`), the output staying Pillow's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Interval

from bench.contract.plugins import Bypass
from bench.toolkit.codecs import differentiable_resize_roundtrip, resize_roundtrip


class DownUpResize(Bypass):
    name = "resize"
    version = "1"
    paper = "down-and-up resizing (antialiased bicubic), a common channel transform"
    kind = "purifier"
    differentiable = False
    strength = "scale"
    stronger = "lower"

    @dataclass
    class Params:
        scale: Annotated[float, Interval(gt=0, lt=1)] = 0.5  # the intermediate size, a fraction of the side
        gradients: Literal["surrogate", "identity"] = "surrogate"

    def purify(self, x):
        return resize_roundtrip(x, self.params.scale)

    def surrogate(self, x):
        return x if self.params.gradients == "identity" else differentiable_resize_roundtrip(x, self.params.scale)
