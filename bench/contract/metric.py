"""The metric contract: a metric's spec (one row of the metric table) and the base
classes a metric implements by kind. The row every number of a run is written as is
`bench.contract.results.Row`.

Kinds tell the harness how to feed a metric:
- "pair": each output against its reference output: one value per (image, target)
  pair; the cell's value is the mean over its pairs;
- "attribute": an attribute classifier asks whether an output shows the attribute
  value its edit asked for (per pair too, and also reported per target);
- "input": each output against the clean input face it was made from (identity): one
  value per (image, target) pair, like "pair";
- "set": a cell's outputs as a set against the set of its references (FID, KID): one
  value per cell, with `n` the size of the set;
- "no-reference": each output alone (BRISQUE); the cell's value is the mean.
The harness's own measures carry specs too, never registered as plugins: "budget"
(protected against clean images) and "mark" (a defensive patch's mark recovery).
A row is made only from a spec (`Row.of`), so its direction and threshold are the
metric's own. All inputs are in [-1, 1]. A pair metric's row also keeps its value per
evaluation image (the mean over the image's targets), from which reports draw
bootstrap intervals over images (`bench.harness.intervals`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, ClassVar

from bench.contract.moved import forwarding

if TYPE_CHECKING:
    import torch

KINDS = ("pair", "input", "attribute", "set", "no-reference")  # what a metric plugin may declare


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    kind: str  # one of KINDS, or "budget" / "mark" for the harness's own measures
    implementation: str
    version: str = "1"
    threshold: float | None = None
    weights: str | None = None  # pretrained weights it needs, if any
    description: str = ""
    stand_in_for: str | None = None  # the metric it replaces where that one cannot run (never its name)


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class Metric:
    spec: ClassVar[MetricSpec]

    @classmethod
    def missing(cls) -> str | None:
        """Why the metric cannot run here (one line naming the missing file), or None."""
        return None

    @classmethod
    def weights_sha256(cls) -> str | None:
        """SHA-256 of the weights it reads (None: it reads none)."""
        return None

    @classmethod
    def info(cls) -> dict:
        return asdict(cls.spec)

    @classmethod
    def identity(cls) -> dict:
        """What determines its values: the spec, its weights' hash and library versions."""
        return {**cls.info(), "weights_sha256": cls.weights_sha256(), "libraries": cls.libraries()}

    @classmethod
    def libraries(cls) -> dict:
        return {}


class PairMetric(Metric):
    @classmethod
    def per_pair(cls, outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) x (M, 3, H, W) -> (M,), on the inputs' device; the second set is the
        reference outputs (kind "pair") or the clean input faces (kind "input")."""
        raise NotImplementedError


class SetMetric(Metric):
    @classmethod
    def per_set(cls, outputs: torch.Tensor, references: torch.Tensor, device: torch.device | str = "cpu") -> float:
        """A set of outputs (M, 3, H, W) against a set of references (M', 3, H, W), on the CPU."""
        raise NotImplementedError


class NoReferenceMetric(Metric):
    @classmethod
    def per_image(cls, outputs: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """(M, 3, H, W) on the CPU -> (M,) on the CPU."""
        raise NotImplementedError


# the row format moved to bench.contract.results; the old path still works, with a warning
__getattr__ = forwarding(__name__, "bench.contract.results", ("Cell", "Row", "ROW_SCHEMA"))
