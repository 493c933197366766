"""The report's tables, each made from a run's rows by one function that returns a
`Table` (its values and, where it has them, the ends of their 95% intervals). Which
bypasses make up which table comes from the run's configuration (`report` in its
profile, recorded in run.json), so no table knows a method by name."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.contract.errors import BenchError
from bench.contract.results import (
    ALL_TARGETS,
    LEAKAGE,
    MARKED,
    NONE,
    OUTSIDE_MARK,
    STANDARD,
    is_across,
    recent_mean,
    transfer_source,
)
from bench.harness.reporting.estimates import EMPTY, TABLE1_METRICS, Table, estimates, scored
from bench.harness.reporting.runs import ordered

ARROWS = {True: "↑", False: "↓"}
NA = "n/a"
LABELS = {"l2": "L2", "ssim": "SSIM", "dsr": "DSR", "fid": "FID", "kid": "KID", "brisque": "BRISQUE",
          "clip_score": "CLIP score", "classifier_cosine": "classifier cosine",
          "identity_to_fake": "identity to fake", "identity_to_input": "identity to input"}
IDENTITY_METRICS = ["identity_to_fake", "identity_to_input"]
SCALES = {"kid": 1000}  # KID is printed in thousandths, as usual (3 decimals would hide it)
CLEAN_INPUTS, NO_BYPASS = "(clean input)", "no bypass"  # how tables name defense and bypass NONE


def table1(cells: pd.DataFrame, scenario: str = STANDARD, bypasses: list[str] | None = None) -> Table:
    """Rows (defense, bypass); columns (generator, metric with arrow); defense NONE is
    each bypass on clean images (its benign impact)."""
    df = scored(cells, scenario, bypasses=bypasses)
    if df.empty:
        raise BenchError("no L2/SSIM/DSR rows to tabulate")
    arrows = {m: ARROWS[bool(h)] for m, h in df.groupby("metric")["higher_is_better"].first().items()}
    df = df.assign(metric=df.metric.map(lambda m: f"{m.upper()}{arrows[m]}"))
    df = estimates(df, ["defense", "bypass", "generator", "metric"])
    defenses = ordered(df.defense, first=())
    defenses = [d for d in defenses if d != NONE] + ([NONE] if NONE in defenses else [])
    bypasses = ordered(df.bypass)
    columns = [(g, f"{m.upper()}{arrows[m]}") for g in ordered(df.generator, ()) for m in TABLE1_METRICS
               if m in arrows]

    def shape(field: str) -> pd.DataFrame:
        table = df.pivot(index=["defense", "bypass"], columns=["generator", "metric"], values=field)
        index = [(d, b) for d in defenses for b in bypasses if (d, b) in table.index]
        table = table.reindex(index=index, columns=columns)
        table.index = table.index.set_names(["defense", "bypass"])
        return table.rename(index={NONE: CLEAN_INPUTS}, level=0).rename(index={NONE: NO_BYPASS}, level=1)

    return Table.of(shape)


def defense_summary(cells: pd.DataFrame, scenario: str = STANDARD, bypasses: list[str] | None = None) -> Table:
    """Per generator and bypass: DSR averaged over the defenses and its worst case (the
    highest DSR, i.e. the defense the bypass copes with least), as RobustBench ranks."""
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[(df.metric == "dsr") & (df.defense != NONE)]
    if df.empty:
        return EMPTY
    keys = ["generator", "bypass"]
    mean, worst = estimates(df, keys, "mean").set_index(keys), estimates(df, keys, "max").set_index(keys)

    def shape(field: str) -> pd.DataFrame:
        table = pd.DataFrame({"mean DSR↓": mean[field], "worst DSR↓": worst[field], "defenses": mean["count"]})
        table = table.unstack("generator").swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
        counts = [c for c in table.columns if c[1] == "defenses"]
        table[counts] = table[counts].astype("Int64")  # whole numbers, blank where a generator lacks the bypass
        return table

    return Table.of(shape)


def table3(cells: pd.DataFrame, costs: pd.DataFrame, defense: str, bypasses: list[str]) -> Table:
    """Adversarial training vs LoRA patching against one defense: L2, SSIM, DSR, training
    time and trainable parameters per generator (the costs have no interval)."""
    df = scored(cells, bypasses=bypasses)
    df = df[df.defense == defense]
    if df.empty:
        return EMPTY
    df = estimates(df, ["bypass", "generator", "metric"])
    cost = costs[costs.bypass.isin(bypasses)].assign(low=np.nan, high=np.nan)
    both = pd.concat([df, cost])
    metrics = [m for m in ["l2", "ssim", "dsr", "train_seconds", "trainable_params"] if m in set(both.metric)]
    names = {"l2": "L2↓", "ssim": "SSIM↑", "dsr": "DSR↓", "train_seconds": "train s↓", "trainable_params": "params↓"}

    def shape(field: str) -> pd.DataFrame:
        table = both.pivot(index="bypass", columns=["generator", "metric"], values=field)
        table = table.reindex(index=[b for b in bypasses if b in table.index],
                              columns=[(g, m) for g in ordered(both.generator, ()) for m in metrics])
        for column in [c for c in table.columns if c[1] == "trainable_params" and field == "value"]:
            table[column] = table[column].astype("Int64")
        table.columns = pd.MultiIndex.from_tuples([(g, names[m]) for g, m in table.columns])
        return table

    return Table.of(shape)


def protected_by_common_defenses(cells: pd.DataFrame, bypasses: list[str], scenario: str = STANDARD
                                 ) -> tuple[pd.DataFrame, list[str]]:
    """The protected cells of the defenses scored with every one of `bypasses` on their
    generator (a report merging runs of other defense sets compares bypasses over the
    same defenses), and the defenses left out."""
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[df.defense != NONE]
    present = df.groupby(["generator", "bypass"]).defense.agg(frozenset)
    common = {g: frozenset.intersection(*sets) for g, sets in present.groupby(level=0)}
    keep = pd.Series([d in common[g] for g, d in zip(df.generator, df.defense)], index=df.index, dtype=bool)
    return df[keep], sorted(set(df.defense[~keep]))


def averaged_over_defenses(cells: pd.DataFrame, bypasses: list[str], scenario: str = STANDARD) -> Table:
    """Rows bypass; columns (generator, L2/SSIM/DSR) averaged over the protected cells of
    the defenses scored with every bypass."""
    df, _ = protected_by_common_defenses(cells, bypasses, scenario)
    if df.empty:
        return EMPTY
    df = estimates(df, ["bypass", "generator", "metric"], "mean")

    def shape(field: str) -> pd.DataFrame:
        table = df.pivot(index="bypass", columns=["generator", "metric"], values=field)
        table = table.reindex(index=[b for b in bypasses if b in table.index],
                              columns=[(g, m) for g in ordered(df.generator, ()) for m in TABLE1_METRICS])
        table.columns = pd.MultiIndex.from_tuples([(g, f"{m.upper()}{ARROWS[m == 'ssim']}")
                                                   for g, m in table.columns])
        return table

    return Table.of(shape)


def defensive_table(cells: pd.DataFrame, bypasses: list[str]) -> Table:
    """Defensive patches: SSIM and L2 of the outputs to the marked fake and the mark's
    recovery inside its region (is the mark there?), and, with the mark region taken
    from the original fake, SSIM and L2 to the original fake (is the rest unchanged?);
    on clean inputs, averaged over protected ones and the worst protected one."""
    rows = []
    for reference in (MARKED, OUTSIDE_MARK):
        df = scored(cells, reference=reference, bypasses=bypasses, metrics=["l2", "ssim", "mark_recovery"])
        for (generator, bypass, metric), group in df.groupby(["generator", "bypass", "metric"], sort=False):
            clean, protected = group[group.defense == NONE], group[group.defense != NONE]
            label = ("mark recovery, inside mark" if metric == "mark_recovery" else
                     f"{metric.upper()} to {'marked fake' if reference == MARKED else 'fake, outside mark'}")
            worst = "max" if metric == "l2" else "min"
            statistics = {"benign": (clean, "mean"), "protected (mean)": (protected, "mean"),
                          "protected (worst)": (protected, worst)}
            found = {name: estimates(part, ["metric"], how).iloc[0] if len(part) else None
                     for name, (part, how) in statistics.items()}
            rows.append(({"generator": generator, "bypass": bypass, "metric": label}, found))
    if not rows:
        return EMPTY

    def shape(field: str) -> pd.DataFrame:
        return pd.DataFrame([{**key, **{name: None if e is None else e[field] for name, e in found.items()}}
                             for key, found in rows]).set_index(["generator", "bypass", "metric"]).astype(float)

    return Table.of(shape)


def leakage_comparison(cells: pd.DataFrame, bypasses: list[str] | None = None) -> Table:
    """Per generator and bypass: mean DSR over the leakage scenario's defenses, in the
    standard scenario (same defenses) and in the leakage scenario (Fig. 5)."""
    leak = scored(cells, LEAKAGE, bypasses=bypasses)
    leak = leak[leak.metric == "dsr"]
    if leak.empty:
        return EMPTY
    pairs = set(zip(leak.generator, leak.defense, leak.bypass))
    std = scored(cells, STANDARD, bypasses=bypasses)
    same_cells = pd.Series([k in pairs for k in zip(std.generator, std.defense, std.bypass)], index=std.index,
                           dtype=bool)
    std = std[(std.metric == "dsr") & same_cells]
    both = estimates(pd.concat([std.assign(scenario=STANDARD), leak]), ["generator", "bypass", "scenario"], "mean")

    def shape(field: str) -> pd.DataFrame:
        table = both.pivot(index=["generator", "bypass"], columns="scenario", values=field)
        table = table.reindex(list(dict.fromkeys(zip(both.generator, both.bypass))))
        table = table.reindex(columns=[STANDARD, LEAKAGE])
        table.columns = ["DSR standard↓", "DSR leakage↓"]
        return table

    return Table.of(shape)


class Directions:
    """metric -> higher is better (None: unknown), from the rows, else from the specs the
    runs recorded. A metric no run computed (its weights were missing) is looked up in
    the installed metrics, which loads its module and libraries: only where a table
    shows it."""

    def __init__(self, known: dict[str, bool]):
        self.known: dict[str, bool | None] = dict(known)

    @classmethod
    def of(cls, cells: pd.DataFrame, recorded: dict[str, dict] | None = None) -> Directions:
        known = {m: bool(h) for m, h in cells.groupby("metric")["higher_is_better"].first().items()} \
            if "higher_is_better" in cells else {}
        for name, spec in (recorded or {}).items():
            known.setdefault(name, bool(spec["higher_is_better"]))
        return cls(known)

    def __call__(self, metric: str) -> bool | None:
        if metric not in self.known:
            spec = installed_spec(metric)
            self.known[metric] = None if spec is None else bool(spec["higher_is_better"])
        return self.known[metric]


def installed_spec(metric: str) -> dict | None:
    """An installed metric's spec (None where it is not installed)."""
    from bench.contract.registry import registry

    try:
        return registry("metrics").get(metric).info()
    except BenchError:
        return None


def installed_specs() -> dict[str, dict]:
    from bench.contract.registry import registry

    return {name: spec for name in registry("metrics").names() if (spec := installed_spec(name)) is not None}


def semantic_metric(cells: pd.DataFrame, recorded: dict[str, dict], skipped: dict) -> tuple[str, str | None]:
    """The CLIP score where the rows have it, else its stand-in (and the note saying so),
    as the runs recorded the metrics' specs (else as installed)."""
    if (cells.metric == "clip_score").any():
        return "clip_score", None
    for name, spec in (recorded or installed_specs()).items():
        if spec.get("stand_in_for") == "clip_score" and (cells.metric == name).any():
            why = skipped.get("clip_score", "the run did not compute the CLIP score")
            return name, f"{LABELS.get(name, name)} stands in for the CLIP score ({why}): {spec.get('description')}"
    return "clip_score", None


def metric_header(metric: str, directions: Directions) -> str:
    """'FID↓': the metric's label, scale and direction (`directions(metric)`: higher is
    better; a metric without one gets its label alone)."""
    higher = directions(metric)
    if higher is None:
        return LABELS.get(metric, metric)
    scale = f"×{SCALES[metric]:g}" if metric in SCALES else ""
    return f"{LABELS.get(metric, metric)}{scale}{ARROWS[bool(higher)]}"


def quality_table(df: pd.DataFrame, index: list[str], metrics: list[str], skipped: dict | None,
                  directions: Directions | None) -> Table:
    """Rows `index`; columns (generator, metric with its direction) and (generator, n): the
    outputs behind each value. A value is the mean of its cells (pair metrics with their
    interval over images). Metrics the run skipped print as "n/a"."""
    skipped, directions = skipped or {}, directions or Directions.of(df)
    generators = ordered(df.generator, ())
    found = estimates(df, [*index, "generator", "metric"], "mean")
    n = df.pivot_table(index=index, columns="generator", values="n", aggfunc="max", sort=False)

    def shape(field: str) -> pd.DataFrame:
        table = found.pivot_table(index=index, columns=["generator", "metric"], values=field, aggfunc="first",
                                  sort=False, dropna=False)
        columns, data = [], {}
        for g in generators:
            for m in metrics:
                columns.append((g, metric_header(m, directions)))
                missing = NA if m in skipped else None
                data[columns[-1]] = table[(g, m)] * SCALES.get(m, 1) if (g, m) in table else missing
            columns.append((g, "n"))
            data[columns[-1]] = n[g].astype("Int64") if g in n else None
        out = pd.DataFrame(data, index=n.index)
        out.columns = pd.MultiIndex.from_tuples(columns)
        return out

    return Table.of(shape)


def table2(cells: pd.DataFrame, bypasses: list[str], skipped: dict | None = None,
           directions: Directions | None = None) -> Table:
    """Table II: each bypass on clean inputs (its benign outputs) against the original
    generator's outputs on the same images: FID, KID and SSIM to them, BRISQUE of the
    outputs themselves."""
    metrics = ["fid", "kid", "ssim", "brisque"]
    df = scored(cells, bypasses=bypasses, metrics=metrics)
    df = df[df.defense == NONE]
    if df.empty:
        return EMPTY
    table = quality_table(df, ["bypass"], metrics, skipped, directions)
    return table.map(lambda t: t.reindex([b for b in bypasses if b in t.index]))


def identity_table(cells: pd.DataFrame, skipped: dict | None = None, directions: Directions | None = None) -> Table:
    """How much of the person each cell's outputs keep (standard scenario): FaceNet
    similarity to the original fake and to the clean input face, for the clean edits
    (defense NONE, bypass NONE), each bypass's benign outputs and every protected cell."""
    df = scored(cells, metrics=IDENTITY_METRICS)
    if df.empty:
        return EMPTY
    df = df.assign(defense=df.defense.replace({NONE: CLEAN_INPUTS}), bypass=df.bypass.replace({NONE: NO_BYPASS}))
    table = quality_table(df, ["defense", "bypass"], IDENTITY_METRICS, skipped, directions)
    defenses = [d for d in ordered(df.defense, first=()) if d != CLEAN_INPUTS]
    bypasses = ordered(df.bypass, first=(NO_BYPASS,))
    order = [(d, b) for d in [CLEAN_INPUTS, *defenses] for b in bypasses]
    return table.map(lambda t: t.reindex([k for k in order if k in t.index]))


OTHERS = "the others (universal fit)"  # a universal defense fitted across the generators but the editing one
ALL_FITTED = "all (universal fit)"  # the same fitted across every generator (the standard scenario)
TRANSFER_NOTE = ("Rows: the generators a protection was made against; columns: the generator that edits. "
                 "The diagonal is the standard scenario. Off the diagonal, every image made for a face (one "
                 "per target of its source) meets every edit of the editing generator.")


def transfer_rows(cells: pd.DataFrame) -> pd.DataFrame:
    """DSR rows of the transfer scenario with their source ("made against"; a universal
    fit across several generators is OTHERS), and the standard scenario's as the
    diagonal (made against the generator itself, or across all for a universal fit)."""
    dsr = cells[(cells.metric == "dsr") & (cells.defense != NONE) & (cells.bypass == NONE)]
    sources = dsr.scenario.map(transfer_source)
    moved = dsr[sources.notna()]
    if moved.empty:
        return moved
    moved = moved.assign(source=sources[sources.notna()].map(lambda s: OTHERS if is_across(s) else s))
    universal = set(moved.defense[moved.source == OTHERS])
    seen = scored(cells, metrics=["dsr"])
    seen = seen[seen.defense.isin(set(moved.defense)) & (seen.bypass == NONE)]
    seen = seen.assign(source=[ALL_FITTED if d in universal else g for d, g in zip(seen.defense, seen.generator)])
    return pd.concat([seen, moved], ignore_index=True)


def transfer_matrix(cells: pd.DataFrame) -> Table:
    """Per defense, DSR of the protection made against each source (rows) when each
    generator edits (columns), with 95% intervals over images."""
    df = transfer_rows(cells)
    if df.empty:
        return EMPTY
    found = estimates(df, ["defense", "source", "generator"])
    generators = ordered(df.generator, ())
    defenses = ordered(df.defense, ())
    rows = [(d, s) for d in defenses for s in [*generators, ALL_FITTED, OTHERS]
            if ((found.defense == d) & (found.source == s)).any()]

    def shape(field: str) -> pd.DataFrame:
        table = found.pivot_table(index=["defense", "source"], columns="generator", values=field, aggfunc="first",
                                  sort=False, dropna=False)
        table = table.reindex(index=rows, columns=generators)
        table.columns = [f"{g} DSR↓" for g in generators]
        table.index = table.index.set_names(["defense", "made against"])
        return table

    return Table.of(shape)


def transfer_summary(cells: pd.DataFrame) -> Table:
    """Per defense: its DSR on the generators it never saw, worst (lowest) and mean over
    the transfer scenario's cells, beside its mean on the generators it was made
    against."""
    df = transfer_rows(cells)
    if df.empty:
        return EMPTY
    moved = df.scenario.map(transfer_source).notna()
    unseen, seen = df[moved], df[~moved]
    worst, mean = estimates(unseen, ["defense"], "min").set_index("defense"), \
        estimates(unseen, ["defense"], "mean").set_index("defense")
    own = estimates(seen, ["defense"], "mean").set_index("defense")

    def shape(field: str) -> pd.DataFrame:
        table = pd.DataFrame({"seen: mean DSR": own[field], "unseen: mean DSR": mean[field],
                              "unseen: worst DSR": worst[field], "unseen cells": worst["count"]})
        table["unseen cells"] = table["unseen cells"].astype("Int64")
        return table.reindex(ordered(df.defense, ()))

    return Table.of(shape)


def with_output(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of clean inputs are 'benign' outputs; of protected inputs, 'adversarial'."""
    return df.assign(output=df.defense.map(lambda d: "benign" if d == NONE else "adversarial"))


def table4(cells: pd.DataFrame, bypasses: list[str], skipped: dict | None = None,
           directions: Directions | None = None) -> Table:
    """Table IV: a defensive patch's benign and adversarial outputs (the latter averaged
    over the run's defenses) against the marked fakes it means to produce: FID and KID
    to them, BRISQUE of the outputs (printed without intervals)."""
    metrics = ["fid", "kid", "brisque"]
    df = scored(cells, reference=MARKED, bypasses=bypasses, metrics=metrics)
    if df.empty:
        return EMPTY
    table = quality_table(with_output(df), ["bypass", "output"], metrics, skipped, directions).value
    return Table(table.reindex([(b, o) for b in bypasses for o in ("benign", "adversarial") if (b, o) in table.index]))


def table5(cells: pd.DataFrame, spec: dict, semantic: str, skipped: dict | None = None,
           directions: Directions | None = None) -> Table:
    """Table V: the defensive patch without and with MMFA (`spec`: {"without": bypass,
    "with": bypass}), SSIM and `semantic` (the CLIP score or its stand-in) of its benign
    and adversarial outputs to the marked fakes."""
    names = {spec.get("without"): "w/o", spec.get("with"): "w/"}
    df = scored(cells, reference=MARKED, bypasses=[b for b in names if b], metrics=["ssim", semantic])
    if df.empty:
        return EMPTY
    df = with_output(df).assign(MMFA=df.bypass.map(names))
    table = quality_table(df, ["MMFA", "output"], ["ssim", semantic], skipped, directions)
    order = [(m, o) for m in ("w/o", "w/") for o in ("benign", "adversarial")]
    return table.map(lambda t: t.reindex([k for k in order if k in t.index]))


def edit_table(cells: pd.DataFrame, scenario: str = STANDARD, by_target: bool = False) -> Table:
    """Edit success, its no-edit control and the gain (success - control) per cell;
    with `by_target`, the clean outputs' values per target."""
    metrics = ["edit_success", "edit_success_control"]
    if "target" not in cells or not cells.metric.isin(metrics).any():
        return EMPTY
    df = cells[(cells.scenario == scenario) & cells.metric.isin(metrics)]
    if by_target:
        df = df[(df.defense == NONE) & (df.bypass == NONE)]
        index = ["generator", "target"]
    else:
        df = df[df.target == ALL_TARGETS]
        index = ["generator", "defense", "bypass"]
    table = df.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    table = table.reindex(columns=metrics)
    table["gain"] = table["edit_success"] - table["edit_success_control"]
    table.columns = ["edit success↑", "control", "gain↑"]
    return Table(table)


def training_table(costs: pd.DataFrame) -> Table:
    """Per (generator, bypass): its fit's training seconds and trainable parameters."""
    if costs.empty:
        return EMPTY
    table = costs.pivot_table(index=["generator", "bypass"], columns="metric", values="value", aggfunc="first")
    if "trainable_params" in table:  # a count, printed as one
        table["trainable_params"] = table["trainable_params"].astype("Int64")
    return Table(table)


def defense_fit_table(defense_fits: list[dict]) -> Table:
    """What each learned or universal defense was fitted against (in the leakage scenario:
    the generators behind which bypass), and what it cost."""
    rows = [{"defense": f["defense"], "scope": f["scope"], "generators": ", ".join(f["generators"]) or "-",
             "scenario": f.get("scenario", STANDARD) + (f" ({f['against']})" if f.get("against") else ""),
             "fit_seconds": f.get("fit_seconds"), "from cache": f.get("cache_hit")} for f in defense_fits]
    return Table(pd.DataFrame(rows).set_index("defense")) if rows else EMPTY


def loss_summary(curves: dict) -> Table:
    """First, last-tenth and highest loss of each fine-tuning curve."""
    rows = [{"generator": g, "bypass": b, "steps": len(c), "first 10 steps": sum(c[:10]) / len(c[:10]),
             "last 10%": recent_mean(c), "max": max(c)} for (g, b), c in curves.items() if c]
    return Table(pd.DataFrame(rows).set_index(["generator", "bypass"]))
