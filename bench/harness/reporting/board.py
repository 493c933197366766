"""The leaderboard: every defense judged by what it costs an attacker to break it.

A defense is ranked first by its break cost (bench.harness.reporting.ladder): per
generator, the cheapest bypass on the attacker's cost ladder (nothing, a channel
transform, a purifier, fine-tuning on more and more faces) that brings its DSR to the
protocol's `break_threshold` or below, averaged over the generators as a step position
(higher: dearer to break). Ties are broken, as RobustBench ranks models by their
accuracy under the strongest attack, by the robust DSR: for each generator, the lowest
defense success rate any bypass of the runs leaves it, in the standard scenario and in
the leakage scenario (where the defender perturbs against the bypassed pipeline
itself), averaged over the generators; then by the mean DSR over every cell. Beside
them stand the defense's worst DSR on a generator it was not made against (the
transfer scenario, where run; not ranked on) and what the protected images really are (measured L-inf and L2 distance to the
clean image and the protection's visible cost, PSNR and SSIM), from the runs'
`clean_input` rows.

An entry is ranked only if it is complete in the standard scenario (a cell for every
bypass column of the board and every generator: a cheaper break or a lower worst case
could hide in a missing one) and within the protocol's budget (measured L-inf <= eps +
tolerance). The others are listed, with why they are not ranked. The leakage scenario
(the adaptive defender's case) counts where it was run; an entry whose runs did not
cover it says so beside its rank. A second board ranks the bypasses by the highest DSR
they leave any defense within budget (their worst case, lower is stronger).

The break cost and the robust DSR carry 95% bootstrap intervals over the evaluation
images (the cells' per-image values resampled jointly, bench.harness.intervals), and
an entry lists the ranked entries it is statistically tied with: those from which it
differs by neither key (the paired difference of break cost and of robust DSR each
have an interval containing 0).

Entries made under different protocols (profile, resolution, eps, evaluation images
and their pixels, harness version) are never ranked together: runs are grouped by
protocol and each group gets its own board. Every number comes from `cells.jsonl` rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.contract.errors import BenchError
from bench.contract.results import (
    ALL_TARGETS,
    BUDGET_LIMIT,
    BUDGET_MEASURES,
    CLEAN_INPUT,
    LEAKAGE,
    NONE,
    ORIGINAL,
    STANDARD,
    RunRecord,
    transfer_source,
    within_budget,
)
from bench.harness import intervals
from bench.harness.reporting.ladder import (
    Break,
    Ladder,
    Rung,
    break_replicates,
    cheapest_break,
    declared_costs,
    measured_fit,
)
from bench.harness.reporting.runs import Run, first_of_each_cell, references

SCORES = ("dsr", "l2")  # what each cell of the board shows: DSR (ranked on) and L2 (the paper's MSE)


@dataclass(frozen=True)
class Column:
    """One bypass in one scenario: a column of the board."""
    bypass: str
    scenario: str

    @property
    def label(self) -> str:
        name = "no bypass" if self.bypass == NONE else self.bypass
        return name + (" (leakage)" if self.scenario == LEAKAGE else "")

    def as_dict(self) -> dict:
        return {"bypass": self.bypass, "scenario": self.scenario}


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def incomplete(missing: list) -> str:
    return f"incomplete ({len(missing)} cell{'s' if len(missing) > 1 else ''} missing)"


@dataclass
class Entry:
    """One defense on one board (written as JSON by `entry_json`)."""
    label: str
    cells: list[dict]  # {generator, bypass, scenario, dsr, l2, n}
    worst: dict  # generator -> {dsr, l2, bypass, scenario}
    missing: list[dict]  # {generator, bypass, scenario} of the standard scenario the board has and this entry lacks
    leakage_missing: list[dict]  # the same of the leakage scenario (reported, not withholding the rank)
    budget: dict
    origin: dict
    params: dict
    runs: list[str]
    rank: int | None = None
    replicates: np.ndarray | None = None  # bootstrap replicates of robust_dsr (None: no per-image values)
    breaks: dict[str, Break] = field(default_factory=dict)  # generator -> the cheapest break there
    break_reps: np.ndarray | None = None  # bootstrap replicates of break_cost
    tied_with: list[str] = field(default_factory=list)  # ranked entries not separable from this one
    # the transfer scenario's worst case: {dsr, dsr_interval, source, generator, cells} (None: not run)
    transfer: dict | None = None

    @property
    def break_cost(self) -> float | None:
        """The mean over generators of the ladder position where the defense breaks."""
        return mean(b.position for b in self.breaks.values())

    @property
    def break_interval(self) -> tuple[float, float] | None:
        return None if self.break_reps is None else intervals.interval(self.break_reps)

    @property
    def leakage_note(self) -> str:
        """How far the leakage scenario (the adaptive defender's case) covers this entry."""
        have = sum(c["scenario"] == LEAKAGE for c in self.cells)
        if not self.leakage_missing:
            return "leakage run" if have else ""
        return "leakage not run" if not have else f"leakage partly run ({have} of {have + len(self.leakage_missing)})"

    @property
    def robust_dsr(self) -> float | None:
        return mean(w["dsr"] for w in self.worst.values())

    @property
    def robust_interval(self) -> tuple[float, float] | None:
        return None if self.replicates is None else intervals.interval(self.replicates)

    @property
    def mean_dsr(self) -> float | None:
        """The average case: mean DSR over every cell (breaks ties of the worst case)."""
        return mean(c["dsr"] for c in self.cells if c["dsr"] is not None)

    @property
    def complete(self) -> bool:
        return not self.missing

    def is_worst(self, generator: str, column: Column) -> bool:
        w = self.worst.get(generator) or {}
        return (w.get("bypass"), w.get("scenario")) == (column.bypass, column.scenario)

    @property
    def status(self) -> str:
        if self.budget.get("within_budget") is None:
            return "budget not measured"
        if not self.budget["within_budget"]:
            return "over budget"
        if not self.complete:
            return incomplete(self.missing)
        return "ranked"


@dataclass
class BypassEntry:
    """One bypass column on the bypass board: the highest DSR it leaves, per generator."""
    column: Column
    worst: dict  # generator -> {dsr, l2, defense}
    missing: list[dict]  # {generator, defense}
    mean_dsr: float | None = None  # the average case: mean DSR it leaves over every defense and generator
    rank: int | None = None

    @property
    def label(self) -> str:
        return self.column.label

    @property
    def worst_dsr(self) -> float | None:
        return mean(w["dsr"] for w in self.worst.values())

    @property
    def status(self) -> str:
        if self.column.bypass == NONE:
            return "baseline"
        return "ranked" if not self.missing else incomplete(self.missing)


@dataclass
class Board:
    protocol: dict
    generators: dict  # name -> weights sha256
    bypasses: dict  # label -> identity (name, version, params)
    bypass_costs: dict  # label -> what it declared it costs (rung, faces, strength)
    columns: list[Column]
    ladders: dict  # generator -> Ladder: the standard-scenario bypasses by cost
    entries: list[Entry]
    bypass_entries: list[BypassEntry]
    runs: list[dict] = field(default_factory=list)  # provenance of each run

    @property
    def protocol_id(self) -> str:
        return protocol_id(self.protocol)


def protocol_of(record: RunRecord) -> dict:
    """What makes numbers comparable: profile, resolution, the perturbation budget, the
    evaluation images (ids and pixel hash) and the harness version."""
    budget = record.protocol
    return {"profile": record.profile, "resolution": record.config["resolution"], "eps": budget["eps"],
            "tolerance": budget["tolerance"], "break_threshold": budget["break_threshold"],
            "harness_version": record.harness_version,
            "evaluation": {k: record.evaluation.get(k) for k in ("name", "n", "first", "last", "ids", "pixels_sha256")}}


def protocol_id(protocol: dict) -> str:
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def group_by_protocol(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(protocol_id(protocol_of(run.record)), []).append(run)
    return groups


def merged_identities(runs: list[Run], kind: str, field_name: str | None = None) -> dict:
    """name -> identity (or one field of it) of the runs' generators or bypasses; the same
    name with two different identities is an error (the runs measured different things)."""
    merged, source = {}, {}
    for run in runs:
        for name, identity in (run.record.plugins.get(kind) or {}).items():
            value = identity.get(field_name) if field_name else identity
            if name in merged and merged[name] != value:
                raise BenchError(f"runs {source[name]} and {run.name} evaluated {kind[:-1]} {name!r} differently "
                                 f"(different {field_name or 'settings'}); make a board of each separately")
            merged.setdefault(name, value)
            source.setdefault(name, run.name)
    return merged


def joined_cells(runs: list[Run]) -> pd.DataFrame:
    """All runs' rows, each cell once (the first run's), with the run it came from."""
    frames = [run.cells.assign(run=run.name) for run in runs]
    cells = first_of_each_cell(pd.concat(frames, ignore_index=True))
    cells["reference"] = references(cells)
    return cells


def attack_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """The rows the board shows, in the runs' order: DSR and L2 of the cells scored
    against the original fake (defensive patches, scored against a marked fake, are not
    bypasses and stay off the board)."""
    return cells[(cells.reference == ORIGINAL) & cells.metric.isin(SCORES) & (cells.target == ALL_TARGETS)]


def attack_table(rows: pd.DataFrame) -> pd.DataFrame:
    """(defense, generator, bypass, scenario) -> dsr, l2, n, run."""
    key = ["defense", "generator", "bypass", "scenario"]
    table = rows.pivot_table(index=key, columns="metric", values="value", aggfunc="first")
    dsr = rows[rows.metric == "dsr"].set_index(key)
    if "per_image" not in dsr:
        dsr = dsr.assign(per_image=None)
    return table.join(dsr[["n", "run", "per_image"]])


def column_order(rows: pd.DataFrame) -> list[Column]:
    """The board's columns: no bypass first, then the runs' bypasses in their order, each
    standard before leakage."""
    seen = list(dict.fromkeys(zip(rows.bypass, rows.scenario)))
    bypasses = list(dict.fromkeys(b for b, _ in seen))
    bypasses = [b for b in bypasses if b == NONE] + [b for b in bypasses if b != NONE]
    return [Column(b, s) for b in bypasses for s in (STANDARD, LEAKAGE) if (b, s) in seen]


def budget_of(cells: pd.DataFrame, defense: str, eps_declared, protocol: dict) -> dict:
    """Measured budget of a defense's protected images: the largest L-inf over every
    image it protected (both scenarios); mean L2 norm, PSNR and SSIM over the standard
    scenario's (the protection as released)."""
    rows = cells[(cells.reference == CLEAN_INPUT) & (cells.defense == defense)]
    budget = {"eps_declared": eps_declared, "eps_protocol": protocol["eps"]}
    if rows.empty:
        return {**budget, "linf_max": None, "l2_norm_mean": None, "psnr_mean": None, "ssim_mean": None,
                "images": 0, "within_budget": None}
    standard = rows[rows.scenario == STANDARD]
    standard = standard if not standard.empty else rows
    linf = float(rows[rows.metric == BUDGET_LIMIT].value.max())
    means = {f"{name}_mean": number(standard[standard.metric == name].value.mean())
             for name in BUDGET_MEASURES if name != BUDGET_LIMIT}
    images = int(rows[rows.metric == BUDGET_LIMIT].n.sum())
    return {**budget, "linf_max": linf, **means, "images": images, "within_budget": within_budget(linf, protocol)}


def number(value) -> float | None:
    """A JSON number, or None for what is missing."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def defense_entry(table: pd.DataFrame, cells: pd.DataFrame, defense: str, generators: list[str],
                  columns: list[Column], runs: list[Run], protocol: dict, ladders: dict[str, Ladder]) -> Entry:
    mine = table.xs(defense, level="defense")
    entry_cells, worst, missing, leakage_missing, per_generator, cell_reps = [], {}, [], [], {}, {}
    for g in generators:
        for column in columns:
            key = (g, column.bypass, column.scenario)
            if key not in mine.index:
                absent = leakage_missing if column.scenario == LEAKAGE else missing
                absent.append({"generator": g, **column.as_dict()})
                continue
            row = mine.loc[key]
            reps = cell_reps[key] = intervals.replicates(row.per_image)
            cell = {"generator": g, **column.as_dict(), "dsr": number(row.dsr),
                    "dsr_interval": None if reps is None else list(intervals.interval(reps)),
                    "l2": number(row.get("l2")), "n": int(row.n), "run": row.run}
            entry_cells.append(cell)
            if cell["dsr"] is not None:
                per_generator.setdefault(g, []).append(reps)
                if g not in worst or lower(cell, worst[g]):
                    worst[g] = {k: cell[k] for k in ("dsr", "l2", "bypass", "scenario")}
    identity, origin = plugin_facts(runs, "defenses", defense)
    origin = {**origin, "plugin": identity.get("name"), "version": identity.get("version", origin.get("version"))}
    params = identity.get("params") or {}
    dsr = {(c["generator"], c["bypass"], c["scenario"]): c["dsr"] for c in entry_cells}
    breaks, break_reps = entry_breaks(dsr, cell_reps, ladders, protocol["break_threshold"])
    return Entry(defense, entry_cells, worst, missing, leakage_missing,
                 budget_of(cells, defense, params.get("eps"), protocol), origin, params,
                 sorted({c["run"] for c in entry_cells}), replicates=robust_replicates(per_generator),
                 breaks=breaks, break_reps=break_reps, transfer=worst_transfer(mine))


def worst_transfer(mine: pd.DataFrame) -> dict | None:
    """A defense's lowest DSR on a generator its protection was not made against (the
    transfer scenario, no bypass), with where it happened; not part of the rank."""
    found = None
    count = 0
    for (g, bypass, scenario), row in mine.iterrows():
        source = transfer_source(scenario)
        if source is None or bypass != NONE or row.dsr != row.dsr:
            continue
        count += 1
        if found is None or row.dsr < found["dsr"]:
            reps = intervals.replicates(row.per_image)
            found = {"dsr": float(row.dsr), "dsr_interval": None if reps is None else list(intervals.interval(reps)),
                     "source": source, "generator": g}
    return None if found is None else {**found, "cells": count}


def entry_breaks(dsr: dict, cell_reps: dict, ladders: dict[str, Ladder],
                 threshold: float) -> tuple[dict, np.ndarray | None]:
    """A defense's cheapest break on each generator's ladder (its standard-scenario cells:
    `dsr` and `cell_reps`, by (generator, bypass, scenario)) with the DSR's interval there,
    and the bootstrap replicates of their mean position."""
    breaks, reps = {}, []
    for g, ladder in ladders.items():
        keys = {r.bypass: (g, r.bypass, STANDARD) for r in ladder.rungs if (g, r.bypass, STANDARD) in dsr}
        replicates = {b: cell_reps[k] for b, k in keys.items()}
        found = cheapest_break(ladder, {b: dsr[k] for b, k in keys.items()}, threshold)
        if found.rung is not None and replicates[found.rung.bypass] is not None:
            found.interval = intervals.interval(replicates[found.rung.bypass])
        breaks[g] = found
        reps.append(break_replicates(ladder, replicates, threshold))
    return breaks, intervals.combined(reps, np.mean)


def costs_declared(runs: list[Run]) -> dict[str, tuple[dict, Run]]:
    """bypass label -> the cost it declared and the run it is taken from (the first naming it)."""
    declared: dict[str, tuple[dict, Run]] = {}
    for run in runs:
        for label, cost in declared_costs(run.record).items():
            declared.setdefault(label, (cost, run))
    return declared


def ladders_of(declared: dict[str, tuple[dict, Run]], columns: list[Column],
               generators: list[str]) -> dict[str, Ladder]:
    """Each generator's cost ladder over the board's standard-scenario bypasses: the cost
    each declared and its fit's measured faces and seconds."""
    ladders = {}
    for g in generators:
        rungs = []
        for column in columns:
            if column.scenario != STANDARD or column.bypass not in declared:
                continue
            cost, run = declared[column.bypass]
            faces, seconds = measured_fit(run.record, run.cost_lines, g, column.bypass)
            rungs.append(Rung(column.bypass, cost["rung"], faces if faces is not None else cost.get("faces"), seconds))
        ladders[g] = Ladder.of(rungs)
    return ladders


def robust_replicates(per_generator: dict[str, list]) -> np.ndarray | None:
    """Replicates of the robust DSR: per generator the lowest of its cells' replicates
    (one set of image draws for all), then their mean over the generators."""
    worst = [intervals.combined(reps, np.min) for reps in per_generator.values()]
    return intervals.combined(worst, np.mean)


def mark_ties(entries: list[Entry]) -> None:
    """For each ranked entry, the other ranked entries it cannot be told apart from: by
    neither break cost nor robust DSR (each paired difference's interval contains 0)."""
    ranked = [e for e in entries if e.rank is not None]
    for entry in ranked:
        entry.tied_with = [other.label for other in sorted(ranked, key=lambda e: e.rank)
                           if other is not entry and not separated(entry, other)]


def separated(a: Entry, b: Entry) -> bool:
    """Whether the bootstrap tells a and b apart by break cost or by robust DSR (entries
    without per-image values never count as tied)."""
    tests = [intervals.separable(a.break_reps, b.break_reps), intervals.separable(a.replicates, b.replicates)]
    known = [t for t in tests if t is not None]
    return any(known) if known else True


def lower(cell: dict, other: dict) -> bool:
    """Whether `cell` is a worse case for the defense than `other`: a lower DSR, or the
    same DSR with outputs closer to the original fake (lower L2: more fully bypassed)."""
    return (cell["dsr"], cell["l2"] if cell["l2"] is not None else math.inf) < \
        (other["dsr"], other["l2"] if other["l2"] is not None else math.inf)


def plugin_facts(runs: list[Run], kind: str, label: str) -> tuple[dict, dict]:
    """A plugin's identity (name, version, params) and origin from the first run naming it."""
    for run in runs:
        identity, origin = run.record.plugin(kind, label)
        if identity is not None:
            return identity, origin
    return {}, {}


def bypass_entry(table: pd.DataFrame, column: Column, generators: list[str], defenses: list[str]) -> BypassEntry:
    worst, missing, values = {}, [], []
    for g in generators:
        for d in defenses:
            key = (d, g, column.bypass, column.scenario)
            if key not in table.index:
                missing.append({"generator": g, "defense": d})
                continue
            row = table.loc[key]
            found = {"dsr": number(row.dsr), "l2": number(row.get("l2")), "defense": d}
            if found["dsr"] is not None:
                values.append(found["dsr"])
                if g not in worst or lower(worst[g], found):
                    worst[g] = found
    return BypassEntry(column, worst, missing, mean(values))


def rank(items: list, score, higher_first: bool) -> None:
    """Number the ranked items by `score(item)`, a tuple (the worst case, then what breaks
    its ties), then by name."""
    ranked = [item for item in items if item.status == "ranked"]
    sign = -1 if higher_first else 1
    ranked.sort(key=lambda item: (*(sign * value for value in score(item)), item.label))
    for position, item in enumerate(ranked, start=1):
        item.rank = position


def build_board(runs: list[Run]) -> Board:
    """One board from runs that share a protocol."""
    protocols = {protocol_id(protocol_of(run.record)) for run in runs}
    if len(protocols) > 1:
        raise BenchError("runs of different protocols cannot share a board; group them with group_by_protocol")
    protocol = protocol_of(runs[0].record)
    cells = joined_cells(runs)
    rows = attack_rows(cells)
    if not (rows.metric == "dsr").any():
        raise BenchError(f"no DSR rows in {', '.join(r.name for r in runs)}: nothing to rank")
    table = attack_table(rows)
    generators = list(dict.fromkeys(rows.generator))
    columns = column_order(rows[rows.defense != NONE])  # what protected images met (not the clean baseline)
    defenses = [d for d in dict.fromkeys(rows.defense) if d != NONE]
    declared = costs_declared(runs)
    ladders = ladders_of(declared, columns, generators)
    entries = [defense_entry(table, cells, d, generators, columns, runs, protocol, ladders) for d in defenses]
    rank(entries, lambda e: (e.break_cost if e.break_cost is not None else -1, e.robust_dsr, e.mean_dsr),
         higher_first=True)
    mark_ties(entries)
    eligible = [e.label for e in entries if e.budget.get("within_budget")]
    bypass_entries = [bypass_entry(table, c, generators, eligible) for c in columns]
    rank(bypass_entries, lambda b: (b.worst_dsr, b.mean_dsr), higher_first=False)
    return Board(protocol, {g: w for g, w in merged_identities(runs, "generators", "weights_sha256").items()
                            if g in generators},
                 merged_identities(runs, "bypasses"), {label: cost for label, (cost, _) in declared.items()},
                 columns, ladders, entries, bypass_entries,
                 [run_provenance(run) for run in runs])


def run_provenance(run: Run) -> dict:
    record = run.record
    return {"run": run.name, "command": record.command, "finished": record.finished, "git": record.git,
            "harness_version": record.harness_version, "seed": record.seed,
            "device": record.environment.get("device"), "wall_seconds": record.wall_seconds}


def ordered_entries(items: list) -> list:
    """Ranked first, by rank; then the rest by name."""
    return sorted(items, key=lambda item: (item.rank is None, item.rank or 0, item.label))
