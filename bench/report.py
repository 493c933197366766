"""Turn `cells.jsonl` rows into the paper's tables (CSV and Markdown)."""

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


def table1(cells: pd.DataFrame, scenario: str = "standard") -> pd.DataFrame:
    """Rows (defense, bypass); columns (generator, metric with arrow); defense 'none' is
    each bypass on clean images (its benign impact)."""
    df = cells[(cells.scenario == scenario) & cells.metric.isin(TABLE1_METRICS)]
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
    flat = flat.reset_index()
    return f"### {title}\n\n" + flat.to_markdown(index=False, floatfmt=".3f") + "\n"


def write_report(run_dir: Path, output: Path | None = None) -> str:
    cells = read_cells(run_dir)
    output = Path(output or run_dir)
    t1 = table1(cells)
    atomic_write_text(output / "table1.csv", t1.to_csv(float_format="%.4f"))
    text = to_markdown(t1, "Table I: bypassing proactive defenses (standard scenario)")
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
    meta_path = Path(run_dir) / "run.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        fits = defense_fit_table(meta)
        if not fits.empty:
            text += "\n" + to_markdown(fits, "Fitted defenses (fit_seconds: the run that fitted them)")
        peak = meta.get("peak_memory", {}).get("host_rss_mb")
        text += (f"\nprofile {meta['config']['profile']}, seed {meta['seed']}, "
                 f"{meta['data']['eval']['n']} evaluation images ({meta['data']['eval']['name']}), "
                 f"git {str(meta['git']['commit'])[:10]}{' (dirty)' if meta['git']['dirty'] else ''}, "
                 f"wall time {meta['wall_seconds']:.0f} s" + (f", peak memory {peak:.0f} MB" if peak else "") + "\n")
    atomic_write_text(output / "report.md", text)
    return text
