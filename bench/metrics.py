"""Metrics, declared in one table (like pyiqa's model table).

Pair metrics compare each output with its reference output (the original generator's
output on the clean image) and give one value per (image, target) pair; a cell's
value is the mean over its pairs. Attribute metrics ask the project's attribute
classifier whether an output shows the attribute value its edit asked for (per pair
too, and also reported per target). All inputs are in [-1, 1].
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

from bench.attacks import per_sample_mse
from bench.errors import ConfigError
from bench.figures import to_unit


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str  # "pair" (output vs reference), "attribute" (classifier), "set", "no-reference"
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


# --- attribute metrics: does the output show the attribute the edit asked for? --------
CLASSIFIER_NOTE = ("the project's attribute classifier (bench.classifier, trained on CelebA-HQ "
                   "1-27000 at 64 px; held-out accuracy in its weights file), probability > 0.5")


@functools.lru_cache(maxsize=1)
def attribute_classifier():
    from bench.classifier import AttributeClassifier

    return AttributeClassifier.load()


def attribute_hits(outputs: torch.Tensor, expected: torch.Tensor, target_names: list[str],
                   classifier=None) -> torch.Tensor:
    """outputs (T or 1, N, 3, H, W); expected (T, N) 0/1 values of attribute
    target_names[t] -> (T, N) 1.0 where the classifier (default: the shipped one) sees
    the expected value."""
    classifier = classifier or attribute_classifier()
    missing = [n for n in target_names if n not in classifier.attribute_names]
    if missing:
        raise ConfigError(f"the attribute classifier does not know {', '.join(missing)}")
    probs = classifier.predict(outputs.reshape(-1, *outputs.shape[2:])).view(*outputs.shape[:2], -1)
    hits = []
    for t, name in enumerate(target_names):
        seen = probs[t if probs.size(0) > 1 else 0, :, classifier.attribute_names.index(name)] > 0.5
        hits.append((seen == expected[t].bool()).float())
    return torch.stack(hits)


class EditSuccess(Metric):
    spec = MetricSpec(
        name="edit_success", higher_is_better=True, kind="attribute", implementation=CLASSIFIER_NOTE,
        weights="bench/weights/attribute_classifier_64.safetensors (shipped)",
        description="share of (image, target) outputs in which the classifier sees the target attribute value")
    outputs = "edited"


class EditSuccessControl(Metric):
    spec = MetricSpec(
        name="edit_success_control", higher_is_better=False, kind="attribute", implementation=CLASSIFIER_NOTE,
        weights="bench/weights/attribute_classifier_64.safetensors (shipped)",
        description="the same test on outputs for each image's own attributes (no edit asked): "
                    "how often artefacts alone pass for the edit")
    outputs = "unedited"
