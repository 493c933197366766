"""DF-RAP (Qu et al., IEEE TIFS 2024): a robust adversarial perturbation for real-world
social-network scenarios.

Per-image PGD as in Disrupting (eps 0.05, 10 steps of 0.01, random start, one
perturbation per image and target), but the perturbed image passes through a
differentiable model C of the network's compression before the generator, so what is
optimised is the perturbation that survives compression: MSE(G(C(x + d), c), G(x, c)).

Compression models (`compressor`):
- "jpeg" (default): differentiable JPEG (kornia, standard quantisation tables) with a
  quality drawn anew for every image at every step. The qualities follow the SPEC's
  description of the OSN-transmission data: support {71..92, 100}, most mass on 92, 80,
  85 and 100. The weights (`QUALITY_WEIGHTS`) are this implementation's choice: 0.2 on
  92, 0.15 each on 80, 85 and 100, the remaining 0.35 spread evenly over the others.
- "learned": a small residual U-Net (the shape of the public code's ComGAN generator)
  that the fit step trains to imitate real JPEG at qualities drawn from the same
  distribution. The public ComGAN learned from images sent through real social
  networks, which are not available offline; imitating real JPEG is the stated
  substitute. Fitted once on the defense split, independent of the generators.
- "both": the public code's mix, balance * G(C_jpeg(x)) + (1 - balance) * G(C_learned(x)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import MinLen
from torch import nn
from tqdm import tqdm

from bench.contract.errors import ConfigError
from bench.contract.params import Count, Fraction, JpegQuality, NonNegative, Positive
from bench.contract.plugins import Defense
from bench.toolkit.attacks import PGDSettings, device_of, joint_pgd, per_sample_mse, per_target_pgd
from bench.toolkit.codecs import QualitySampler, differentiable_jpeg, jpeg_roundtrip
from bench.toolkit.training import recent_mean

QUALITIES = list(range(71, 93)) + [100]
_HEAVY = {92: 0.2, 80: 0.15, 85: 0.15, 100: 0.15}
QUALITY_WEIGHTS = [_HEAVY.get(q, 0.35 / (len(QUALITIES) - len(_HEAVY))) for q in QUALITIES]
COMPRESSORS = ("jpeg", "learned", "both")


class CompressionSurrogate(nn.Module):
    """Residual U-Net: x + f(x), two down- and two up-sampling stages with skips."""

    def __init__(self, width: int = 16):
        super().__init__()

        def block(n_in, n_out, stride=1):
            return nn.Sequential(nn.Conv2d(n_in, n_out, 3, stride, 1), nn.LeakyReLU(0.2))

        self.inc = block(3, width)
        self.down1, self.down2 = block(width, 2 * width, 2), block(2 * width, 4 * width, 2)
        self.up2, self.up1 = block(6 * width, 2 * width), block(3 * width, width)
        self.out = nn.Conv2d(width, 3, 3, 1, 1)

    def forward(self, x):
        e0 = self.inc(x)
        e1 = self.down1(e0)
        e2 = self.down2(e1)
        d1 = self.up2(torch.cat([F.interpolate(e2, size=e1.shape[-2:], mode="bilinear"), e1], 1))
        d0 = self.up1(torch.cat([F.interpolate(d1, size=e0.shape[-2:], mode="bilinear"), e0], 1))
        return (x + self.out(d0)).clamp(-1, 1)


class DFRAP(Defense):
    name = "dfrap"
    version = "1"
    paper = "Qu et al., DF-RAP, IEEE TIFS 2024"
    smoke_params = {"steps": 2, "surrogate_iters": 2}
    per_image_settings = {"variant": "joint"}
    fit_length = "surrogate_iters"

    @dataclass
    class Params(PGDSettings):
        qualities: Annotated[list[JpegQuality], MinLen(1)] = field(default_factory=lambda: list(QUALITIES))
        quality_weights: Annotated[list[NonNegative], MinLen(1)] = field(default_factory=lambda: list(QUALITY_WEIGHTS))
        compressor: Literal[COMPRESSORS] = "jpeg"
        balance: Fraction = 0.5  # weight of the JPEG branch when compressor = "both"
        surrogate_width: Count = 16
        surrogate_iters: Count = 400
        surrogate_batch: Count = 16
        surrogate_lr: Positive = 1e-3
        # per_target: one perturbation per (image, target), as the LoRA-patching evaluation
        # does; joint: one per image against the sum over targets (`bench protect`)
        variant: Literal["per_target", "joint"] = "per_target"

    def __init__(self, **params):
        super().__init__(**params)
        QualitySampler(self.params.qualities, self.params.quality_weights, 0)  # validates them
        self.surrogate: CompressionSurrogate | None = None

    # --- the learned compressor --------------------------------------------------------
    def fit_scope(self):
        return None if self.params.compressor == "jpeg" else "images"

    def fit(self, images, targets, seed, device):
        """Train the compression surrogate to reproduce real JPEG of the fitting images."""
        p = self.params
        torch.manual_seed(seed)
        surrogate = CompressionSurrogate(p.surrogate_width).to(device)
        optimiser = torch.optim.Adam(surrogate.parameters(), lr=p.surrogate_lr)
        sample_quality = QualitySampler(p.qualities, p.quality_weights, seed)
        order = torch.Generator().manual_seed(seed)
        curve = []
        for _ in tqdm(range(p.surrogate_iters), desc="dfrap: fit the JPEG surrogate", unit="it", leave=False):
            x = images[torch.randint(images.size(0), (p.surrogate_batch,), generator=order)]
            target = jpeg_roundtrip(x, sample_quality(x.size(0)))
            loss = F.mse_loss(surrogate(x.to(device)), target.to(device))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            curve.append(float(loss.detach()))
        self.surrogate = surrogate.cpu().eval().requires_grad_(False)
        return dict(self.surrogate.state_dict()), {"surrogate_mse_to_jpeg": recent_mean(curve),
                                                   "surrogate_first_mse": curve[0] if curve else None}

    def load_state(self, state, info):
        self.surrogate = CompressionSurrogate(self.params.surrogate_width)
        self.surrogate.load_state_dict(state)
        self.surrogate.eval().requires_grad_(False)

    # --- protection -----------------------------------------------------------------------
    def protect(self, x, generator, conditions, seed):
        p = self.params
        if p.compressor != "jpeg" and self.surrogate is None:
            raise ConfigError("dfrap with a learned compressor has not been fitted")
        sample_quality = QualitySampler(p.qualities, p.quality_weights, seed + 1)
        surrogate = None if self.surrogate is None else self.surrogate.to(device_of(generator))

        def distortion(x_adv, c, y):
            branches = []
            if p.compressor in ("jpeg", "both"):
                branches.append(generator(differentiable_jpeg(x_adv, sample_quality(x_adv.size(0))), c))
            if p.compressor in ("learned", "both"):
                branches.append(generator(surrogate(x_adv), c))
            output = branches[0] if len(branches) == 1 else p.balance * branches[0] + (1 - p.balance) * branches[1]
            return per_sample_mse(output, y)

        attack = joint_pgd if p.variant == "joint" else per_target_pgd
        return attack(x, generator, conditions, seed, p, distortion)
