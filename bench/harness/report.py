"""Turn `cells.jsonl` rows into the paper's tables (CSV, Markdown and LaTeX) and figures.

Which bypasses make up which table comes from the run's configuration (`report` in
its profile, recorded in run.json), so the report knows no method by name:
Table I (bypasses of `table1`), a worst-case summary over the defenses, Table II
(`table2`: image quality of each bypass's benign outputs), Table III (`table3`:
adversarial training vs LoRA against one defense, with training cost), Table IV
(`table4`: image quality of defensive patches), Table V (`table5`: a defensive patch
without and with MMFA), Table VI (`table6`: the rank sweep), the leakage scenario
(Fig. 5), defensive patching (`defensive`: scored against the marked fake) and the
gating ablation's loss curves (`gating`, Fig. 8). A metric a run could not compute
(its weights were missing) prints as "n/a", with the reason under the table.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.contract.errors import BenchError
from bench.contract.io import atomic_write_text
from bench.harness import intervals
from bench.harness.results import first_of_each_cell, read_cells, read_costs, read_meta

ARROWS = {True: "↑", False: "↓"}
TABLE1_METRICS = ["l2", "ssim", "dsr"]
NA = "n/a"
LABELS = {"l2": "L2", "ssim": "SSIM", "dsr": "DSR", "fid": "FID", "kid": "KID", "brisque": "BRISQUE",
          "clip_score": "CLIP score", "classifier_cosine": "classifier cosine"}
SCALES = {"kid": 1000}  # KID is printed in thousandths, as usual (3 decimals would hide it)


def ordered(values, first=("none",)) -> list:
    """Keep the run's order but put the baseline first."""
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


def scored(cells: pd.DataFrame, scenario: str = "standard", reference: str = "original",
           bypasses: list[str] | None = None, metrics=TABLE1_METRICS) -> pd.DataFrame:
    """The rows of `metrics` (default L2/SSIM/DSR) of one scenario scored against `reference`
    (runs before defensive patching have no reference column: all theirs are "original"),
    optionally of some bypasses only."""
    refs = cells["reference"].fillna("original") if "reference" in cells else pd.Series("original", cells.index)
    df = cells[(cells.scenario == scenario) & (refs == reference) & cells.metric.isin(metrics)]
    return df if bypasses is None else df[df.bypass.isin(bypasses)]


FIELDS = ("value", "low", "high")  # what a table shows: the estimate or an end of its 95% interval
STATISTICS = {"mean": np.mean, "max": np.max, "min": np.min}


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


def check_field(field: str) -> None:
    if field not in FIELDS:
        raise BenchError(f"a table shows one of {FIELDS}, not {field!r}")


def table1(cells: pd.DataFrame, scenario: str = "standard", bypasses: list[str] | None = None,
           field: str = "value") -> pd.DataFrame:
    """Rows (defense, bypass); columns (generator, metric with arrow); defense 'none' is
    each bypass on clean images (its benign impact). `field`: the values, or the low or
    high ends of their intervals."""
    check_field(field)
    df = scored(cells, scenario, bypasses=bypasses)
    if df.empty:
        raise BenchError("no L2/SSIM/DSR rows to tabulate")
    arrows = {m: ARROWS[bool(h)] for m, h in df.groupby("metric")["higher_is_better"].first().items()}
    df = df.assign(metric=df.metric.map(lambda m: f"{m.upper()}{arrows[m]}"))
    df = estimates(df, ["defense", "bypass", "generator", "metric"])
    table = df.pivot(index=["defense", "bypass"], columns=["generator", "metric"], values=field)
    defenses = ordered(df.defense, first=())
    defenses = [d for d in defenses if d != "none"] + (["none"] if "none" in defenses else [])
    bypasses = ordered(df.bypass)
    index = [(d, b) for d in defenses for b in bypasses if (d, b) in table.index]
    columns = [(g, f"{m.upper()}{arrows[m]}") for g in ordered(df.generator, ()) for m in TABLE1_METRICS
               if m in arrows]
    table = table.reindex(index=index, columns=columns)
    table.index = table.index.set_names(["defense", "bypass"])
    return table.rename(index={"none": "(clean input)"}, level=0).rename(index={"none": "no bypass"}, level=1)


def defense_summary(cells: pd.DataFrame, scenario: str = "standard",
                    bypasses: list[str] | None = None, field: str = "value") -> pd.DataFrame:
    """Per generator and bypass: DSR averaged over the defenses and its worst case (the
    highest DSR, i.e. the defense the bypass copes with least), as RobustBench ranks."""
    check_field(field)
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[(df.metric == "dsr") & (df.defense != "none")]
    if df.empty:
        return pd.DataFrame()
    keys = ["generator", "bypass"]
    mean, worst = estimates(df, keys, "mean").set_index(keys), estimates(df, keys, "max").set_index(keys)
    table = pd.DataFrame({"mean DSR↓": mean[field], "worst DSR↓": worst[field], "defenses": mean["count"]})
    table = table.unstack("generator").swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    counts = [c for c in table.columns if c[1] == "defenses"]
    table[counts] = table[counts].astype("Int64")  # whole numbers, blank where a generator lacks the bypass
    return table


def table3(cells: pd.DataFrame, costs: pd.DataFrame, defense: str, bypasses: list[str],
           field: str = "value") -> pd.DataFrame:
    """Adversarial training vs LoRA patching against one defense: L2, SSIM, DSR, training
    time and trainable parameters per generator (the costs have no interval)."""
    check_field(field)
    df = scored(cells, bypasses=bypasses)
    df = df[df.defense == defense]
    if df.empty:
        return pd.DataFrame()
    df = estimates(df, ["bypass", "generator", "metric"])
    cost = costs[costs.bypass.isin(bypasses)]
    cost = cost.assign(low=np.nan, high=np.nan) if field == "value" else cost.assign(**{field: np.nan})
    both = pd.concat([df, cost])
    table = both.pivot(index="bypass", columns=["generator", "metric"], values=field)
    metrics = [m for m in ["l2", "ssim", "dsr", "train_seconds", "trainable_params"] if m in set(both.metric)]
    table = table.reindex(index=[b for b in bypasses if b in table.index],
                          columns=[(g, m) for g in ordered(both.generator, ()) for m in metrics])
    for column in [c for c in table.columns if c[1] == "trainable_params" and field == "value"]:
        table[column] = table[column].astype("Int64")
    names = {"l2": "L2↓", "ssim": "SSIM↑", "dsr": "DSR↓", "train_seconds": "train s↓", "trainable_params": "params↓"}
    table.columns = pd.MultiIndex.from_tuples([(g, names[m]) for g, m in table.columns])
    return table


def averaged_over_defenses(cells: pd.DataFrame, bypasses: list[str], scenario: str = "standard",
                           field: str = "value") -> pd.DataFrame:
    """Rows bypass; columns (generator, L2/SSIM/DSR) averaged over the protected cells."""
    check_field(field)
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[df.defense != "none"]
    if df.empty:
        return pd.DataFrame()
    df = estimates(df, ["bypass", "generator", "metric"], "mean")
    table = df.pivot(index="bypass", columns=["generator", "metric"], values=field)
    table = table.reindex(index=[b for b in bypasses if b in table.index],
                          columns=[(g, m) for g in ordered(df.generator, ()) for m in TABLE1_METRICS])
    table.columns = pd.MultiIndex.from_tuples([(g, f"{m.upper()}{ARROWS[m == 'ssim']}") for g, m in table.columns])
    return table


def defensive_table(cells: pd.DataFrame, bypasses: list[str], field: str = "value") -> pd.DataFrame:
    """Defensive patches: SSIM and L2 of the outputs to the marked fake and the mark's
    recovery inside its region (is the mark there?), and, with the mark region taken
    from the original fake, SSIM and L2 to the original fake (is the rest unchanged?);
    on clean inputs, averaged over protected ones and the worst protected one."""
    check_field(field)
    rows = []
    for reference in ("marked", "outside_mark"):
        df = scored(cells, reference=reference, bypasses=bypasses, metrics=["l2", "ssim", "mark_recovery"])
        for (generator, bypass, metric), group in df.groupby(["generator", "bypass", "metric"], sort=False):
            clean, protected = group[group.defense == "none"], group[group.defense != "none"]
            label = ("mark recovery, inside mark" if metric == "mark_recovery" else
                     f"{metric.upper()} to {'marked fake' if reference == 'marked' else 'fake, outside mark'}")
            worst = "max" if metric == "l2" else "min"
            statistics = {"benign": (clean, "mean"), "protected (mean)": (protected, "mean"),
                          "protected (worst)": (protected, worst)}
            rows.append({"generator": generator, "bypass": bypass, "metric": label,
                         **{name: estimates(part, ["metric"], how)[field].iloc[0] if len(part) else None
                            for name, (part, how) in statistics.items()}})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["generator", "bypass", "metric"]).astype(float)


def leakage_comparison(cells: pd.DataFrame, bypasses: list[str] | None = None,
                       field: str = "value") -> pd.DataFrame:
    """Per generator and bypass: mean DSR over the leakage scenario's defenses, in the
    standard scenario (same defenses) and in the leakage scenario (Fig. 5)."""
    check_field(field)
    leak = scored(cells, "leakage", bypasses=bypasses)
    leak = leak[leak.metric == "dsr"]
    if leak.empty:
        return pd.DataFrame()
    pairs = set(zip(leak.generator, leak.defense, leak.bypass))
    std = scored(cells, "standard", bypasses=bypasses)
    same_cells = pd.Series([k in pairs for k in zip(std.generator, std.defense, std.bypass)], index=std.index,
                           dtype=bool)
    std = std[(std.metric == "dsr") & same_cells]
    both = estimates(pd.concat([std.assign(scenario="standard"), leak]), ["generator", "bypass", "scenario"], "mean")
    table = both.pivot(index=["generator", "bypass"], columns="scenario", values=field)
    table = table.reindex(list(dict.fromkeys(zip(both.generator, both.bypass))))
    table = table.reindex(columns=["standard", "leakage"])
    table.columns = ["DSR standard↓", "DSR leakage↓"]
    return table


@functools.lru_cache(maxsize=None)  # the registry scans the installed packages
def metric_header(metric: str) -> str:
    """'FID↓': the metric's label and direction (from the metric table)."""
    from bench.contract.registry import registry

    try:
        higher = registry("metrics").get(metric).spec.higher_is_better
    except BenchError:  # a metric no longer installed: its label alone
        return LABELS.get(metric, metric)
    scale = f"×{SCALES[metric]:g}" if metric in SCALES else ""
    return f"{LABELS.get(metric, metric)}{scale}{ARROWS[bool(higher)]}"


def quality_table(df: pd.DataFrame, index: list[str], metrics: list[str], skipped: dict,
                  field: str = "value") -> pd.DataFrame:
    """Rows `index`; columns (generator, metric with its direction) and (generator, n): the
    outputs behind each value. A value is the mean of its cells (pair metrics with their
    interval over images: `field`). Metrics the run skipped print as "n/a"."""
    check_field(field)
    generators = ordered(df.generator, ())
    table = estimates(df, [*index, "generator", "metric"], "mean").pivot_table(
        index=index, columns=["generator", "metric"], values=field, aggfunc="first", sort=False, dropna=False)
    n = df.pivot_table(index=index, columns="generator", values="n", aggfunc="max", sort=False)
    columns, data = [], {}
    for g in generators:
        for m in metrics:
            columns.append((g, metric_header(m)))
            missing = NA if m in skipped else None
            data[columns[-1]] = table[(g, m)] * SCALES.get(m, 1) if (g, m) in table else missing
        columns.append((g, "n"))
        data[columns[-1]] = n[g].astype("Int64") if g in n else None
    out = pd.DataFrame(data, index=n.index)
    out.columns = pd.MultiIndex.from_tuples(columns)
    return out


def table2(cells: pd.DataFrame, bypasses: list[str], skipped: dict | None = None,
           field: str = "value") -> pd.DataFrame:
    """Table II: each bypass on clean inputs (its benign outputs) against the original
    generator's outputs on the same images: FID, KID and SSIM to them, BRISQUE of the
    outputs themselves."""
    metrics = ["fid", "kid", "ssim", "brisque"]
    df = scored(cells, bypasses=bypasses, metrics=metrics)
    df = df[df.defense == "none"]
    if df.empty:
        return pd.DataFrame()
    table = quality_table(df, ["bypass"], metrics, skipped or {}, field)
    return table.reindex([b for b in bypasses if b in table.index])


def with_output(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of clean inputs are 'benign' outputs; of protected inputs, 'adversarial'."""
    return df.assign(output=df.defense.map(lambda d: "benign" if d == "none" else "adversarial"))


def table4(cells: pd.DataFrame, bypasses: list[str], skipped: dict | None = None) -> pd.DataFrame:
    """Table IV: a defensive patch's benign and adversarial outputs (the latter averaged
    over the run's defenses) against the marked fakes it means to produce: FID and KID
    to them, BRISQUE of the outputs."""
    metrics = ["fid", "kid", "brisque"]
    df = scored(cells, reference="marked", bypasses=bypasses, metrics=metrics)
    if df.empty:
        return pd.DataFrame()
    table = quality_table(with_output(df), ["bypass", "output"], metrics, skipped or {})
    return table.reindex([(b, o) for b in bypasses for o in ("benign", "adversarial") if (b, o) in table.index])


def semantic_metric(cells: pd.DataFrame, skipped: dict) -> tuple[str, str | None]:
    """The CLIP score where the run has it, else its stand-in (and the note saying so)."""
    from bench.contract.registry import registry

    if (cells.metric == "clip_score").any():
        return "clip_score", None
    metrics = registry("metrics")
    for name in metrics.names():
        try:
            spec = metrics.get(name).spec
        except BenchError:
            continue
        if spec.stand_in_for == "clip_score" and (cells.metric == name).any():
            why = skipped.get("clip_score", "the run did not compute the CLIP score")
            return name, (f"{LABELS.get(name, name)} stands in for the CLIP score ({why}): "
                          f"{spec.description}")
    return "clip_score", None


def table5(cells: pd.DataFrame, spec: dict, skipped: dict | None = None,
           field: str = "value") -> tuple[pd.DataFrame, str | None]:
    """Table V: the defensive patch without and with MMFA (`spec`: {"without": bypass,
    "with": bypass}), SSIM and CLIP score (or its stand-in) of its benign and adversarial
    outputs to the marked fakes."""
    skipped = skipped or {}
    semantic, note = semantic_metric(cells, skipped)
    names = {spec.get("without"): "w/o", spec.get("with"): "w/"}
    df = scored(cells, reference="marked", bypasses=[b for b in names if b], metrics=["ssim", semantic])
    if df.empty:
        return pd.DataFrame(), None
    df = with_output(df).assign(MMFA=df.bypass.map(names))
    table = quality_table(df, ["MMFA", "output"], ["ssim", semantic], skipped, field)
    order = [(m, o) for m in ("w/o", "w/") for o in ("benign", "adversarial")]
    return table.reindex([k for k in order if k in table.index]), note


def edit_table(cells: pd.DataFrame, scenario: str = "standard", by_target: bool = False) -> pd.DataFrame:
    """Edit success, its no-edit control and the gain (success - control) per cell;
    with `by_target`, the clean outputs' values per target."""
    metrics = ["edit_success", "edit_success_control"]
    if "target" not in cells or not cells.metric.isin(metrics).any():
        return pd.DataFrame()
    df = cells[(cells.scenario == scenario) & cells.metric.isin(metrics)]
    if by_target:
        df = df[(df.defense == "none") & (df.bypass == "none")]
        index = ["generator", "target"]
    else:
        df = df[df.target == "all"]
        index = ["generator", "defense", "bypass"]
    table = df.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    table = table.reindex(columns=metrics)
    table["gain"] = table["edit_success"] - table["edit_success_control"]
    table.columns = ["edit success↑", "control", "gain↑"]
    return table


def training_table(costs: pd.DataFrame) -> pd.DataFrame:
    """Per (generator, bypass): its fit's training seconds and trainable parameters."""
    if costs.empty:
        return costs
    table = costs.pivot_table(index=["generator", "bypass"], columns="metric", values="value", aggfunc="first")
    if "trainable_params" in table:  # a count, printed as one
        table["trainable_params"] = table["trainable_params"].astype("Int64")
    return table


def defense_fit_table(meta: dict) -> pd.DataFrame:
    """What each learned or universal defense was fitted against (in the leakage scenario:
    the generators behind which bypass), and what it cost."""
    fits = meta.get("defense_fits") or []
    rows = [{"defense": f["defense"], "scope": f["scope"], "generators": ", ".join(f["generators"]) or "-",
             "scenario": f.get("scenario", "standard") + (f" ({f['against']})" if f.get("against") else ""),
             "fit_seconds": f.get("fit_seconds"), "from cache": f.get("cache_hit")} for f in fits]
    return pd.DataFrame(rows).set_index("defense") if rows else pd.DataFrame()


def to_latex(table: pd.DataFrame, title: str, float_digits: int = 3) -> str:
    """A booktabs table (tabular inside table, caption and label), ready to paste."""
    flat = table.copy()
    flat.index = flat.index.set_names([n or "" for n in flat.index.names])
    styler = flat.style.format(precision=float_digits, na_rep="--", escape="latex")
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    label = "tab:" + "".join(c if c.isalnum() else "-" for c in title.split(":")[0].lower()).strip("-")
    text = styler.to_latex(hrules=True, multicol_align="c", caption=title.replace("_", r"\_"), label=label,
                           position_float="centering")
    return (text.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("–", "--")
            .replace("±", r"$\pm$"))


def emit(output: Path, stem: str, table: pd.DataFrame, title: str, float_format: str = "%.4f",
         note: str | None = None, bounds: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> str:
    """Write a table as `stem`.csv and `stem`.tex; return its Markdown (with `note` under it).
    `bounds`: the (low, high) ends of the values' intervals, tables of the same shape:
    the CSV gets both ends beside each value, LaTeX and Markdown print value ± half the
    interval's width."""
    low, high = (b.reindex_like(table) for b in bounds) if bounds is not None else (None, None)
    csv = with_bounds(table, low, high) if bounds is not None else table
    shown = plus_minus(table, low, high) if bounds is not None else table
    atomic_write_text(output / f"{stem}.csv", csv.to_csv(float_format=float_format))
    atomic_write_text(output / f"{stem}.tex", to_latex(shown, title))
    return to_markdown(shown, title) + (f"\n{note}\n" if note else "")


def bounds_of(make_table, *args, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The low and high ends of a table's intervals, made by the same table function."""
    return make_table(*args, field="low", **kwargs), make_table(*args, field="high", **kwargs)


def interval_columns(low: pd.DataFrame) -> list:
    """The columns that have intervals (not counts or costs)."""
    return [c for c in low.columns if pd.api.types.is_float_dtype(low[c]) and low[c].notna().any()]


def with_bounds(table: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame) -> pd.DataFrame:
    """Each value column followed by its interval's two ends."""
    def named(column, end):
        return (*column[:-1], f"{column[-1]} 95% {end}") if isinstance(column, tuple) else f"{column} 95% {end}"

    with_ends = interval_columns(low)
    parts = {}
    for column in table.columns:
        parts[column] = table[column]
        if column in with_ends:
            parts[named(column, "low")], parts[named(column, "high")] = low[column], high[column]
    out = pd.DataFrame(parts, index=table.index)
    if isinstance(table.columns, pd.MultiIndex):
        out.columns = pd.MultiIndex.from_tuples(list(parts))
    return out


def plus_minus(table: pd.DataFrame, low: pd.DataFrame, high: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Values with intervals as text, 'value ± half-width'; the rest unchanged."""
    shown = table.astype(object).copy()
    for column in interval_columns(low):
        for row in table.index:
            value, lo, hi = table.at[row, column], low.at[row, column], high.at[row, column]
            if pd.notna(value) and pd.notna(lo) and pd.notna(hi):
                shown.at[row, column] = f"{value:.{digits}f}{intervals.plus_minus(lo, hi, digits)}"
            elif isinstance(value, float) and pd.notna(value):  # a value without interval beside ones with
                shown.at[row, column] = f"{value:.{digits}f}"
    return shown


def images_note(cells: pd.DataFrame) -> str:
    """How many images each cell's intervals rest on (or that the rows have no intervals)."""
    per_image = cells["per_image"] if "per_image" in cells else pd.Series(dtype=object)
    sizes = [len(p) for p in per_image if isinstance(p, list)]
    if not sizes:
        return "No intervals: these rows keep no per-image values (made before they did)."
    return intervals.note(sizes)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(c) for c in col) for col in flat.columns]
    flat = flat.reset_index().astype(object)
    flat = flat.where(flat.notna(), None)  # cells a run lacks print as a dash, not "nan"
    return f"### {title}\n\n" + flat.to_markdown(index=False, floatfmt=".3f", missingval="–") + "\n"


def write_report(run_dirs: Path | list[Path], output: Path | None = None, leaderboard: bool = True) -> str:
    """The report of one run, or of several runs together (e.g. a matrix run in parts
    that share one configuration): their rows are joined, a cell found in several runs
    is taken from the first; the first run's metadata describes the whole. The runs'
    leaderboard goes to `output`/leaderboard unless `leaderboard` is False."""
    run_dirs = [Path(d) for d in (run_dirs if isinstance(run_dirs, list) else [run_dirs])]
    frames = [read_cells(d) for d in run_dirs]
    cells = first_of_each_cell(pd.concat(frames, ignore_index=True))
    costs = pd.concat([read_costs(d) for d in run_dirs], ignore_index=True)
    costs = costs[~costs[["generator", "bypass", "metric"]].duplicated(keep="first")]
    output = Path(output or run_dirs[0])
    found = [read_meta(d) for d in run_dirs]
    metas = [m for m in found if m is not None]
    meta = metas[0] if metas else None
    groups = (meta or {}).get("config", {}).get("report", {})
    skipped = skipped_metrics(metas, cells)
    table1_bypasses = present(cells, groups.get("table1")) or None
    text = emit(output, "table1", table1(cells, bypasses=table1_bypasses),
                "Table I: bypassing proactive defenses (standard scenario)", note=images_note(cells),
                bounds=bounds_of(table1, cells, bypasses=table1_bypasses))
    summary = defense_summary(cells)
    if not summary.empty:
        text += "\n" + emit(output, "summary", summary, "Every bypass against the defenses: mean and worst-case "
                                                         "DSR (standard scenario)",
                            note="Intervals of the mean and of the worst case resample the images of all the "
                                 "defenses' cells together.", bounds=bounds_of(defense_summary, cells))
    text += optional_tables(cells, costs, groups, output, run_dirs, skipped)
    edits = edit_table(cells)
    if not edits.empty:
        text += "\n" + emit(output, "edit_success", edits, "Edit success (attribute classifier): does the output "
                                                           "still show the asked edit? control = same test with no "
                                                           "edit asked")
        text += "\n" + emit(output, "edit_success_targets", edit_table(cells, by_target=True),
                            "Edit success of the clean outputs, per target")
    training = training_table(costs)
    if not training.empty:
        text += "\n" + emit(output, "training", training, "Trainable bypasses: training cost", "%.2f")
    if meta is not None:
        fits = defense_fit_table(meta)
        if not fits.empty:
            text += "\n" + emit(output, "defense_fits", fits, "Fitted defenses (fit_seconds: the run that fitted them)",
                                "%.2f")
        text += metric_notes(metas, skipped)
        text += leaderboard_note(run_dirs, frames, found, output) if leaderboard else ""
        peak = meta.get("peak_memory", {}).get("host_rss_mb")
        text += (f"\nprofile {meta['config']['profile']}, seed {meta['seed']}, "
                 f"{meta['data']['eval']['n']} evaluation images ({meta['data']['eval']['name']}), "
                 f"git {str(meta['git']['commit'])[:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
                 f"wall time {wall_times(run_dirs)}" + (f", peak memory {peak:.0f} MB" if peak else "") + "\n")
    atomic_write_text(output / "report.md", text)
    return text


def leaderboard_note(run_dirs: list[Path], frames: list[pd.DataFrame], metas: list[dict | None],
                     output: Path) -> str:
    """The runs' leaderboard (from the rows and metadata the report read), written beside
    the report where every run has its metadata."""
    from bench.harness.leaderboard import Run, summary_line, write_leaderboards

    if any(meta is None for meta in metas):
        return ""
    try:
        boards = write_leaderboards([Run(*run) for run in zip(run_dirs, frames, metas)], output / "leaderboard")
    except BenchError as err:
        return f"\nno leaderboard: {err}\n"
    return "".join(f"\nLeaderboard: {summary_line(where, board)}\n" for where, board in boards
                   if board.entries)


def skipped_metrics(metas: list[dict], cells: pd.DataFrame) -> dict:
    """Metrics some run skipped (weights missing) and no run computed: name -> reason."""
    skipped = {}
    for meta in metas:
        for name, reason in (meta.get("metrics_skipped") or {}).items():
            if not (cells.metric == name).any():
                skipped.setdefault(name, reason)
    return skipped


def metric_notes(metas: list[dict], skipped: dict) -> str:
    """What computed the image-quality metrics (implementation, weights' hash), the time
    each metric took, and why any is n/a."""
    identities, seconds = {}, {}
    for meta in metas:
        for name, identity in (meta.get("metrics") or {}).items():
            identities.setdefault(name, identity)
        for name, t in (meta.get("metric_seconds") or {}).items():
            seconds[name] = seconds.get(name, 0.0) + t
    rows = [{"metric": name, "kind": identity.get("kind"), "seconds": seconds.get(name),
             "weights sha256": (identity.get("weights_sha256") or "-")[:16],
             "implementation": identity.get("implementation")} for name, identity in identities.items()]
    rows += [{"metric": name, "kind": None, "seconds": None, "weights sha256": NA, "implementation": f"{NA}: {why}"}
             for name, why in skipped.items()]
    if not rows:
        return ""
    return "\n" + to_markdown(pd.DataFrame(rows).set_index("metric"), "Metrics (seconds: computing each, all runs)")


def wall_times(run_dirs: list[Path]) -> str:
    """Wall time of the run, or of each part of a merged report ("1200 s + 300 s")."""
    seconds = [json.loads((d / "run.json").read_text()).get("wall_seconds") for d in run_dirs
               if (d / "run.json").exists()]
    return " + ".join(f"{s:.0f} s" for s in seconds if s is not None)


def present(cells: pd.DataFrame, names) -> list[str]:
    """The names (in their order) that the run has rows for."""
    seen = set(cells.bypass)
    return [n for n in names or [] if n in seen]


def figures_of(run_dirs: list[Path], pattern: str) -> list[str]:
    return sorted({p.name for d in run_dirs for p in d.glob(pattern)})


def optional_tables(cells: pd.DataFrame, costs: pd.DataFrame, groups: dict, output: Path, run_dirs: list[Path],
                    skipped: dict | None = None) -> str:
    """Tables II-VI, the leakage scenario, defensive patching and the gating curves,
    each where the run has its bypasses; CSVs, LaTeX and figures go to `output`."""
    from bench.toolkit.figures import save_grouped_bars, save_loss_curves

    skipped = skipped or {}
    text = ""
    quality_note = lambda reference: (f"n: outputs per cell. Reference: {reference}. FID is biased upward at "
                                      "small n (KID is not); compare values of the same n only.")
    pairs_note = " ± (pair metrics): half the width of the 95% bootstrap interval over images, as under Table I."
    t2_bypasses = present(cells, groups.get("table2"))
    t2 = table2(cells, t2_bypasses, skipped) if t2_bypasses else pd.DataFrame()
    if not t2.empty:
        text += "\n" + emit(output, "table2", t2, "Table II: impact of each bypass on benign outputs",
                            note=quality_note("the original generator's outputs on the same clean images "
                                              "(BRISQUE: the outputs alone)") + pairs_note + na_note(t2, skipped),
                            bounds=bounds_of(table2, cells, t2_bypasses, skipped))
    spec = groups.get("table3") or {}
    t3_bypasses = present(cells, spec.get("bypasses"))
    if len(t3_bypasses) > 1:
        t3 = table3(cells, costs, spec["defense"], t3_bypasses)
        if not t3.empty:
            text += "\n" + emit(output, "table3", t3,
                                f"Table III: adversarial training vs LoRA patching against {spec['defense']}",
                                bounds=bounds_of(table3, cells, costs, spec["defense"], t3_bypasses))
    t4_bypasses = present(cells, groups.get("table4"))
    t4 = table4(cells, t4_bypasses, skipped) if t4_bypasses else pd.DataFrame()
    if not t4.empty:
        text += "\n" + emit(output, "table4", t4, "Table IV: defensive LoRA patching, quality of its outputs",
                            note=quality_note("the marked fakes (the original generator's outputs with the "
                                              "warning mark); adversarial: mean over the run's defenses")
                            + na_note(t4, skipped))
    t5_spec = groups.get("table5") or {}
    if present(cells, [t5_spec.get("without"), t5_spec.get("with")]):
        t5, semantic_note = table5(cells, t5_spec, skipped)
        if not t5.empty:
            note = ("Reference: the marked fakes; adversarial: mean over the run's defenses." + pairs_note
                    + na_note(t5, skipped))
            text += "\n" + emit(output, "table5", t5, "Table V: MMFA loss in defensive LoRA patching",
                                note=note + (f" {semantic_note}" if semantic_note else ""),
                                bounds=bounds_of(lambda *a, **k: table5(*a, **k)[0], cells, t5_spec, skipped))
    ranks = present(cells, groups.get("table6"))
    if len(ranks) > 1:
        text += "\n" + emit(output, "table6", averaged_over_defenses(cells, ranks),
                            "Table VI: LoRA rank (mean over the defenses)",
                            bounds=bounds_of(averaged_over_defenses, cells, ranks))
    leak = leakage_comparison(cells)
    if not leak.empty:
        text += "\n" + emit(output, "leakage", leak, "Fig. 5: leakage scenario, mean DSR over its defenses (the "
                                                     "defender perturbs against the bypassed pipeline)",
                            bounds=bounds_of(leakage_comparison, cells))
        save_grouped_bars(leak, output / "fig5_leakage.png", "mean DSR over the defenses (lower: bypass works)")
        text += "\n" + emit(output, "table1_leakage", table1(cells, "leakage"), "Leakage scenario, every cell",
                            bounds=bounds_of(table1, cells, "leakage"))
    defensive = present(cells, groups.get("defensive"))
    if defensive:
        table = defensive_table(cells, defensive)
        if not table.empty:
            text += "\n" + emit(output, "defensive", table, "Defensive patching: the mark in benign and protected "
                                                            "outputs", bounds=bounds_of(defensive_table, cells,
                                                                                        defensive))
    gating = present(cells, groups.get("gating"))
    curves = {}
    for g in ordered(cells.generator, ()):
        for b in gating:
            found = [d / f"loss_curve_{g}_{b}.json" for d in run_dirs if (d / f"loss_curve_{g}_{b}.json").exists()]
            if found:
                curves[(g, b)] = json.loads(found[0].read_text())
    if len({b for _, b in curves}) > 1:  # a comparison: with and without gates
        save_loss_curves(curves, output / "fig8_gating.png", every=10)
        text += "\n" + emit(output, "gating", loss_summary(curves),
                            "Gating ablation (Fig. 8: fig8_gating.png): fine-tuning loss")
    grids = {"Fig. 6 (leakage scenario)": figures_of(run_dirs, "fig6_leakage_*.png"),
             "Fig. 7 (defensive patching)": figures_of(run_dirs, "fig7_defensive_*.png")}
    listed = [f"{name}: {', '.join(files)}" for name, files in grids.items() if files]
    if listed:
        text += "\nImage grids in the run folder: " + "; ".join(listed) + "\n"
    return text


def na_note(table: pd.DataFrame, skipped: dict) -> str:
    """Why the table's n/a columns are n/a (their metric's weights were missing)."""
    shown = {c[1] for c in table.columns if (table[c] == NA).any()}
    reasons = [f" {metric_header(m)} n/a: {why}" for m, why in skipped.items() if metric_header(m) in shown]
    return "".join(reasons)


def loss_summary(curves: dict) -> pd.DataFrame:
    """First, last-tenth and highest loss of each fine-tuning curve."""
    from bench.toolkit.training import recent_mean

    rows = [{"generator": g, "bypass": b, "steps": len(c), "first 10 steps": sum(c[:10]) / len(c[:10]),
             "last 10%": recent_mean(c), "max": max(c)} for (g, b), c in curves.items() if c]
    return pd.DataFrame(rows).set_index(["generator", "bypass"])
