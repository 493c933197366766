"""Turn `cells.jsonl` rows into the paper's tables (CSV and Markdown) and figures.

Which bypasses make up which table comes from the run's configuration (`report` in
its profile, recorded in run.json), so the report knows no method by name:
Table I (bypasses of `table1`), a worst-case summary over the defenses, Table III
(`table3`: adversarial training vs LoRA against one defense, with training cost),
Table VI (`table6`: the rank sweep), the leakage scenario (Fig. 5), defensive patching
(`defensive`: scored against the marked fake) and the gating ablation's loss curves
(`gating`, Fig. 8).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.io import atomic_write_text

ARROWS = {True: "↑", False: "↓"}
TABLE1_METRICS = ["l2", "ssim", "dsr"]


def read_cells(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "cells.jsonl"
    if not path.exists():
        raise BenchError(f"no results in {run_dir} (cells.jsonl missing); run `bench run` first")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchError(f"{path} line {number} is not JSON ({err})") from None
    return pd.DataFrame(rows)


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


def table1(cells: pd.DataFrame, scenario: str = "standard", bypasses: list[str] | None = None) -> pd.DataFrame:
    """Rows (defense, bypass); columns (generator, metric with arrow); defense 'none' is
    each bypass on clean images (its benign impact)."""
    df = scored(cells, scenario, bypasses=bypasses)
    if df.empty:
        raise BenchError("no L2/SSIM/DSR rows to tabulate")
    arrows = {m: ARROWS[bool(h)] for m, h in df.groupby("metric")["higher_is_better"].first().items()}
    df = df.assign(metric=df.metric.map(lambda m: f"{m.upper()}{arrows[m]}"))
    table = df.pivot_table(index=["defense", "bypass"], columns=["generator", "metric"], values="value",
                           aggfunc="first")
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
                    bypasses: list[str] | None = None) -> pd.DataFrame:
    """Per generator and bypass: DSR averaged over the defenses and its worst case (the
    highest DSR, i.e. the defense the bypass copes with least), as RobustBench ranks."""
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[(df.metric == "dsr") & (df.defense != "none")]
    if df.empty:
        return pd.DataFrame()
    table = df.groupby(["generator", "bypass"], sort=False)["value"].agg(["mean", "max", "count"])
    table.columns = ["mean DSR↓", "worst DSR↓", "defenses"]
    table = table.unstack("generator").swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    counts = [c for c in table.columns if c[1] == "defenses"]
    table[counts] = table[counts].astype("Int64")  # whole numbers, blank where a generator lacks the bypass
    return table


def table3(cells: pd.DataFrame, defense: str, bypasses: list[str]) -> pd.DataFrame:
    """Adversarial training vs LoRA patching against one defense: L2, SSIM, DSR, training
    time and trainable parameters per generator."""
    df = scored(cells, bypasses=bypasses)
    df = df[df.defense == defense]
    cost = cells[cells.metric.isin(["train_seconds", "trainable_params"]) & cells.bypass.isin(bypasses)]
    both = pd.concat([df, cost])
    if df.empty:
        return pd.DataFrame()
    table = both.pivot_table(index="bypass", columns=["generator", "metric"], values="value", aggfunc="first")
    metrics = [m for m in ["l2", "ssim", "dsr", "train_seconds", "trainable_params"] if m in set(both.metric)]
    table = table.reindex(index=[b for b in bypasses if b in table.index],
                          columns=[(g, m) for g in ordered(both.generator, ()) for m in metrics])
    for column in [c for c in table.columns if c[1] == "trainable_params"]:
        table[column] = table[column].astype("Int64")
    names = {"l2": "L2↓", "ssim": "SSIM↑", "dsr": "DSR↓", "train_seconds": "train s↓", "trainable_params": "params↓"}
    table.columns = pd.MultiIndex.from_tuples([(g, names[m]) for g, m in table.columns])
    return table


def averaged_over_defenses(cells: pd.DataFrame, bypasses: list[str], scenario: str = "standard") -> pd.DataFrame:
    """Rows bypass; columns (generator, L2/SSIM/DSR) averaged over the protected cells."""
    df = scored(cells, scenario, bypasses=bypasses)
    df = df[df.defense != "none"]
    if df.empty:
        return pd.DataFrame()
    table = df.pivot_table(index="bypass", columns=["generator", "metric"], values="value", aggfunc="mean")
    table = table.reindex(index=[b for b in bypasses if b in table.index],
                          columns=[(g, m) for g in ordered(df.generator, ()) for m in TABLE1_METRICS])
    table.columns = pd.MultiIndex.from_tuples([(g, f"{m.upper()}{ARROWS[m == 'ssim']}") for g, m in table.columns])
    return table


def defensive_table(cells: pd.DataFrame, bypasses: list[str]) -> pd.DataFrame:
    """Defensive patches: SSIM and L2 of the outputs to the marked fake and the mark's
    recovery inside its region (is the mark there?), and, with the mark region taken
    from the original fake, SSIM and L2 to the original fake (is the rest unchanged?);
    on clean inputs and averaged over protected ones."""
    rows = []
    for reference in ("marked", "outside_mark"):
        df = scored(cells, reference=reference, bypasses=bypasses, metrics=["l2", "ssim", "mark_recovery"])
        for (generator, bypass, metric), group in df.groupby(["generator", "bypass", "metric"], sort=False):
            clean = group[group.defense == "none"]["value"]
            protected = group[group.defense != "none"]["value"]
            label = ("mark recovery, inside mark" if metric == "mark_recovery" else
                     f"{metric.upper()} to {'marked fake' if reference == 'marked' else 'fake, outside mark'}")
            rows.append({"generator": generator, "bypass": bypass, "metric": label,
                         "benign": clean.mean() if len(clean) else None,
                         "protected (mean)": protected.mean() if len(protected) else None,
                         "protected (worst)": (protected.max() if metric == "l2" else protected.min())
                         if len(protected) else None})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["generator", "bypass", "metric"])


def leakage_comparison(cells: pd.DataFrame, bypasses: list[str] | None = None) -> pd.DataFrame:
    """Per generator and bypass: mean DSR over the leakage scenario's defenses, in the
    standard scenario (same defenses) and in the leakage scenario (Fig. 5)."""
    leak = scored(cells, "leakage", bypasses=bypasses)
    leak = leak[leak.metric == "dsr"]
    if leak.empty:
        return pd.DataFrame()
    pairs = set(zip(leak.generator, leak.defense, leak.bypass))
    std = scored(cells, "standard", bypasses=bypasses)
    same_cells = pd.Series([k in pairs for k in zip(std.generator, std.defense, std.bypass)], index=std.index,
                           dtype=bool)
    std = std[(std.metric == "dsr") & same_cells]
    table = pd.concat([std.assign(scenario="standard"), leak]).pivot_table(
        index=["generator", "bypass"], columns="scenario", values="value", aggfunc="mean", sort=False)
    table = table.reindex(columns=["standard", "leakage"])
    table.columns = ["DSR standard↓", "DSR leakage↓"]
    return table


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


def training_table(cells: pd.DataFrame) -> pd.DataFrame:
    df = cells[cells.metric.isin(["train_seconds", "trainable_params"])]
    if df.empty:
        return df
    table = df.pivot_table(index=["generator", "bypass"], columns="metric", values="value", aggfunc="first")
    if "trainable_params" in table:  # a count, printed as one
        table["trainable_params"] = table["trainable_params"].astype("Int64")
    return table


def defense_fit_table(meta: dict) -> pd.DataFrame:
    """What each learned or universal defense was fitted against, and what it cost."""
    fits = meta.get("defense_fits") or []
    rows = [{"defense": f["defense"], "scope": f["scope"], "generators": ", ".join(f["generators"]) or "-",
             "fit_seconds": f.get("fit_seconds"), "from cache": f.get("cache_hit")} for f in fits]
    return pd.DataFrame(rows).set_index("defense") if rows else pd.DataFrame()


def to_markdown(table: pd.DataFrame, title: str) -> str:
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(c) for c in col) for col in flat.columns]
    flat = flat.reset_index().astype(object)
    flat = flat.where(flat.notna(), None)  # cells a run lacks print as a dash, not "nan"
    return f"### {title}\n\n" + flat.to_markdown(index=False, floatfmt=".3f", missingval="–") + "\n"


def write_report(run_dirs: Path | list[Path], output: Path | None = None) -> str:
    """The report of one run, or of several runs together (e.g. a matrix run in parts
    that share one configuration): their rows are joined, a cell found in several runs
    is taken from the first; the first run's metadata describes the whole."""
    run_dirs = [Path(d) for d in (run_dirs if isinstance(run_dirs, list) else [run_dirs])]
    cells = pd.concat([read_cells(d) for d in run_dirs], ignore_index=True)
    output = Path(output or run_dirs[0])
    meta_path = run_dirs[0] / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    groups = (meta or {}).get("config", {}).get("report", {})
    table1_bypasses = present(cells, groups.get("table1")) or None
    t1 = table1(cells, bypasses=table1_bypasses)
    atomic_write_text(output / "table1.csv", t1.to_csv(float_format="%.4f"))
    text = to_markdown(t1, "Table I: bypassing proactive defenses (standard scenario)")
    summary = defense_summary(cells)
    if not summary.empty:
        text += "\n" + to_markdown(summary, "Every bypass against the defenses: mean and worst-case DSR "
                                             "(standard scenario)")
    text += optional_tables(cells, groups, output, run_dirs)
    edits = edit_table(cells)
    if not edits.empty:
        atomic_write_text(output / "edit_success.csv", edits.to_csv(float_format="%.4f"))
        text += "\n" + to_markdown(edits, "Edit success (attribute classifier): does the output still show "
                                           "the asked edit? control = same test with no edit asked")
        text += "\n" + to_markdown(edit_table(cells, by_target=True), "Edit success of the clean outputs, per target")
    training = training_table(cells)
    if not training.empty:
        atomic_write_text(output / "training.csv", training.to_csv(float_format="%.2f"))
        text += "\n" + to_markdown(training, "Trainable bypasses: training cost")
    if meta is not None:
        fits = defense_fit_table(meta)
        if not fits.empty:
            text += "\n" + to_markdown(fits, "Fitted defenses (fit_seconds: the run that fitted them)")
        peak = meta.get("peak_memory", {}).get("host_rss_mb")
        text += (f"\nprofile {meta['config']['profile']}, seed {meta['seed']}, "
                 f"{meta['data']['eval']['n']} evaluation images ({meta['data']['eval']['name']}), "
                 f"git {str(meta['git']['commit'])[:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
                 f"wall time {wall_times(run_dirs)}" + (f", peak memory {peak:.0f} MB" if peak else "") + "\n")
    atomic_write_text(output / "report.md", text)
    return text


def wall_times(run_dirs: list[Path]) -> str:
    """Wall time of the run, or of each part of a merged report ("1200 s + 300 s")."""
    seconds = [json.loads((d / "run.json").read_text()).get("wall_seconds") for d in run_dirs
               if (d / "run.json").exists()]
    return " + ".join(f"{s:.0f} s" for s in seconds if s is not None)


def present(cells: pd.DataFrame, names) -> list[str]:
    """The names (in their order) that the run has rows for."""
    seen = set(cells.bypass)
    return [n for n in names or [] if n in seen]


def optional_tables(cells: pd.DataFrame, groups: dict, output: Path, run_dirs: list[Path]) -> str:
    """Tables III and VI, the leakage scenario, defensive patching and the gating curves,
    each where the run has its bypasses; CSVs and figures go to `output`."""
    from bench.figures import save_grouped_bars, save_loss_curves

    text = ""
    spec = groups.get("table3") or {}
    t3_bypasses = present(cells, spec.get("bypasses"))
    if len(t3_bypasses) > 1:
        t3 = table3(cells, spec["defense"], t3_bypasses)
        if not t3.empty:
            atomic_write_text(output / "table3.csv", t3.to_csv(float_format="%.4f"))
            text += "\n" + to_markdown(t3, f"Table III: adversarial training vs LoRA patching against {spec['defense']}")
    ranks = present(cells, groups.get("table6"))
    if len(ranks) > 1:
        t6 = averaged_over_defenses(cells, ranks)
        atomic_write_text(output / "table6.csv", t6.to_csv(float_format="%.4f"))
        text += "\n" + to_markdown(t6, "Table VI: LoRA rank (mean over the defenses)")
    leak = leakage_comparison(cells)
    if not leak.empty:
        atomic_write_text(output / "leakage.csv", leak.to_csv(float_format="%.4f"))
        text += "\n" + to_markdown(leak, "Fig. 5: leakage scenario, mean DSR over its defenses (the defender "
                                          "perturbs against the bypassed pipeline)")
        save_grouped_bars(leak, output / "fig5_leakage.png", "mean DSR over the defenses (lower: bypass works)")
        text += "\n" + to_markdown(table1(cells, "leakage"), "Leakage scenario, every cell")
    defensive = present(cells, groups.get("defensive"))
    if defensive:
        table = defensive_table(cells, defensive)
        if not table.empty:
            atomic_write_text(output / "defensive.csv", table.to_csv(float_format="%.4f"))
            text += "\n" + to_markdown(table, "Defensive patching: the mark in benign and protected outputs")
    gating = present(cells, groups.get("gating"))
    curves = {}
    for g in ordered(cells.generator, ()):
        for b in gating:
            found = [d / f"loss_curve_{g}_{b}.json" for d in run_dirs if (d / f"loss_curve_{g}_{b}.json").exists()]
            if found:
                curves[(g, b)] = json.loads(found[0].read_text())
    if len(curves) > 1:
        save_loss_curves(curves, output / "fig8_gating.png", every=10)
        text += "\n" + to_markdown(loss_summary(curves), "Gating ablation (Fig. 8: fig8_gating.png): fine-tuning loss")
    return text


def loss_summary(curves: dict) -> pd.DataFrame:
    """First, last-tenth and highest loss of each fine-tuning curve."""
    from bench.training import recent_mean

    rows = [{"generator": g, "bypass": b, "steps": len(c), "first 10 steps": sum(c[:10]) / len(c[:10]),
             "last 10%": recent_mean(c), "max": max(c)} for (g, b), c in curves.items() if c]
    return pd.DataFrame(rows).set_index(["generator", "bypass"])
