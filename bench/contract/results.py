"""The result format: what a run writes and what reports, boards and other tools read.

It needs nothing but the standard library (no torch), so a finished run can be read
on any machine. It owns:

- the row vocabulary, as named constants: nothing else spells these strings;
- `Cell` and `Row`: one cell of the matrix, and one number of a run (`cells.jsonl`);
- the names of the budget measures (protected against clean images) and how each
  aggregates, and the protocol a board checks them against;
- `RunRecord`: the typed record of `run.json`, written and read through it.

A run folder holds `cells.jsonl` (rows), `costs.jsonl` (fit costs), `plan.json` (the
plan the rows belong to) and `run.json` (provenance); see the manual's Results page.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.contract.errors import BenchError

if TYPE_CHECKING:
    from bench.contract.metric import MetricSpec

# --- the row vocabulary -------------------------------------------------------------
NONE = "none"  # the rows' name for "no defense" (clean inputs) and for "no bypass"
STANDARD = "standard"  # the defense perturbs against the original generator
LEAKAGE = "leakage"  # the defense perturbs against the bypassed pipeline itself
TRANSFER = "transfer"  # the defense perturbed against other generators than the one that edits
SCENARIOS = (STANDARD, LEAKAGE, TRANSFER)
ALL_TARGETS = "all"  # a row over every edit target (else the row of one target)
# what a row's outputs are scored against
ORIGINAL = "original"  # the original generator's output on the clean image
CLEAN_INPUT = "clean_input"  # budget rows: protected images against the clean images
MARKED = "marked"  # defensive patches: the original fake with the warning mark
OUTSIDE_MARK = "outside_mark"  # defensive patches: the original fake, outside the mark's region



def transfer_scenario(source: str) -> str:
    """The scenario of rows whose protection was made against `source`: a generator
    ("transfer:stargan") or a universal fit across others (`across`)."""
    return f"{TRANSFER}:{source}"


def across(generators: list[str]) -> str:
    """The source of a universal defense fitted across `generators`: "across:attgan+hisd"."""
    return "across:" + "+".join(generators)


def is_across(source: str) -> bool:
    return source.startswith("across:")


def transfer_source(scenario: str) -> str | None:
    """The source of a transfer scenario's rows (None for other scenarios)."""
    kind, _, source = scenario.partition(":")
    return source if kind == TRANSFER and source else None


# --- files of a run folder -------------------------------------------------------------
# 2: fit costs in costs.jsonl (no longer rows of defense NONE), plan.json, run.json "plan"
RESULT_SCHEMA_VERSION = 2
CELLS, COSTS, PLAN, RUN = "cells.jsonl", "costs.jsonl", "plan.json", "run.json"
FIT_COSTS = ("train_seconds", "trainable_params")  # what a trainable bypass's fit cost
BYPASS_FIT, DEFENSE_FIT = "bypass_fit", "defense_fit"  # the kinds of costs.jsonl's lines

# --- the budget a protection is measured against -----------------------------------------
# the perturbation budget of the paper's defenses (L-inf on [-1, 1]): their default, and
# the protocol's limit on the leaderboard
DEFAULT_EPS = 0.05
# a defense counts as broken where a bypass leaves it a DSR at most `break_threshold`
DEFAULT_BREAK_THRESHOLD = 0.1
DEFAULT_PROTOCOL = {"eps": DEFAULT_EPS, "tolerance": 1e-5, "break_threshold": DEFAULT_BREAK_THRESHOLD}
# budget measure -> how it aggregates over a defense's protected images
BUDGET_MEASURES = {"linf": "max", "l2_norm": "mean", "psnr": "mean", "ssim": "mean"}
BUDGET_LIMIT = "linf"  # the measure checked against the protocol's eps


def within_budget(linf: float, protocol: dict) -> bool:
    return linf <= protocol["eps"] + protocol["tolerance"]


# --- what a bypass costs the attacker: the rungs of the leaderboard's cost ladder -------------
NO_COST, CHANNEL_TRANSFORM, PRETRAINED_PURIFIER, FINE_TUNING = 0, 1, 2, 3
RUNGS = {NO_COST: "nothing",  # the protected image as it is
         CHANNEL_TRANSFORM: "channel transform",  # no model, no data (a codec, a resize, noise)
         PRETRAINED_PURIFIER: "purifier",  # a purifying network, used for inference only
         FINE_TUNING: "fine-tuning"}  # the generator's weights and faces to fine-tune on


# --- fits ---------------------------------------------------------------------------------
def recent_mean(curve: list[float], fraction: float = 0.1) -> float:
    """Mean of the last `fraction` of a loss curve (at least its last value): a fit's
    final loss, less noisy than its last step."""
    tail = curve[-max(1, int(len(curve) * fraction)):]
    return sum(tail) / len(tail)


# --- cells and rows ------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: a generator, a defense (or NONE), a bypass (or NONE)
    and a scenario (STANDARD; LEAKAGE: the defense attacked the bypassed pipeline;
    `transfer_scenario(source)`: the defense attacked other generators, `source`, and
    `generator` edits)."""
    generator: str
    defense: str
    bypass: str
    scenario: str


@dataclass(frozen=True)
class Row:
    """One number of a run: `metric` over a cell's n outputs (or pairs) against
    `reference`, with the metric's direction and threshold; `cache_hit` and `seconds`
    say whether the cell was computed in this run and what computing it cost."""
    generator: str
    defense: str
    bypass: str
    scenario: str
    reference: str
    metric: str
    target: str
    higher_is_better: bool
    threshold: float | None
    value: float
    n: int
    cache_hit: bool = False
    seconds: float = 0.0
    per_image: list[float] | None = None  # pair metrics: the value of each evaluation image, in order

    @classmethod
    def of(cls, cell: Cell, reference: str, spec: MetricSpec, value, n: int, target: str = ALL_TARGETS,
           per_image=None) -> Row:
        """The row of `spec`'s metric; `per_image`: a tensor of its values per image."""
        kept = None if per_image is None else [float(f"{v:.8g}") for v in per_image.double().flatten().tolist()]
        return cls(cell.generator, cell.defense, cell.bypass, cell.scenario, reference, spec.name, target,
                   spec.higher_is_better, spec.threshold, float(value), int(n), per_image=kept)

    def to_json(self) -> dict:
        row = asdict(self)
        if row["per_image"] is None:
            del row["per_image"]
        return row

    @classmethod
    def from_json(cls, row: dict) -> Row:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


# what a cell's rows hold: 2 added the pair metrics' per-image values (part of the cells' cache keys)
ROW_SCHEMA = 2
ROW_REQUIRED = ("generator", "defense", "bypass", "scenario", "metric", "value")  # what every row has
CELL_KEY = ("generator", "defense", "bypass", "scenario", "metric", "target", "reference")  # one number's place


# --- the run record ----------------------------------------------------------------------------
@dataclass
class RunRecord:
    """`run.json`: what ran, on what, and how, so that a run can be reproduced and its
    numbers compared only with comparable ones. Fields are written in this order (a
    record read from an older run gains the fields it lacked, empty); keys a later
    version adds are kept (`extra`) and written back."""
    harness_version: str
    seed: int
    config: dict
    git: dict  # {"commit", "dirty"}
    data: dict  # split name ("eval", "finetune", "defense_fit") -> its identity
    schema_version: int | None = None
    finished: str | None = None  # ISO time, UTC
    command: str | None = None
    environment: dict = field(default_factory=dict)
    selected: dict = field(default_factory=dict)  # the names the run chose, by kind
    plugins: dict = field(default_factory=dict)  # kind -> label -> identity (name, version, params)
    plugin_origins: dict = field(default_factory=dict)  # kind -> label -> distribution, entry point, paper...
    official_weights: dict = field(default_factory=dict)  # generator -> its official checkpoint: path, state, sha256
    defense_fits: list = field(default_factory=list)
    bypass_costs: dict = field(default_factory=dict)  # label -> what the bypass declares it costs (rung...)
    fits: dict = field(default_factory=dict)  # "generator/bypass" -> the bypass fit's info
    plan: dict = field(default_factory=dict)
    wall_seconds: float | None = None
    peak_memory: dict = field(default_factory=dict)
    cache_hits: int | None = None
    metrics: dict = field(default_factory=dict)  # metric -> identity (its spec, weights' hash, libraries)
    metrics_skipped: dict = field(default_factory=dict)  # metric -> why it could not run
    skipped_metric_specs: dict = field(default_factory=dict)  # metric it could not run -> its spec
    metric_seconds: dict = field(default_factory=dict)
    finished_plan: str | None = None  # the plan's id, once every row of it is written
    extra: dict = field(default_factory=dict)

    ORDER = ("schema_version", "harness_version", "finished", "command", "git", "environment", "seed", "config",
             "selected", "plugins", "plugin_origins", "official_weights", "data", "defense_fits", "bypass_costs", "fits", "plan",
             "wall_seconds", "peak_memory", "cache_hits", "metrics", "metrics_skipped", "skipped_metric_specs",
             "metric_seconds", "finished_plan")
    REQUIRED = ("config", "data", "harness_version", "seed", "git")  # what reports and boards read

    @property
    def profile(self) -> str:
        return self.config["profile"]

    @property
    def evaluation(self) -> dict:
        """The evaluated split's identity: name, n, first and last files, ids, pixel hash."""
        return self.data.get("eval") or {}

    @property
    def protocol(self) -> dict:
        """The budget protocol (eps, tolerance); runs made before it was a setting: the default."""
        return {**DEFAULT_PROTOCOL, **(self.config.get("protocol") or {})}

    @property
    def report_groups(self) -> dict:
        """Which bypasses make up which table (the profile's `report` setting)."""
        return self.config.get("report") or {}

    def plugin(self, kind: str, label: str) -> tuple[dict | None, dict]:
        """A plugin's identity (None where the run has none of that label) and origin."""
        identity = (self.plugins.get(kind) or {}).get(label)
        return identity, (self.plugin_origins.get(kind) or {}).get(label) or {}

    def to_json(self) -> dict:
        return {**{name: getattr(self, name) for name in self.ORDER}, **self.extra}

    @classmethod
    def from_json(cls, value, source: str = "run.json") -> RunRecord:
        missing = [key for key in cls.REQUIRED if not isinstance(value, dict) or key not in value]
        if missing:
            raise BenchError(f"{source} is not a run's run.json (it lacks {', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in value.items() if k in known},
                   extra={k: v for k, v in value.items() if k not in known})

    @classmethod
    def read(cls, folder: Path) -> RunRecord | None:
        """The run.json of a run folder, or None where it has none."""
        path = Path(folder) / RUN
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise BenchError(f"{path} is not JSON ({err})") from None
        return cls.from_json(value, str(path))

    def write(self, folder: Path) -> None:
        from bench.contract.io import atomic_write_json

        atomic_write_json(Path(folder) / RUN, self.to_json())


def json_lines(path: Path) -> list[Any]:
    """The JSON values of a JSON-lines file, one per non-empty line."""
    values = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchError(f"{path} line {number} is not JSON ({err})") from None
    return values


def read_rows(folder: Path) -> list[dict]:
    """A run's rows as written (dicts), each checked to be a result row."""
    path = Path(folder) / CELLS
    if not path.exists():
        raise BenchError(f"no results in {folder} ({CELLS} missing); run `bench run` first")
    rows = json_lines(path)
    for number, row in enumerate(rows, start=1):
        missing = [key for key in ROW_REQUIRED if not isinstance(row, dict) or key not in row]
        if missing:
            raise BenchError(f"{path} row {number} is not a result row (it lacks {', '.join(missing)})")
    return rows
