"""A board as it is written: JSON (one file per entry, as RobustBench keeps them, and the
whole board), the tables of its Markdown page and CSVs, and the texts its pages share."""

from __future__ import annotations

import pandas as pd

from bench.harness import intervals
from bench.harness.reporting.board import Board, Column, Entry, ordered_entries
from bench.harness.reporting.render import to_markdown


def entry_json(board: Board, entry: Entry) -> dict:
    """One entry as RobustBench keeps them: metadata, protocol, every cell, the worst case,
    the measured budget and the provenance of the runs it came from."""
    return {
        "name": entry.label,
        "plugin": entry.origin.get("plugin") or entry.label,
        "version": entry.origin.get("version"),
        "distribution": entry.origin.get("distribution"),
        "distribution_version": entry.origin.get("distribution_version"),
        "entry_point": entry.origin.get("entry_point"),
        "paper": entry.origin.get("paper"),
        "url": entry.origin.get("url"),
        "licence": entry.origin.get("licence"),
        "parameters": entry.params,
        "protocol": {"id": board.protocol_id, **board.protocol, "generators": board.generators},
        "rank": entry.rank,
        "status": entry.status,
        "robust_dsr": entry.robust_dsr,
        "robust_dsr_interval": list(entry.robust_interval) if entry.robust_interval else None,
        "tied_with": entry.tied_with,
        "mean_dsr": entry.mean_dsr,
        "worst_case": entry.worst,
        "budget": entry.budget,
        "cells": entry.cells,
        "missing": entry.missing,
        "provenance": [r for r in board.runs if r["run"] in entry.runs],
    }


def board_json(board: Board) -> dict:
    return {"protocol": {"id": board.protocol_id, **board.protocol, "generators": board.generators},
            "columns": [c.as_dict() for c in board.columns],
            "bypasses": board.bypasses,
            "defenses": [entry_json(board, e) for e in ordered_entries(board.entries)],
            "bypass_board": [{"bypass": b.column.bypass, "scenario": b.column.scenario, "rank": b.rank,
                              "status": b.status, "worst_dsr": b.worst_dsr, "mean_dsr": b.mean_dsr,
                              "worst_case": b.worst,
                              "missing": b.missing} for b in ordered_entries(board.bypass_entries)],
            "runs": board.runs}


def defense_table(board: Board) -> pd.DataFrame:
    """The defense board: robust DSR per generator (its worst bypass in brackets), the
    mean, and the measured budget and cost."""
    rows = []
    for entry in ordered_entries(board.entries):
        row = {"rank": entry.rank if entry.rank is not None else "–", "defense": entry.label}
        for g in board.generators:
            w = entry.worst.get(g)
            row[f"{g} robust DSR↑"] = f"{w['dsr']:.3f} ({worst_label(w)})" if w else "–"
        row["mean robust DSR↑"] = bounded(entry.robust_dsr, not entry.complete, "≤") + plus_minus(entry.robust_interval)
        row["tied with (95%)"] = tie_text(entry)
        row["mean DSR, all cells↑"] = fmt(entry.mean_dsr, 3)
        b = entry.budget
        row["L-inf (eps)"] = f"{fmt(b['linf_max'], 4)} ({fmt(b['eps_declared'], 3)})"
        row["L2 norm"] = fmt(b["l2_norm_mean"], 3)
        row["PSNR dB"] = fmt(b["psnr_mean"], 2)
        row["SSIM"] = fmt(b["ssim_mean"], 4)
        row["status"] = entry.status
        rows.append(row)
    return pd.DataFrame(rows)


def bypass_table(board: Board) -> pd.DataFrame:
    rows = []
    for item in ordered_entries(board.bypass_entries):
        row = {"rank": item.rank if item.rank is not None else "–", "bypass": item.label}
        for g in board.generators:
            w = item.worst.get(g)
            row[f"{g} worst DSR↓"] = f"{w['dsr']:.3f} ({w['defense']})" if w else "–"
        row["mean worst DSR↓"] = bounded(item.worst_dsr, bool(item.missing), "≥")
        row["mean DSR, all cells↓"] = fmt(item.mean_dsr, 3)
        row["status"] = item.status
        rows.append(row)
    return pd.DataFrame(rows)


def cell_matrix(board: Board, entry: Entry) -> pd.DataFrame:
    """An entry's every cell: DSR and L2 per bypass column and generator."""
    found = {(c["generator"], c["bypass"], c["scenario"]): c for c in entry.cells}
    rows = []
    for column in board.columns:
        row = {"bypass": column.label}
        for g in board.generators:
            cell = found.get((g, column.bypass, column.scenario))
            dsr = "–" if cell is None else f"{cell['dsr']:.3f}"
            row[f"{g} DSR"] = f"**{dsr}**" if cell is not None and entry.is_worst(g, column) else dsr
            row[f"{g} L2"] = "–" if cell is None else fmt(cell["l2"], 4)
        rows.append(row)
    return pd.DataFrame(rows)


def fmt(value, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def tie_text(entry: Entry) -> str:
    """The entries a ranked entry is tied with; n/a where its rows keep no per-image values."""
    if entry.rank is None:
        return ""
    return "n/a" if entry.replicates is None else (", ".join(entry.tied_with) or "–")


def plus_minus(interval: tuple[float, float] | None) -> str:
    """' ± h' of a 95% interval, or nothing without one."""
    return "" if interval is None else intervals.plus_minus(*interval)


def bounded(value: float | None, partial: bool, sign: str) -> str:
    """A worst case, with `sign` (≤ or ≥) where cells are missing: then it is a bound."""
    return "–" if value is None else (f"{sign} " if partial else "") + f"{value:.3f}"


def worst_label(worst: dict) -> str:
    return Column(worst["bypass"], worst["scenario"]).label


def protocol_lines(board: Board) -> list[str]:
    p, e = board.protocol, board.protocol["evaluation"]
    first = (e.get("first") or ["?"])[0]
    last = (e.get("last") or ["?"])[0]
    generators = ", ".join(f"{g} ({h[:12] if h else '?'})" for g, h in board.generators.items())
    return [f"protocol {board.protocol_id}: profile {p['profile']}, {p['resolution']} px, "
            f"eps {p['eps']} (L-inf on [-1, 1], tolerance {p['tolerance']:g}), harness {p['harness_version']}",
            f"evaluation images: {e.get('n')} of {e.get('name')} ({first} … {last}), ids {e.get('ids')}, "
            f"pixels {e.get('pixels_sha256')}",
            f"generators (weights sha256): {generators}",
            "runs: " + ", ".join(f"{r['run']} (git {str((r['git'] or {}).get('commit'))[:10]})" for r in board.runs)]


EXPLANATION = (
    "Robust DSR: for each generator, the lowest DSR (defense success rate) any bypass leaves the defense, over "
    "the standard and the leakage scenario (in brackets: that worst bypass; of equal DSRs, the one whose "
    "outputs come closest to the original fake, by L2); ranked by its mean over the "
    "generators, ties broken by the mean DSR over all cells (the average case). ±: half the width of its 95% "
    "bootstrap interval over the evaluation images; tied with: the ranked entries whose paired difference "
    "from it has a 95% interval containing 0. An entry missing cells is not ranked and shows ≤ (its worst "
    "case can only be lower). "
    "L-inf: the largest change of any pixel over every protected image (eps declared in brackets); L2 norm, "
    "PSNR and SSIM: protected against clean, mean over the standard scenario's protected images. An entry "
    "beyond the protocol's eps is flagged and not ranked.")


BYPASS_EXPLANATION = (
    "Bypasses ranked by the highest DSR they leave any defense within budget (lower: a stronger bypass), "
    "per generator (in brackets: that defense) and its mean, ties broken by the mean DSR they leave over all "
    "cells; ≥ where cells are missing.")


def markdown(board: Board) -> str:
    text = "# Leaderboard: proactive defenses by their worst case over every bypass\n\n"
    text += "\n".join(f"- {line}" for line in protocol_lines(board)) + "\n\n"
    text += to_markdown(defense_table(board).set_index("rank"), "Defenses", formatted=True) + f"\n{EXPLANATION}\n\n"
    text += (to_markdown(bypass_table(board).set_index("rank"), "Bypasses", formatted=True)
             + f"\n{BYPASS_EXPLANATION}\n\n")
    text += "## Every cell\n\n"
    for entry in ordered_entries(board.entries):
        text += to_markdown(cell_matrix(board, entry).set_index("bypass"),
                            f"{entry.label}: DSR and L2 under every bypass (bold: the worst case)", formatted=True) + "\n"
    return text
