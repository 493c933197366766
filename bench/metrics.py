"""Metrics, declared in one table (like pyiqa's model table).

Pair metrics compare each output with its reference output (the original generator's
output on the clean image) and give one value per (image, target) pair; a cell's
value is the mean over its pairs. All inputs are in [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from bench.attacks import per_sample_mse
from bench.figures import to_unit


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str  # "pair" (output vs reference), "set" (distributions), "no-reference"
    implementation: str
    version: str = "1"
    threshold: float | None = None
    weights: str | None = None  # pretrained weights it needs, if any
    description: str = ""


class Metric:
    spec: ClassVar[MetricSpec]

    @classmethod
    def per_pair(cls, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def info(cls) -> dict:
        return asdict(cls.spec)


class L2(Metric):
    spec = MetricSpec(
        name="l2", higher_is_better=False, kind="pair",
        implementation="bench.metrics: mean squared error over C*H*W on [-1,1]",
        description="MSE between the output and the original generator's output on the clean image")

    @classmethod
    def per_pair(cls, outputs, references):
        return per_sample_mse(outputs, references)


class SSIM(Metric):
    spec = MetricSpec(
        name="ssim", higher_is_better=True, kind="pair",
        implementation="piq.ssim (Gaussian 11x11, sigma 1.5, data_range 1) on images mapped to [0,1] and clamped",
        description="structural similarity of the output to the reference output")

    @classmethod
    def per_pair(cls, outputs, references):
        import piq

        return piq.ssim(to_unit(outputs.float()), to_unit(references.float()), data_range=1.0,
                        reduction="none")


class DSR(Metric):
    spec = MetricSpec(
        name="dsr", higher_is_better=False, kind="pair", threshold=0.05,
        implementation="bench.metrics: fraction of pairs with L2 > threshold (strict)",
        description="defense success rate: share of (image, target) pairs the defense disrupted")

    @classmethod
    def per_pair(cls, outputs, references):
        return (L2.per_pair(outputs, references) > cls.spec.threshold).float()
