"""What a defense's protected images really are: their distance to the clean images.

A defense declares its budget (`eps`); the harness measures it on every protected
image instead of trusting the declaration, and scores the protection's visible cost
(PSNR and SSIM of protected against clean). The leaderboard flags an entry whose
measured L-inf exceeds the protocol's eps and does not rank it.

Rows carry reference CLEAN_INPUT so that they never mix with the rows scored
against the original generator's outputs. Values are on [-1, 1] float tensors, before
any 8-bit rounding (rounding alone may move a pixel by up to 1/255 on [0, 1]).
"""

from __future__ import annotations

import piq
import torch

from bench.contract.metric import MetricSpec
from bench.contract.results import BUDGET_MEASURES
from bench.toolkit.figures import to_unit
from bench.toolkit.metrics import SSIM


def budget_spec(name: str, higher_is_better: bool, description: str) -> MetricSpec:
    return MetricSpec(name=name, higher_is_better=higher_is_better, kind="budget",
                      implementation="bench.toolkit.budget", description=description)


# each measure's spec (how it aggregates over the protected images: BUDGET_MEASURES)
SPECS = {
    "linf": budget_spec("linf", False, "largest absolute change of any pixel and channel (on [-1, 1])"),
    "l2_norm": budget_spec("l2_norm", False, "Euclidean norm of the perturbation over C*H*W (on [-1, 1]), per image"),
    "psnr": budget_spec("psnr", True, "PSNR of protected against clean, in dB (piq, images mapped to [0, 1])"),
    "ssim": budget_spec("ssim", True, "SSIM of protected against clean (piq, Gaussian 11x11)"),
}


def measure(protected: torch.Tensor, clean: torch.Tensor) -> dict[str, tuple[float, int]]:
    """Protected images (T, N, 3, H, W) against their clean images (N, 3, H, W):
    name -> (value over all T*N protected images, T*N)."""

    x = clean.unsqueeze(0).expand_as(protected).reshape(-1, *clean.shape[1:]).float()
    p = protected.reshape(-1, *clean.shape[1:]).float()
    delta = (p - x).flatten(1)
    per_image = {
        "linf": delta.abs().amax(1),
        "l2_norm": delta.norm(dim=1),
        "psnr": piq.psnr(to_unit(p), to_unit(x), data_range=1.0, reduction="none"),
        "ssim": SSIM.per_pair(p, x),
    }
    reduce = {"max": torch.max, "mean": torch.mean}
    return {name: (float(reduce[BUDGET_MEASURES[name]](values)), values.numel()) for name, values in per_image.items()}
