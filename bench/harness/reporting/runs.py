"""A finished run read back: its rows, its fit costs and its record (run.json)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.contract.errors import BenchError
from bench.contract.results import (
    BYPASS_FIT,
    CELL_KEY,
    CELLS,
    COSTS,
    FIT_COSTS,
    NONE,
    ORIGINAL,
    RunRecord,
    json_lines,
    read_rows,
)

COST_COLUMNS = ["generator", "bypass", "metric", "value"]


@dataclass
class Run:
    path: Path
    cells: pd.DataFrame
    record: RunRecord

    @property
    def name(self) -> str:
        return self.path.name

    @functools.cached_property
    def cost_lines(self) -> list[dict]:
        """costs.jsonl's lines of bypass fits (none for runs that kept costs among their rows)."""
        path = self.path / COSTS
        return [c for c in json_lines(path) if c.get("kind") == BYPASS_FIT] if path.exists() else []


def read_run(path: Path) -> Run:
    """A run folder with its record (boards need each run's protocol and provenance)."""
    path = Path(path)
    record = RunRecord.read(path)
    if record is None:
        raise BenchError(f"{path} has no run.json: a leaderboard needs each run's protocol and provenance")
    return Run(path, read_cells(path), record)


def read_cells(run_dir: Path) -> pd.DataFrame:
    """A run's rows (without the fit costs that runs of result schema 1 wrote among them)."""
    cells = pd.DataFrame(read_rows(run_dir))
    return cells[~cells.metric.isin(FIT_COSTS)].reset_index(drop=True) if not cells.empty else cells


def read_costs(run_dir: Path) -> pd.DataFrame:
    """Each trainable bypass's fit cost per generator: columns generator, bypass, metric
    (train_seconds, trainable_params) and value; from costs.jsonl, or from the rows of
    defense NONE in which runs of result schema 1 recorded them."""
    path = Path(run_dir) / COSTS
    if path.exists():
        rows = [{"generator": c["generator"], "bypass": c["plugin"], "metric": metric, "value": c[metric]}
                for c in json_lines(path) if c["kind"] == BYPASS_FIT for metric in FIT_COSTS
                if c.get(metric) is not None]
        return pd.DataFrame(rows, columns=COST_COLUMNS)
    cells = pd.DataFrame(json_lines(Path(run_dir) / CELLS)) if (Path(run_dir) / CELLS).exists() else pd.DataFrame()
    if cells.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    return cells[cells.metric.isin(FIT_COSTS)][COST_COLUMNS].reset_index(drop=True)


def first_of_each_cell(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and metric: where runs overlap, the first run's."""
    key = [c for c in CELL_KEY if c in cells]
    return cells[~cells[key].astype(str).duplicated(keep="first")].reset_index(drop=True)


def references(cells: pd.DataFrame) -> pd.Series:
    """Each row's reference (runs made before defensive patching have no such column:
    all their rows are scored against the original fake)."""
    return cells["reference"].fillna(ORIGINAL) if "reference" in cells else pd.Series(ORIGINAL, cells.index)


def ordered(values, first=(NONE,)) -> list:
    """Keep the run's order but put the baseline first."""
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def present(cells: pd.DataFrame, names) -> list[str]:
    """The bypass names (in their order) that the rows have."""
    seen = set(cells.bypass)
    return [n for n in names or [] if n in seen]
