"""`bench leaderboard`: a board per protocol of the runs, written as its pages (Markdown,
HTML, CSV) and JSON (the board, and each entry on its own)."""

from __future__ import annotations

from pathlib import Path

from bench.contract.io import atomic_write_json, atomic_write_text
from bench.harness.reporting.board import Board, build_board, group_by_protocol, ordered_entries
from bench.harness.reporting.board_figures import save_effort_figure, save_transform_figure
from bench.harness.reporting.board_html import html
from bench.harness.reporting.board_pages import board_json, bypass_table, defense_table, entry_json, markdown
from bench.harness.reporting.runs import Run


def write_board(board: Board, output: Path) -> None:
    output = Path(output)
    for entry in board.entries:
        atomic_write_json(output / "entries" / f"{entry.label}.json", entry_json(board, entry))
    atomic_write_json(output / "board.json", board_json(board))
    atomic_write_text(output / "leaderboard.md", markdown(board))
    atomic_write_text(output / "leaderboard.csv", defense_table(board).to_csv(index=False))
    atomic_write_text(output / "bypasses.csv", bypass_table(board).to_csv(index=False))
    atomic_write_text(output / "leaderboard.html", html(board))
    save_effort_figure(board, output / "effort.png")
    save_transform_figure(board, output / "transforms.png")


def write_leaderboards(runs: list[Run], output: Path) -> list[tuple[Path, Board]]:
    """A board per protocol of the runs, written to `output` (one protocol) or to
    `output/<profile>-<protocol id>/` each (several)."""
    groups = group_by_protocol(runs)
    written = []
    for pid, group in groups.items():
        board = build_board(group)
        where = Path(output) if len(groups) == 1 else Path(output) / f"{board.protocol['profile']}-{pid}"
        write_board(board, where)
        written.append((where, board))
    return written


def summary_line(where: Path, board: Board) -> str:
    ranked = [e for e in board.entries if e.rank is not None]
    top = ordered_entries(board.entries)[0] if ranked else None
    lead = f"; first: {top.label} (break cost {top.break_cost:.2f}, robust DSR {top.robust_dsr:.3f})" if top else ""
    return (f"{where}/leaderboard.md and .html: protocol {board.protocol_id}, {len(ranked)} of "
            f"{len(board.entries)} defenses ranked{lead}")
