"""The leaderboard's figures (matplotlib, no torch), each with 95% interval bands:

- `effort.png`: each defense's DSR against the attacker's effort, one row per generator:
  on the left the rungs without fine-tuning (no bypass, the strongest channel transform,
  the strongest purifier), on the right fine-tuning against its faces on a log axis (a
  line per fine-tuning plugin, e.g. LoRA patching on 8 to 256 faces);
- `transforms.png`: each defense's DSR against each channel transform's strength (the
  robustness curves), one panel per generator and transform, stronger to the right.

The break threshold is the dashed line: below it a defense counts as broken.
"""

from __future__ import annotations

from pathlib import Path

from bench.contract.results import CHANNEL_TRANSFORM, FINE_TUNING, NO_COST, PRETRAINED_PURIFIER, STANDARD
from bench.harness.reporting.board import Board, Entry, ordered_entries
from bench.harness.reporting.plots import pyplot, save

LEFT_RUNGS = {NO_COST: "no bypass", CHANNEL_TRANSFORM: "strongest\nchannel transform",
              PRETRAINED_PURIFIER: "strongest\npurifier"}


def standard_cells(entry: Entry, generator: str) -> dict[str, dict]:
    """bypass -> the entry's standard-scenario cell on `generator`."""
    return {c["bypass"]: c for c in entry.cells if c["generator"] == generator and c["scenario"] == STANDARD
            and c["dsr"] is not None}


def ends(cell: dict) -> tuple[float, float]:
    """The cell's 95% interval, or its value twice where it has none."""
    low, high = cell.get("dsr_interval") or (cell["dsr"], cell["dsr"])
    return low, high


def strongest(cells: dict[str, dict], labels: list[str]) -> dict | None:
    """Of `labels`' cells, the one leaving the lowest DSR (the attacker's best choice)."""
    found = [cells[label] for label in labels if label in cells]
    return min(found, key=lambda c: c["dsr"]) if found else None


def plot_with_band(ax, xs, cells: list[dict], color, marker: str = "o", label: str | None = None) -> None:
    """A defense's DSR at xs as a line, its 95% intervals as a band of the same colour."""
    if not cells:
        return
    ax.plot(xs, [c["dsr"] for c in cells], marker=marker, markersize=3.5, linewidth=1.3, color=color, label=label)
    lows, highs = zip(*(ends(c) for c in cells))
    ax.fill_between(xs, lows, highs, alpha=0.15, color=color, linewidth=0)


def threshold_line(ax, board: Board) -> None:
    ax.axhline(board.protocol["break_threshold"], color="0.45", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.25)


def colours(board: Board) -> dict[str, str]:
    palette = pyplot().get_cmap("tab10")
    return {e.label: palette(i % 10) for i, e in enumerate(ordered_entries(board.entries))}


def save_effort_figure(board: Board, path: Path) -> bool:
    """DSR against the attacker's effort (see the module's docstring); False where the board
    has no fine-tuning bypass and no transform (nothing to climb)."""
    by_rung: dict[int, list[str]] = {}
    for label, cost in board.bypass_costs.items():
        by_rung.setdefault(cost["rung"], []).append(label)
    fine_tuning = sorted({board.bypass_costs[b]["plugin"] for b in by_rung.get(FINE_TUNING, [])})
    left = [r for r in LEFT_RUNGS if r in by_rung]
    if not fine_tuning and len(left) < 2:
        return False
    plt, colour = pyplot(), colours(board)
    generators = list(board.generators)
    fig, axes = plt.subplots(len(generators), 2, figsize=(9.5, 2.6 * len(generators)), squeeze=False,
                             sharey=True, gridspec_kw={"width_ratios": [max(1, len(left)), 3]})
    markers = dict(zip(fine_tuning, "osD^v<>"))
    for row, g in enumerate(generators):
        rungs_ax, faces_ax = axes[row]
        for entry in ordered_entries(board.entries):
            cells = standard_cells(entry, g)
            chosen = [(i, strongest(cells, by_rung[r])) for i, r in enumerate(left)]
            chosen = [(i, c) for i, c in chosen if c is not None]
            plot_with_band(rungs_ax, [i for i, _ in chosen], [c for _, c in chosen], colour[entry.label],
                           label=entry.label)
            for plugin in fine_tuning:
                points = sorted(((fit_faces(board, g, b), cells[b]) for b in by_rung[FINE_TUNING]
                                 if b in cells and board.bypass_costs[b]["plugin"] == plugin
                                 and fit_faces(board, g, b)), key=lambda point: point[0])
                plot_with_band(faces_ax, [f for f, _ in points], [c for _, c in points], colour[entry.label],
                               markers[plugin])
        rungs_ax.set_xticks(range(len(left)))
        rungs_ax.set_xticklabels([LEFT_RUNGS[r] for r in left], fontsize=7)
        rungs_ax.set_xlim(-0.4, len(left) - 0.6)
        rungs_ax.set_ylabel(f"{g}\nDSR (higher: protected)", fontsize=8)
        faces_ax.set_xscale("log", base=2)
        faces_ax.set_xlabel("fine-tuning faces (" + ", ".join(fine_tuning) + ")", fontsize=8)
        for ax in (rungs_ax, faces_ax):
            threshold_line(ax, board)
            ax.tick_params(labelsize=7)
    axes[0][0].set_title("no fine-tuning", fontsize=9)
    axes[0][1].set_title("fine-tuning the generator", fontsize=9)
    axes[0][1].legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="upper right", title="defense",
                      title_fontsize=7)
    save(fig, path)
    return True


def fit_faces(board: Board, generator: str, bypass: str) -> int | None:
    """The faces a fine-tuning bypass used on `generator` (its ladder rung's measured faces)."""
    rung = next((r for r in board.ladders[generator].rungs if r.bypass == bypass), None)
    return rung.faces if rung else None


def save_transform_figure(board: Board, path: Path) -> bool:
    """DSR against each channel transform's strength (see the module's docstring); False
    where no transform of the board declares a strength."""
    families: dict[str, list[str]] = {}
    for label, cost in board.bypass_costs.items():
        if cost["rung"] == CHANNEL_TRANSFORM and cost.get("strength"):
            families.setdefault(cost["plugin"], []).append(label)
    if not families:
        return False
    plt, colour = pyplot(), colours(board)
    generators, names = list(board.generators), sorted(families)
    fig, axes = plt.subplots(len(generators), len(names), figsize=(2.5 * len(names) + 0.8, 2.3 * len(generators)),
                             squeeze=False, sharey=True)
    for row, g in enumerate(generators):
        for col, plugin in enumerate(names):
            ax = axes[row][col]
            strengths = {b: board.bypass_costs[b]["strength"] for b in families[plugin]}
            for entry in ordered_entries(board.entries):
                cells = standard_cells(entry, g)
                points = sorted(((strengths[b]["value"], cells[b]) for b in families[plugin] if b in cells),
                                key=lambda point: point[0])
                plot_with_band(ax, [v for v, _ in points], [c for _, c in points], colour[entry.label],
                               label=entry.label)
            strength = next(iter(strengths.values()))
            if strength.get("stronger") == "lower":
                ax.invert_xaxis()
            threshold_line(ax, board)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(plugin, fontsize=9)
            if row == len(generators) - 1:
                ax.set_xlabel(f"{strength['name']} (stronger →)", fontsize=8)
        axes[row][0].set_ylabel(f"{g}\nDSR (higher: protected)", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="lower left", title="defense", title_fontsize=7)
    save(fig, path)
    return True
