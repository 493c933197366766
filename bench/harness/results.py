"""A run folder's rows, written as they are made (reports read them back through
`bench.harness.reporting.runs`); and its pictures.

`cells.jsonl` grows by one cell at a time: each cell's rows are appended in one write,
flushed and synced, so a killed run keeps every cell it finished. `plan.json` names the
plan the rows belong to. Run again with the same plan, the folder resumes: the rows of
finished cells stay, the last cell written before an interruption is redone (its write
may have been cut short), and at the end the rows are put in plan order, so a resumed
run ends with the very file of an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from bench.contract.errors import BenchError
from bench.contract.io import atomic_write_json, atomic_write_text
from bench.contract.results import CELLS, LEAKAGE, NONE, PLAN, RUN, STANDARD, RunRecord
from bench.harness.plan import PREVIEW_FACES, Plan, unit_of_row


def read_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None where it is missing, damaged or not an object
    (a run folder's bookkeeping: then the run is treated as unfinished)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class RowLog:
    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.rows: dict[str, list[dict]] = {}  # unit name -> rows, in the order written

    @property
    def path(self) -> Path:
        return self.folder / CELLS

    def recorded_plan(self) -> dict | None:
        return read_object(self.folder / PLAN)

    def finished_plan(self) -> str | None:
        """The plan id its run.json says finished (None: no run.json, or a damaged one: then
        the run is treated as unfinished)."""
        try:
            record = RunRecord.read(self.folder)
        except BenchError:
            return None
        return record.finished_plan if record is not None else None

    def finished(self, plan: Plan) -> bool:
        """The folder holds `plan`'s run, finished: its run.json and every unit's rows."""
        return (self.finished_plan() == plan.identity()
                and self.peek(plan) == {unit.name() for unit in plan.units})

    def unfinished_run_of(self, plan: Plan) -> bool:
        recorded = self.recorded_plan()
        return bool(recorded) and recorded.get("id") == plan.identity() and self.finished_plan() != plan.identity()

    def read(self) -> list[dict]:
        """The complete rows on disk (a last line cut short by a kill is left out)."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().split("\n"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # an interrupted write: nothing after it was written
        return rows

    def peek(self, plan: Plan, trust: bool = True) -> set[str]:
        """The units of `plan` the folder holds finished (without changing anything)."""
        if self.folder is None or not self.path.exists():
            return set()
        self.check_plan(plan)
        grouped: dict[str, list[dict]] = {}
        for row in self.read():
            grouped.setdefault(unit_of_row(row), []).append(row)
        if not trust:
            return set()
        if grouped and self.finished_plan() != plan.identity():
            grouped.popitem()  # the last unit written may be cut short: redo it (from the cache)
        self.rows = grouped
        return set(grouped)

    def check_plan(self, plan: Plan) -> None:
        recorded = self.recorded_plan()
        if recorded is None:
            raise BenchError(f"{self.folder} holds results without {PLAN} (another run, or one from an older "
                             "version); choose another --output, or --fresh to replace them")
        if recorded.get("id") != plan.identity():
            raise BenchError(f"{self.folder} holds a run of another plan (other settings, matrix or weights); "
                             "choose another --output, or --fresh to replace it")

    def resume(self, plan: Plan, trust: bool = True, fresh: bool = False) -> set[str]:
        """Start or resume the run of `plan` in the folder; returns the finished units.
        `trust` False (no persistent cache to redo the last cell from): start afresh;
        `fresh`: drop whatever rows the folder holds, of this plan or another."""
        self.folder.mkdir(parents=True, exist_ok=True)
        done = set() if fresh else self.peek(plan, trust)
        atomic_write_json(self.folder / PLAN, {"id": plan.identity(), "units": [[u.name(), u.step]
                                                                                 for u in plan.units]})
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for rows in self.rows.values() for r in rows))
        (self.folder / RUN).unlink(missing_ok=True)  # written again when this run finishes
        return done

    def append(self, unit: str, rows: list[dict]) -> None:
        """One cell's rows, in one write, on disk before this returns."""
        self.rows[unit] = rows
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def finish(self, plan: Plan) -> None:
        """Put the rows in plan order."""
        missing = [u.name() for u in plan.units if u.name() not in self.rows]
        if missing:
            raise BenchError(f"{len(missing)} cells have no rows (first: {missing[0]}); run the command again")
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for u in plan.units for r in self.rows[u.name()]))


# --- pictures ----------------------------------------------------------------------------
class Grid:
    """A picture of the run: for a few faces (one edit target each, cycling through the
    targets), the input, the original fake (the original generator's output on the
    clean image, which every cell is compared with) and the outputs of the cells it
    `wants(defense, bypass, scenario)`. Saved where it shows any cell."""

    def __init__(self, path: Path, title: str, images: torch.Tensor, clean: torch.Tensor, wants,
                 n_faces: int = PREVIEW_FACES):
        self.path, self.title, self.wants = path, title, wants
        self.n = min(n_faces, images.size(0))
        self.index = torch.arange(self.n)
        self.n_targets = clean.size(0)
        self.columns = [("input", images[:self.n]), ("original fake", self.pick(clean))]

    def pick(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[self.index % self.n_targets, self.index]

    def offer(self, defense: str, bypass: str, scenario: str, outputs: torch.Tensor) -> None:
        if self.wants(defense, bypass, scenario):
            title = f"{'clean input' if defense == NONE else defense}\n{bypass}"
            self.columns.append((title + (" (leakage)" if scenario == LEAKAGE else ""), self.pick(outputs)))

    def save(self) -> None:
        from bench.toolkit.figures import save_titled_grid

        if len(self.columns) > 2:  # beyond the input and the original fake
            save_titled_grid(self.columns, self.path, self.title)


def example_bypasses(config: dict, bypasses: list[str]) -> list[str]:
    """The bypasses the example grids show: Table I's (and defensive patches), else all."""
    listed = config["report"].get("table1")
    return bypasses if not listed else [b for b in bypasses if b in listed or b in config["report"].get("defensive", [])]


def figure_defense(config: dict, defenses: list[str]) -> str | None:
    """The defense whose protected images the figures show: the profile's choice where
    the run has it, else the run's first."""
    chosen = config["report"].get("figure_defense")
    return chosen if chosen in defenses else (defenses[0] if defenses else None)


def generator_grids(plan: Plan, g: str, out: Path, config: dict, images, clean, target_names: str) -> list[Grid]:
    """The run's pictures of one generator: every cell of the example bypasses; Fig. 6,
    each leakage bypass on clean and on leakage-protected inputs beside the unprotected
    fake; Fig. 7, defensive patches on clean and protected inputs beside the fakes of
    the unpatched generator."""
    names = plan.names
    shown = set(example_bypasses(config, names["bypasses"]))
    leak_defense = (names["leakage_defenses"] or [None])[0]
    leaked = set(names["leakage_bypasses"])
    chosen = figure_defense(config, names["defenses"])
    edits = f"row i edits toward target i mod {clean.size(0)} ({target_names})"
    grids = [Grid(out / f"examples_{g}.png", f"{g}: {edits}", images, clean,
                  lambda d, b, s: s == STANDARD and b in shown)]
    if leaked and leak_defense is not None:
        grids.append(Grid(out / f"fig6_leakage_{g}.png",
                          f"Fig. 6, {g}, leakage scenario: each bypass on clean inputs and on inputs protected by "
                          f"{leak_defense} against the bypassed pipeline; {edits}", images, clean,
                          lambda d, b, s: (s == LEAKAGE and d == leak_defense) or
                          (s == STANDARD and ((d == NONE and b in leaked) or (d == leak_defense and b == NONE)))))
    defensive = set(plan.defensive)
    if chosen is not None and defensive:
        grids.append(Grid(out / f"fig7_defensive_{g}.png",
                          f"Fig. 7, {g}: defensive patches on clean inputs and on inputs protected by {chosen}, "
                          f"beside the unpatched generator's fakes; {edits}", images, clean,
                          lambda d, b, s: s == STANDARD and d in (NONE, chosen) and
                          (b in defensive or (d == chosen and b == NONE))))
    return grids


def figure_grids(plan: Plan, cache, out: Path, config: dict) -> list[Grid]:
    """Every grid of the run, filled from the plan's first evaluation images and the
    cached clean outputs and cell previews."""
    grids = []
    for g in plan.names["generators"]:
        cells = [u for u in plan.units if u.cell.generator == g and not u.budget]
        clean = cache.load("clean", plan.steps[plan.steps[cells[0].step].task["clean"]].key)
        if clean is None:  # the cache lost it since: no pictures (the rows are what counts)
            continue
        names = ", ".join(plan.target_names[g])
        these = generator_grids(plan, g, out, config, plan.preview, clean[0]["value"], names)
        for unit in cells:
            found = cache.load("cell", plan.steps[unit.step].key)
            for grid in these if found is not None else []:
                grid.offer(unit.cell.defense, unit.cell.bypass, unit.cell.scenario, found[0]["preview"])
        grids += these
    return grids
