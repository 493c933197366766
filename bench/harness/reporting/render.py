"""One renderer for every table the reports and boards print: Markdown, CSV and LaTeX.
A table with intervals prints as 'value ± half-width' (Markdown, LaTeX) and keeps both
ends of each interval beside its value (CSV)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.contract.io import atomic_write_text
from bench.harness import intervals
from bench.harness.reporting.estimates import Table


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


def to_markdown(table: pd.DataFrame, title: str, formatted: bool = False) -> str:
    """A titled Markdown table. Numbers print with 3 decimals and missing cells as a dash;
    `formatted`: the cells are already text, printed as they are (index included)."""
    if formatted:
        return f"### {title}\n\n" + table.to_markdown(disable_numparse=True) + "\n"
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(c) for c in col) for col in flat.columns]
    flat = flat.reset_index().astype(object)
    flat = flat.where(flat.notna(), None)  # cells a run lacks print as a dash, not "nan"
    return f"### {title}\n\n" + flat.to_markdown(index=False, floatfmt=".3f", missingval="–") + "\n"


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


def emit(output: Path, stem: str, table: Table, title: str, float_format: str = "%.4f",
         note: str | None = None) -> str:
    """Write a table as `stem`.csv and `stem`.tex; return its Markdown (with `note` under
    it). With intervals, the CSV gets both ends beside each value, LaTeX and Markdown
    print value ± half the interval's width."""
    value = table.value
    if table.has_intervals:
        low, high = table.low.reindex_like(value), table.high.reindex_like(value)
        csv, shown = with_bounds(value, low, high), plus_minus(value, low, high)
    else:
        csv = shown = value
    atomic_write_text(output / f"{stem}.csv", csv.to_csv(float_format=float_format))
    atomic_write_text(output / f"{stem}.tex", to_latex(shown, title))
    return to_markdown(shown, title) + (f"\n{note}\n" if note else "")
