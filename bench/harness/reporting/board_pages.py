"""A board as it is written: JSON (one file per entry, as RobustBench keeps them, and the
whole board), the tables of its Markdown page and CSVs, and the texts its pages share."""

from __future__ import annotations

import pandas as pd

from bench.contract.results import RUNGS, is_across
from bench.harness import intervals
from bench.harness.reporting.board import Board, Entry, ordered_entries
from bench.harness.reporting.ladder import Break
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
        "leakage": entry.leakage_note or None,
        "break_cost": entry.break_cost,
        "break_cost_interval": list(entry.break_interval) if entry.break_interval else None,
        "breaks": {g: b.as_dict() for g, b in entry.breaks.items()},
        "robust_dsr": entry.robust_dsr,
        "robust_dsr_interval": list(entry.robust_interval) if entry.robust_interval else None,
        "tied_with": entry.tied_with,
        "mean_dsr": entry.mean_dsr,
        "transfer_worst": entry.transfer,
        "worst_case": entry.worst,
        "budget": entry.budget,
        "cells": entry.cells,
        "missing": entry.missing,
        "leakage_missing": entry.leakage_missing,
        "provenance": [r for r in board.runs if r["run"] in entry.runs],
    }


def board_json(board: Board) -> dict:
    return {"protocol": {"id": board.protocol_id, **board.protocol, "generators": board.generators},
            "columns": [c.as_dict() for c in board.columns],
            "ladders": {g: [{**r.as_dict(), "position": pos} for r, pos in zip(ladder.rungs, ladder.positions)]
                        for g, ladder in board.ladders.items()},
            "bypasses": board.bypasses,
            "bypass_costs": board.bypass_costs,
            "defenses": [entry_json(board, e) for e in ordered_entries(board.entries)],
            "bypass_board": [{"bypass": b.column.bypass, "scenario": b.column.scenario, "rank": b.rank,
                              "status": b.status, "worst_dsr": b.worst_dsr, "mean_dsr": b.mean_dsr,
                              "worst_case": b.worst,
                              "missing": b.missing} for b in ordered_entries(board.bypass_entries)],
            "runs": board.runs}


def break_text(found: Break | None) -> str:
    """Where a defense breaks on one generator: the bypass, its rung (and faces) and the DSR."""
    if found is None:
        return "–"
    if found.rung is None:
        return "unbroken"
    r = found.rung
    faces = f", {r.faces} faces" if r.faces else ""
    return f"{r.bypass} ({RUNGS.get(r.rung, '?')}{faces}) {found.dsr:.3f}"


def defense_table(board: Board) -> pd.DataFrame:
    """The defense board: where each generator breaks it and the break cost, the mean
    robust DSR, and the measured budget and cost."""
    rows = []
    for entry in ordered_entries(board.entries):
        row = {"rank": entry.rank if entry.rank is not None else "–", "defense": entry.label}
        row["break cost↑"] = bounded(entry.break_cost, not entry.complete, "≤", 2) + plus_minus(entry.break_interval, 2)
        for g in board.generators:
            row[f"{g} broken by (DSR)"] = break_text(entry.breaks.get(g))
        row["mean robust DSR↑"] = bounded(entry.robust_dsr, not entry.complete, "≤") + plus_minus(entry.robust_interval)
        row["tied with (95%)"] = tie_text(entry)
        row["mean DSR, all cells↑"] = fmt(entry.mean_dsr, 3)
        row["unseen generator: worst DSR↑"] = transfer_text(entry.transfer)
        b = entry.budget
        row["L-inf (eps)"] = f"{fmt(b['linf_max'], 4)} ({fmt(b['eps_declared'], 3)})"
        row["L2 norm"] = fmt(b["l2_norm_mean"], 3)
        row["PSNR dB"] = fmt(b["psnr_mean"], 2)
        row["SSIM"] = fmt(b["ssim_mean"], 4)
        row["status"] = status_text(entry, tied=False)
        rows.append(row)
    return pd.DataFrame(rows)


def transfer_text(worst: dict | None) -> str:
    """A defense's worst transfer cell: 'DSR ± half-width (source → editing generator)'."""
    if worst is None:
        return "–"
    source = worst["source"]
    source = f"fit across {source.removeprefix('across:')}" if is_across(source) else source
    return f"{worst['dsr']:.3f}{plus_minus(worst['dsr_interval'])} ({source} → {worst['generator']})"


def ladder_table(board: Board) -> pd.DataFrame:
    """Each generator's cost ladder: a row per step, the bypasses on it per generator."""
    steps: dict[int, dict] = {}
    for g, ladder in board.ladders.items():
        for r, position in zip(ladder.rungs, ladder.positions):
            step = steps.setdefault(position, {"step": position, "rung": RUNGS.get(r.rung, "?")})
            fit = f" ({r.faces} faces, {r.fit_seconds:.0f} s)" if r.faces and r.fit_seconds is not None else ""
            step[g] = (step[g] + ", " if g in step else "") + r.bypass + fit
    return pd.DataFrame([{**step, **{g: step.get(g, "–") for g in board.ladders}} for _, step in sorted(steps.items())])


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


def status_text(entry: Entry, tied: bool = True) -> str:
    """The entry's status, how far the leakage scenario covers it and (`tied`) its ties."""
    ties = f"tied with {', '.join(entry.tied_with)}" if tied and entry.tied_with else ""
    return " · ".join(part for part in (entry.status, entry.leakage_note, ties) if part)


def tie_text(entry: Entry) -> str:
    """The entries a ranked entry is tied with; n/a where its rows keep no per-image values."""
    if entry.rank is None:
        return ""
    return "n/a" if entry.replicates is None else (", ".join(entry.tied_with) or "–")


def plus_minus(interval: tuple[float, float] | None, digits: int = 3) -> str:
    """' ± h' of a 95% interval, or nothing without one."""
    return "" if interval is None else intervals.plus_minus(*interval, digits)


def bounded(value: float | None, partial: bool, sign: str, digits: int = 3) -> str:
    """A worst case, with `sign` (≤ or ≥) where cells are missing: then it is a bound."""
    return "–" if value is None else (f"{sign} " if partial else "") + f"{value:.{digits}f}"


def protocol_lines(board: Board) -> list[str]:
    p, e = board.protocol, board.protocol["evaluation"]
    first = (e.get("first") or ["?"])[0]
    last = (e.get("last") or ["?"])[0]
    generators = ", ".join(f"{g} ({h[:12] if h else '?'})" for g, h in board.generators.items())
    return [f"protocol {board.protocol_id}: profile {p['profile']}, {p['resolution']} px, "
            f"eps {p['eps']} (L-inf on [-1, 1], tolerance {p['tolerance']:g}), broken at DSR ≤ "
            f"{p['break_threshold']:g}, harness {p['harness_version']}",
            f"evaluation images: {e.get('n')} of {e.get('name')} ({first} … {last}), ids {e.get('ids')}, "
            f"pixels {e.get('pixels_sha256')}",
            f"generators (weights sha256): {generators}",
            "runs: " + ", ".join(f"{r['run']} (git {str((r['git'] or {}).get('commit'))[:10]})" for r in board.runs)]


EXPLANATION = (
    "Broken by: on each generator, the cheapest bypass of the cost ladder (no bypass, then channel transforms, "
    "then purifiers, then fine-tuning by faces and fit seconds; the ladder below) that brings the defense's "
    "DSR (defense success rate, in brackets) to the protocol's break threshold or below in the standard "
    "scenario; unbroken: no bypass of the ladder does. Break cost: the mean over the generators of that "
    "step's position on the ladder (unbroken: one past the top); higher is dearer to break, and a generator "
    "no defense disrupts adds the same to every defense. Ties are broken by the robust DSR: for each "
    "generator, the lowest DSR any bypass leaves the defense, over the standard and the leakage scenario "
    "(the adaptive defender's case, where run), averaged over the generators; then by the mean DSR over all "
    "cells (the average case). Unseen generator: the lowest DSR of the defense's protections on a generator "
    "they were not made against (the transfer scenario, no bypass, where run; source → editing generator), "
    "not ranked on. ±: half the width of the 95% bootstrap interval over the evaluation images; "
    "tied with: the ranked entries from which neither its break cost nor its robust DSR differs (each paired "
    "difference's 95% interval contains 0). An entry missing cells of the standard scenario is not ranked "
    "and shows ≤ (a cheaper break or a lower worst case may hide in them). "
    "L-inf: the largest change of any pixel over every protected image (eps declared in brackets); L2 norm, "
    "PSNR and SSIM: protected against clean, mean over the standard scenario's protected images. An entry "
    "beyond the protocol's eps is flagged and not ranked.")


BYPASS_EXPLANATION = (
    "Bypasses ranked by the highest DSR they leave any defense within budget (lower: a stronger bypass), "
    "per generator (in brackets: that defense) and its mean, ties broken by the mean DSR they leave over all "
    "cells; ≥ where cells are missing.")


LADDER_EXPLANATION = (
    "Each generator's bypasses of the standard scenario by what they cost the attacker: the rung (nothing; a "
    "channel transform: no model, no data; a purifier: no generator; fine-tuning: the generator's weights "
    "and faces), then the fine-tuning faces, then the fit's measured seconds; bypasses of equal cost share a "
    "step.")


def markdown(board: Board) -> str:
    text = "# Leaderboard: proactive defenses by what it costs an attacker to break them\n\n"
    text += "\n".join(f"- {line}" for line in protocol_lines(board)) + "\n\n"
    text += to_markdown(defense_table(board).set_index("rank"), "Defenses", formatted=True) + f"\n{EXPLANATION}\n\n"
    text += (to_markdown(bypass_table(board).set_index("rank"), "Bypasses", formatted=True)
             + f"\n{BYPASS_EXPLANATION}\n\n")
    text += (to_markdown(ladder_table(board).set_index("step"), "The cost ladder", formatted=True)
             + f"\n{LADDER_EXPLANATION}\n\n")
    text += "## Every cell\n\n"
    for entry in ordered_entries(board.entries):
        text += to_markdown(cell_matrix(board, entry).set_index("bypass"),
                            f"{entry.label}: DSR and L2 under every bypass (bold: the worst case)", formatted=True) + "\n"
    return text
