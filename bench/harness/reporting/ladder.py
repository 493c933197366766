"""The attacker's cost ladder: what it takes to break each defense.

Each bypass declares what it costs the attacker (its rung: 0 nothing, 1 a channel
transform, 2 a pretrained purifier, 3 fine-tuning; run.json `bypass_costs`) and each fit
records what it spent (faces, seconds; costs.jsonl). On one generator the board's
bypasses are ordered by rung, then fine-tuning faces, then fit seconds: the ladder.
Bypasses of equal cost (every channel transform: no model, no data, no fit) share one
step. A defense is broken on a generator at the cheapest step whose bypass leaves it a
DSR at most the protocol's `break_threshold` (no bypass at all is step 0: a defense that
does not disrupt the generator is broken before any attack); it is unbroken there if no
bypass of the ladder breaks it, and then sits one step past the top.

Its break cost is the mean of those step positions over the generators. A mean, not the
cheapest break over generators: a generator no defense disrupts (where every defense is
broken at step 0) then adds the same to every defense and leaves their order as the
other generators make it, where a minimum would flatten every defense to 0. The
position counts steps, not seconds, so that it does not depend on the machine the fits
ran on (seconds only order fits of equal rung and faces).

Each break cost carries a 95% bootstrap interval: with the evaluation images resampled
(the same draws for every cell, bench.harness.intervals), every cell's DSR is
recomputed, the cheapest break found again and the mean position taken; two defenses'
break costs differ where the interval of their paired difference excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.contract.errors import BenchError
from bench.contract.results import FINE_TUNING, RUNGS, RunRecord


@dataclass(frozen=True)
class Rung:
    """One bypass on one generator's ladder: what it cost the attacker there."""
    bypass: str
    rung: int
    faces: int | None  # fine-tuning faces the fit used (0: no fit)
    fit_seconds: float | None  # the fit's measured seconds (None: no fit)

    @property
    def order(self) -> tuple:
        return (self.rung, self.faces or 0, self.fit_seconds or 0.0)

    @property
    def same_cost(self) -> tuple:
        """Bypasses with equal values share a step (fit seconds apart: a measurement)."""
        return (self.rung, self.faces or 0) if self.rung < FINE_TUNING else self.order

    def as_dict(self) -> dict:
        return {"bypass": self.bypass, "rung": self.rung, "rung_name": RUNGS.get(self.rung, "?"),
                "faces": self.faces, "fit_seconds": None if self.fit_seconds is None else round(self.fit_seconds, 1)}


@dataclass
class Ladder:
    """One generator's bypasses ordered by cost, each with its step position."""
    rungs: list[Rung]
    positions: list[int]

    @property
    def top(self) -> int:
        """The position of 'unbroken': one past the last step."""
        return (max(self.positions) + 1) if self.positions else 0

    @classmethod
    def of(cls, rungs: list[Rung]) -> Ladder:
        rungs = sorted(rungs, key=lambda r: (*r.order, r.bypass))
        positions: list[int] = []
        for i, r in enumerate(rungs):
            same_step = i > 0 and r.same_cost == rungs[i - 1].same_cost
            positions.append(positions[-1] + (0 if same_step else 1) if positions else 0)
        return cls(rungs, positions)


@dataclass
class Break:
    """Where a defense breaks on one generator (`rung` None: unbroken by every bypass)."""
    position: int
    rung: Rung | None
    dsr: float | None
    interval: tuple[float, float] | None

    def as_dict(self) -> dict:
        cost = self.rung.as_dict() if self.rung else {"bypass": None, "rung": None, "rung_name": "unbroken",
                                                       "faces": None, "fit_seconds": None}
        return {**cost, "position": self.position, "dsr": self.dsr,
                "dsr_interval": None if self.interval is None else list(self.interval)}


def cheapest_break(ladder: Ladder, dsr: dict[str, float], threshold: float) -> Break:
    """The first step of `ladder` whose bypass leaves a DSR (`dsr`: bypass -> value) at most
    `threshold`; the ladder's top where none does."""
    for r, position in zip(ladder.rungs, ladder.positions):
        if r.bypass in dsr and dsr[r.bypass] is not None and dsr[r.bypass] <= threshold:
            return Break(position, r, dsr[r.bypass], None)
    return Break(ladder.top, None, None, None)


def break_replicates(ladder: Ladder, replicates: dict[str, np.ndarray | None], threshold: float) -> np.ndarray | None:
    """Bootstrap replicates of the break position: per replicate, the first step whose
    bypass's replicate DSR is at most `threshold` (None where a cell lacks per-image values)."""
    if not ladder.rungs or any(replicates.get(r.bypass) is None for r in ladder.rungs):
        return None
    broken = np.stack([replicates[r.bypass] <= threshold for r in ladder.rungs])  # (steps, R)
    positions = np.asarray(ladder.positions)[broken.argmax(axis=0)]
    return np.where(broken.any(axis=0), positions, ladder.top).astype(np.float64)


def declared_costs(record: RunRecord) -> dict[str, dict]:
    """label -> the cost each bypass of a run declared (run.json `bypass_costs`); for runs
    made before bypasses declared one, what the installed plugin with the recorded
    parameters declares (this imports torch), and nothing for a plugin no longer installed."""
    if record.bypass_costs:
        return record.bypass_costs
    from bench.contract.registry import registry

    costs = {}
    for label, identity in (record.plugins.get("bypasses") or {}).items():
        try:
            costs[label] = registry("bypasses").get(identity["name"])(**identity.get("params", {})).attack_cost()
        except BenchError:
            continue
    return costs


def measured_fit(record: RunRecord, costs: list[dict], generator: str, label: str) -> tuple[int | None, float | None]:
    """(faces, seconds) of a bypass's fit for `generator` from costs.jsonl's lines, else
    from run.json's fit info (faces: the run's fine-tuning split where unrecorded)."""
    line = next((c for c in costs if c.get("generator") == generator and c.get("plugin") == label), None)
    info = line or (record.fits or {}).get(f"{generator}/{label}") or {}
    faces = info.get("faces")
    if faces is None and info:
        faces = (record.data.get("finetune") or {}).get("n")
    seconds = info.get("train_seconds")
    return faces, None if seconds is None or math.isnan(seconds) else float(seconds)
