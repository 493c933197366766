"""The report as a list of table specs, in the order it prints them. A spec names its
files (`stem`.csv, .tex), its title, the function that pivots the run's rows into it
(returning an empty table where the run lacks what it needs), the note under it and
the figure drawn from it. Adding a table is adding a spec."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from bench.contract.results import LEAKAGE, RunRecord
from bench.harness import intervals
from bench.harness.reporting import tables
from bench.harness.reporting.estimates import EMPTY, Table, scored
from bench.harness.reporting.plots import save_grouped_bars, save_loss_curves, save_matrices
from bench.harness.reporting.render import emit
from bench.harness.reporting.runs import ordered, present
from bench.harness.reporting.tables import NA, Directions, metric_header


@dataclass
class Context:
    """What the tables are made from: the runs' rows (each cell once), fit costs and
    records, and where the files go; and what follows from them, worked out once."""
    cells: pd.DataFrame
    costs: pd.DataFrame
    run_dirs: list[Path]
    records: list[RunRecord]  # of the runs that have one, in order
    output: Path

    @property
    def groups(self) -> dict:
        """Which bypasses make up which table: the first run's configuration."""
        return self.records[0].report_groups if self.records else {}

    def bypasses(self, group: str) -> list[str]:
        """The bypasses of the configuration's `group` that the rows have."""
        return present(self.cells, self.groups.get(group))

    @cached_property
    def skipped(self) -> dict:
        """Metrics some run skipped (weights missing) and no run computed: name -> why."""
        skipped = {}
        for record in self.records:
            for name, reason in record.metrics_skipped.items():
                if not (self.cells.metric == name).any():
                    skipped.setdefault(name, reason)
        return skipped

    @cached_property
    def metric_specs(self) -> dict[str, dict]:
        """Each metric's spec as the runs recorded it (run.json `metrics`, and the specs of
        the metrics a run could not compute)."""
        specs: dict[str, dict] = {}
        for record in self.records:
            for name, spec in {**record.skipped_metric_specs, **record.metrics}.items():
                specs.setdefault(name, spec)
        return specs

    @cached_property
    def directions(self) -> Directions:
        return Directions.of(self.cells, self.metric_specs)

    @cached_property
    def semantic(self) -> tuple[str, str | None]:
        """The CLIP score or its stand-in, and the note saying which."""
        return tables.semantic_metric(self.cells, self.metric_specs, self.skipped)

    @cached_property
    def loss_curves(self) -> dict:
        """The gating ablation's fine-tuning loss curves, {(generator, bypass): losses}, from
        the first run folder that has each."""
        curves = {}
        for g in ordered(self.cells.generator, ()):
            for b in self.bypasses("gating"):
                found = [d / f"loss_curve_{g}_{b}.json" for d in self.run_dirs
                         if (d / f"loss_curve_{g}_{b}.json").exists()]
                if found:
                    curves[(g, b)] = json.loads(found[0].read_text())
        return curves


@dataclass(frozen=True)
class TableSpec:
    stem: str
    title: str | Callable[[Context], str]
    make: Callable[[Context], Table]
    note: Callable[[Context, Table], str | None] | None = None
    figure: Callable[[Context, Table], None] | None = None
    float_format: str = "%.4f"

    def render(self, ctx: Context) -> str | None:
        """The table's Markdown (its CSV and LaTeX written), or None where the run lacks it."""
        table = self.make(ctx)
        if table.empty:
            return None
        if self.figure is not None:
            self.figure(ctx, table)
        title = self.title(ctx) if callable(self.title) else self.title
        return emit(ctx.output, self.stem, table, title, self.float_format,
                    self.note(ctx, table) if self.note else None)


@dataclass(frozen=True)
class TextSpec:
    """A line of text between the tables."""
    text: Callable[[Context], str | None]

    def render(self, ctx: Context) -> str | None:
        return self.text(ctx)


# --- notes --------------------------------------------------------------------------------
PAIRS_NOTE = " ± (pair metrics): half the width of the 95% bootstrap interval over images, as under Table I."


def quality_note(reference: str) -> str:
    return (f"n: outputs per cell. Reference: {reference}. FID is biased upward at small n (KID is not); compare "
            "values of the same n only.")


def na_note(ctx: Context, table: Table) -> str:
    """Why the table's n/a columns are n/a (their metric's weights were missing)."""
    shown = {c[1] for c in table.value.columns if (table.value[c] == NA).any()}
    if not shown:
        return ""
    headers = {m: metric_header(m, ctx.directions) for m in ctx.skipped}
    return "".join(f" {headers[m]} n/a: {why}" for m, why in ctx.skipped.items() if headers[m] in shown)


def images_note(cells: pd.DataFrame) -> str:
    """How many images each cell's intervals rest on (or that the rows have no intervals)."""
    per_image = cells["per_image"] if "per_image" in cells else pd.Series(dtype=object)
    sizes = [len(p) for p in per_image if isinstance(p, list)]
    if not sizes:
        return "No intervals: these rows keep no per-image values (made before they did)."
    return intervals.note(sizes)


# --- the tables that need more than one call -----------------------------------------------
def table1_bypasses(ctx: Context) -> list[str] | None:
    return ctx.bypasses("table1") or None


def table3(ctx: Context) -> Table:
    spec = ctx.groups.get("table3") or {}
    chosen = present(ctx.cells, spec.get("bypasses"))
    return tables.table3(ctx.cells, ctx.costs, spec["defense"], chosen) if len(chosen) > 1 else EMPTY


def table5(ctx: Context) -> Table:
    spec = ctx.groups.get("table5") or {}
    if not present(ctx.cells, [spec.get("without"), spec.get("with")]):
        return EMPTY
    return tables.table5(ctx.cells, spec, ctx.semantic[0], ctx.skipped, ctx.directions)


def table5_note(ctx: Context, table: Table) -> str:
    semantic = ctx.semantic[1]
    note = "Reference: the marked fakes; adversarial: mean over the run's defenses." + PAIRS_NOTE + na_note(ctx, table)
    return note + (f" {semantic}" if semantic else "")


def table6(ctx: Context) -> Table:
    ranks = ctx.bypasses("table6")
    return tables.averaged_over_defenses(ctx.cells, ranks) if len(ranks) > 1 else EMPTY


def table6_note(ctx: Context, _: Table) -> str:
    _, left_out = tables.protected_by_common_defenses(ctx.cells, ctx.bypasses("table6"))
    note = "Mean over the defenses scored with every rank on the generator."
    return note + (f" Left out, scored with only some ranks: {', '.join(left_out)}." if left_out else "")


def has_leakage(ctx: Context) -> bool:
    return (scored(ctx.cells, LEAKAGE).metric == "dsr").any()


def gating(ctx: Context) -> Table:
    curves = ctx.loss_curves
    return tables.loss_summary(curves) if len({b for _, b in curves}) > 1 else EMPTY  # with and without gates


def image_grids(ctx: Context) -> str | None:
    grids = {"Fig. 6 (leakage scenario)": figures_of(ctx.run_dirs, "fig6_leakage_*.png"),
             "Fig. 7 (defensive patching)": figures_of(ctx.run_dirs, "fig7_defensive_*.png")}
    listed = [f"{name}: {', '.join(files)}" for name, files in grids.items() if files]
    return "Image grids in the run folder: " + "; ".join(listed) + "\n" if listed else None


def figures_of(run_dirs: list[Path], pattern: str) -> list[str]:
    return sorted({p.name for d in run_dirs for p in d.glob(pattern)})


def edits_by_target(ctx: Context) -> Table:
    return tables.edit_table(ctx.cells, by_target=True) if not tables.edit_table(ctx.cells).empty else EMPTY


def defense_fits(ctx: Context) -> Table:
    return tables.defense_fit_table(ctx.records[0].defense_fits) if ctx.records else EMPTY


REPORT = [
    TableSpec("table1", "Table I: bypassing proactive defenses (standard scenario)",
              lambda ctx: tables.table1(ctx.cells, bypasses=table1_bypasses(ctx)),
              note=lambda ctx, _: images_note(ctx.cells)),
    TableSpec("summary", "Every bypass against the defenses: mean and worst-case DSR (standard scenario)",
              lambda ctx: tables.defense_summary(ctx.cells),
              note=lambda ctx, _: "Intervals of the mean and of the worst case resample the images of all the "
                                  "defenses' cells together."),
    TableSpec("table2", "Table II: impact of each bypass on benign outputs",
              lambda ctx: tables.table2(ctx.cells, ctx.bypasses("table2"), ctx.skipped, ctx.directions),
              note=lambda ctx, t: quality_note("the original generator's outputs on the same clean images "
                                               "(BRISQUE: the outputs alone)") + PAIRS_NOTE + na_note(ctx, t)),
    TableSpec("table3", lambda ctx: f"Table III: adversarial training vs LoRA patching against "
                                    f"{ctx.groups['table3']['defense']}", table3),
    TableSpec("table4", "Table IV: defensive LoRA patching, quality of its outputs",
              lambda ctx: tables.table4(ctx.cells, ctx.bypasses("table4"), ctx.skipped, ctx.directions),
              note=lambda ctx, t: quality_note("the marked fakes (the original generator's outputs with the warning "
                                               "mark); adversarial: mean over the run's defenses") + na_note(ctx, t)),
    TableSpec("table5", "Table V: MMFA loss in defensive LoRA patching", table5, note=table5_note),
    TableSpec("table6", "Table VI: LoRA rank (mean over the defenses)", table6, note=table6_note),
    TableSpec("leakage", "Fig. 5: leakage scenario, mean DSR over its defenses (the defender perturbs against the "
                         "bypassed pipeline)",
              lambda ctx: tables.leakage_comparison(ctx.cells),
              figure=lambda ctx, t: save_grouped_bars(t, ctx.output / "fig5_leakage.png",
                                                      "mean DSR over the defenses\n(lower: the bypass works)")),
    TableSpec("table1_leakage", "Leakage scenario, every cell",
              lambda ctx: tables.table1(ctx.cells, LEAKAGE) if has_leakage(ctx) else EMPTY),
    TableSpec("transfer", "Transfer: DSR of protections made against other generators (no bypass; figure: "
                          "fig_transfer.png)",
              lambda ctx: tables.transfer_matrix(ctx.cells),
              note=lambda ctx, _: tables.TRANSFER_NOTE + " " + images_note(ctx.cells),
              figure=lambda ctx, t: save_matrices(t, ctx.output / "fig_transfer.png",
                                                  "DSR of protections (rows: made against; dark 0, yellow 1)",
                                                  "edited by")),
    TableSpec("transfer_summary", "Transfer: each defense on the generators it was not made against",
              lambda ctx: tables.transfer_summary(ctx.cells),
              note=lambda ctx, _: "Worst: the lowest DSR over the transfer scenario's cells (source, editing "
                                  "generator), with its interval over images; seen: the standard scenario."),
    TableSpec("defensive", "Defensive patching: the mark in benign and protected outputs",
              lambda ctx: tables.defensive_table(ctx.cells, ctx.bypasses("defensive"))),
    TableSpec("gating", "Gating ablation (Fig. 8: fig8_gating.png): fine-tuning loss", gating,
              figure=lambda ctx, _: save_loss_curves(ctx.loss_curves, ctx.output / "fig8_gating.png", every=10)),
    TextSpec(image_grids),
    TableSpec("identity", "Identity: FaceNet similarity of the outputs to the original fake and to the clean input face",
              lambda ctx: tables.identity_table(ctx.cells, ctx.skipped, ctx.directions),
              note=lambda ctx, t: "n: outputs per cell. The clean edits' similarity to the input is the baseline: "
                                  "an edit changes a face, and a disrupted output keeps less of the person."
                                  + PAIRS_NOTE + na_note(ctx, t)),
    TableSpec("edit_success", "Edit success (attribute classifier): does the output still show the asked edit? "
                              "control = same test with no edit asked", lambda ctx: tables.edit_table(ctx.cells)),
    TableSpec("edit_success_targets", "Edit success of the clean outputs, per target", edits_by_target),
    TableSpec("training", "Trainable bypasses: training cost", lambda ctx: tables.training_table(ctx.costs),
              float_format="%.2f"),
    TableSpec("defense_fits", "Fitted defenses (fit_seconds: the run that fitted them)", defense_fits,
              float_format="%.2f"),
]
