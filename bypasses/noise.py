"""Gaussian noise on the protected image before editing: noise of standard deviation
`sigma` 8-bit levels added to the 8-bit image, rounded and clipped to 0-255.

A channel transform (no model, no data). The noise of an image depends on `seed` and on
the image's own pixels, so a cell's outputs do not depend on how images are batched.
The leakage scenario's defender differentiates it as the identity (its derivative,
but for rounding and clipping).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.contract.params import Positive, Seed
from bench.contract.plugins import Bypass
from bench.toolkit.codecs import gaussian_noise


class GaussianNoise(Bypass):
    name = "noise"
    version = "1"
    paper = "additive Gaussian noise, a common channel transform"
    kind = "purifier"
    differentiable = False
    strength = "sigma"

    @dataclass
    class Params:
        sigma: Positive = 8.0  # 8-bit levels (of 255)
        seed: Seed = 0

    def purify(self, x):
        return gaussian_noise(x, self.params.sigma, self.params.seed)
