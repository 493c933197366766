"""The report's plots (matplotlib, no torch): Fig. 5's grouped bars with their 95%
intervals, Fig. 8's loss curves and the transfer scenario's matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.contract.io import atomic_write


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grouped_bars(table, path: str | Path, ylabel: str) -> None:
    """One panel per first index level (e.g. generator), one group of bars per second
    level (e.g. bypass), one bar per column (e.g. scenario); `table` a reporting Table,
    whose intervals, where it has them, are drawn as error bars."""
    plt = pyplot()
    values = table.value
    panels = list(dict.fromkeys(values.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        part = values.loc[panel]
        width = 0.8 / len(part.columns)
        for j, column in enumerate(part.columns):
            heights = part[column].fillna(0).to_numpy()
            errors = None
            if table.has_intervals:
                low, high = table.low.loc[panel][column].to_numpy(), table.high.loc[panel][column].to_numpy()
                errors = [(heights - low).clip(0), (high - heights).clip(0)]
            ax.bar([i + j * width for i in range(len(part))], heights, width, label=column, yerr=errors,
                   error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(part))])
        ax.set_xticklabels(part.index, rotation=45, ha="right", fontsize=7)
        ax.set_title(panel, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7)
    save(fig, path)


def save(fig, path: str | Path) -> None:
    """The figure as a PNG, its bounding box fitted to what it draws (no label cut at an edge)."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    pyplot().close(fig)


def save_loss_curves(curves: dict, path: str | Path, every: int = 10) -> None:
    """Loss curves {(panel, label): [loss per step]}, averaged over blocks of `every` steps,
    one panel per first key, log scale."""
    plt = pyplot()
    panels = list(dict.fromkeys(k[0] for k in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 2.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for (p, label), curve in curves.items():
            if p != panel or not curve:
                continue
            blocks = [sum(curve[i:i + every]) / len(curve[i:i + every]) for i in range(0, len(curve), every)]
            ax.plot([i * every for i in range(len(blocks))], blocks, label=label)
        ax.set_yscale("log")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"loss (mean of {every} steps)", fontsize=8)
    save(fig, path)


def save_matrices(table, path: str | Path, label: str, xlabel: str) -> None:
    """One heat map per first index level (e.g. defense): its rows (second level) against
    the columns, each cell printed with its value (colours from 0 to 1, as `label` says)."""
    plt = pyplot()
    values = table.value
    panels = list(dict.fromkeys(values.index.get_level_values(0)))
    width = max(2.6, 0.9 * len(values.columns) + 1.6)
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        part = values.loc[panel].astype(float)
        ax.imshow(part.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(part.to_numpy()):
            if v == v:  # not NaN
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(part.columns)))
        ax.set_xticklabels([str(c).split(" ")[0] for c in part.columns], fontsize=7)
        ax.set_yticks(range(len(part.index)))
        ax.set_yticklabels([str(r) for r in part.index], fontsize=7)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=7)
    fig.suptitle(label, fontsize=9)
    save(fig, path)
