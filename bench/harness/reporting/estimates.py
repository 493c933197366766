"""What a table is made of: the rows it selects, their estimates (a value per group of
cells with its 95% bootstrap interval), and the `Table` that holds the values and the
two ends of their intervals, made in one pass (one bootstrap per estimate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.contract.results import ORIGINAL, STANDARD
from bench.harness import intervals
from bench.harness.reporting.runs import references

TABLE1_METRICS = ["l2", "ssim", "dsr"]
FIELDS = ("value", "low", "high")  # an estimate, and the ends of its 95% interval
STATISTICS = {"mean": np.mean, "max": np.max, "min": np.min}


@dataclass
class Table:
    """A table's values and, where it has intervals, their low and high ends: frames of
    the same shape."""
    value: pd.DataFrame
    low: pd.DataFrame | None = None
    high: pd.DataFrame | None = None

    @classmethod
    def of(cls, shape: Callable[[str], pd.DataFrame]) -> Table:
        """The table that `shape(field)` lays out, for each of FIELDS."""
        return cls(*(shape(field) for field in FIELDS))

    @property
    def empty(self) -> bool:
        return self.value.empty

    @property
    def has_intervals(self) -> bool:
        return self.low is not None

    def map(self, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Table:
        """The same change (a reindex, say) applied to the values and both ends."""
        return Table(change(self.value), *(None if t is None else change(t) for t in (self.low, self.high)))


EMPTY = Table(pd.DataFrame())


def scored(cells: pd.DataFrame, scenario: str = STANDARD, reference: str = ORIGINAL,
           bypasses: list[str] | None = None, metrics=TABLE1_METRICS) -> pd.DataFrame:
    """The rows of `metrics` (default L2/SSIM/DSR) of one scenario scored against
    `reference`, optionally of some bypasses only."""
    df = cells[(cells.scenario == scenario) & (references(cells) == reference) & cells.metric.isin(metrics)]
    return df if bypasses is None else df[df.bypass.isin(bypasses)]


def estimates(df: pd.DataFrame, keys: list[str], how: str = "first") -> pd.DataFrame:
    """One row per `keys`: the value of one cell ("first") or the mean or maximum over
    the group's cells, with its bootstrap interval (`low`, `high`) from the cells'
    per-image values, resampled jointly (bench.harness.intervals), and the number of
    cells behind it (`count`). Rows without per-image values get no interval."""
    rows = []
    for key, group in df.groupby(keys, sort=False):
        per_image = group["per_image"] if "per_image" in group else pd.Series([None] * len(group))
        reps = [intervals.replicates(p) for p in per_image]
        if how == "first":
            value, joint = group["value"].iloc[0], reps[0]
        else:
            value, joint = STATISTICS[how](group["value"].to_numpy()), intervals.combined(reps, STATISTICS[how])
        low, high = intervals.interval(joint)
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "value": value, "low": low,
                     "high": high, "count": len(group)})
    return pd.DataFrame(rows, columns=[*keys, "value", "low", "high", "count"])
