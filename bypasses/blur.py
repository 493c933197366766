"""Gaussian blur of the protected image before editing: Pillow's GaussianBlur (its
three-box approximation of a Gaussian) of standard deviation `sigma` pixels on the
8-bit image.

A channel transform (no model, no data). The leakage scenario's defender differentiates
it through a true Gaussian kernel of the same sigma (`gradients=surrogate`, default; an
approximation of Pillow's boxes) or as the identity (`gradients=identity`), the output
staying Pillow's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bench.contract.params import Positive
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import blur, differentiable_blur


class GaussianBlur(Bypass):
    name = "blur"
    version = "1"
    paper = "Gaussian blur, a common channel transform"
    kind = "purifier"
    differentiable = False
    strength = "sigma"

    @dataclass
    class Params:
        sigma: Positive = 1.0  # pixels
        gradients: Literal["surrogate", "identity"] = "surrogate"

    def purify(self, x):
        return blur(x, self.params.sigma)

    def surrogate(self, x):
        return x if self.params.gradients == "identity" else differentiable_blur(x, self.params.sigma)
