"""RAW, the robust adversarial watermark (Xu et al., IEEE SPL 2024, DOI
10.1109/LSP.2024.3350983): an adversarial perturbation against face editing that is
made to survive the channel an image travels through (compression, resizing,
filtering, noise).

No public code exists. This re-implementation follows the paper's idea with
expectation over transformation (EOT) inside per-image PGD, and these choices:
- the Disrupting budget and schedule (eps 0.05, steps of 0.01, uniform random start,
  one perturbation per image and target) so that rows compare like for like; 10 steps
  by default (the quick profile uses 40, see `bench/profiles.py`);
- at every step the loss is the mean over `eot_samples` (4) draws of the channel T of
  MSE(G(T(x + d), c), G(x, c)), back-propagated one draw at a time (the same gradient,
  with the memory of one draw's graph);
- the channel: one distortion, its kind drawn uniformly from `transforms`, applied to
  the whole batch, then JPEG, since images shared online are always re-compressed:
  - "identity": none;
  - "resize": down-scaling by a factor drawn from [0.5, 0.9] (bilinear, antialiased)
    and back to the original size;
  - "blur": Gaussian blur, 5x5 kernel, sigma drawn from [0.5, 1.5];
  - "noise": additive Gaussian noise, standard deviation drawn per image from
    [0, 0.04];
  - JPEG: differentiable JPEG (kornia) at a quality drawn per image from
    `jpeg_qualities` (50, 60, 70, 80, 90); an empty list leaves it out;
- all draws come from one generator seeded by the run's seed: deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import MinLen

from bench.contract.params import Count, JpegQuality
from bench.contract.plugins import Defense
from bench.toolkit.attacks import PGDSettings, joint_pgd, per_sample_mse, per_target_pgd
from bench.toolkit.codecs import differentiable_jpeg

TRANSFORMS = ("identity", "resize", "blur", "noise")


class Channel:
    """Random differentiable channel transformations, reproducible from a seed: one
    distortion of `kinds`, then JPEG at one of `jpeg_qualities` (if any)."""

    def __init__(self, kinds: list[str], jpeg_qualities: list[int], seed: int):
        self.kinds, self.jpeg_qualities = list(kinds), torch.tensor(jpeg_qualities, dtype=torch.float32)
        self.rng = torch.Generator().manual_seed(seed)

    def _uniform(self, low: float, high: float, n: int = 1) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.rng)

    def distort(self, x: torch.Tensor) -> torch.Tensor:
        kind = self.kinds[int(torch.randint(len(self.kinds), (1,), generator=self.rng))]
        if kind == "resize":
            size = [max(1, round(s * float(self._uniform(0.5, 0.9)))) for s in x.shape[-2:]]
            small = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if kind == "blur":
            from kornia.filters import gaussian_blur2d

            sigma = float(self._uniform(0.5, 1.5))
            return gaussian_blur2d(x, (5, 5), (sigma, sigma))
        if kind == "noise":
            std = self._uniform(0.0, 0.04, x.size(0)).view(-1, 1, 1, 1)
            return x + (torch.randn(x.shape, generator=self.rng) * std).to(x.device, x.dtype)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.distort(x)
        if len(self.jpeg_qualities) == 0:
            return x
        pick = torch.randint(len(self.jpeg_qualities), (x.size(0),), generator=self.rng)
        return differentiable_jpeg(x.clamp(-1, 1), self.jpeg_qualities[pick])


class RAW(Defense):
    name = "raw"
    version = "1"
    paper = "Xu et al., Robust Adversarial Watermark, IEEE SPL 2024 (re-implementation: no public code)"
    smoke_params = {"steps": 2, "eot_samples": 2}
    per_image_settings = {"variant": "joint"}

    @dataclass
    class Params(PGDSettings):
        eot_samples: Count = 4
        transforms: Annotated[list[Literal[TRANSFORMS]], MinLen(1)] = field(default_factory=lambda: list(TRANSFORMS))
        jpeg_qualities: list[JpegQuality] = field(default_factory=lambda: [50, 60, 70, 80, 90])
        # per_target: one perturbation per (image, target), as the LoRA-patching evaluation
        # does; joint: one per image against the sum over targets (`bench protect`)
        variant: Literal["per_target", "joint"] = "per_target"

    def protect(self, x, generator, conditions, seed):
        p = self.params
        channel = Channel(p.transforms, p.jpeg_qualities, seed + 1)

        def distortion(x_adv, c, y):  # the mean over draws as terms: PGD back-propagates one draw at a time
            return (per_sample_mse(generator(channel(x_adv), c), y) / p.eot_samples for _ in range(p.eot_samples))

        attack = joint_pgd if p.variant == "joint" else per_target_pgd
        return attack(x, generator, conditions, seed, p, distortion)
