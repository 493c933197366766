"""Image grids and plots for results."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from bench.contract.io import atomic_write


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (some generators overshoot)."""
    return ((x + 1) / 2).clamp(0, 1)


def eight_bit(unit: torch.Tensor) -> torch.Tensor:
    """[0, 1] values saturated and rounded to 8-bit steps, as an image file stores them
    (what networks calibrated on image files, such as FID's Inception, expect)."""
    return torch.round(unit.clamp(0, 1) * 255) / 255


def save_image_grid(rows: list[torch.Tensor], path: str | Path) -> None:
    """rows: tensors (N, 3, H, W) in [-1, 1], one per column; image n of each
    tensor goes into row n."""
    from PIL import Image

    columns = torch.stack([to_unit(r.detach().float().cpu()) for r in rows], dim=1)  # N x C x 3HW
    n, c = columns.shape[:2]
    grid = make_grid(columns.reshape(n * c, *columns.shape[2:]), nrow=c, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


@torch.no_grad()
def save_edit_grid(generator, x: torch.Tensor, labels: torch.Tensor, path: str | Path) -> None:
    """One row per face: the input, then the generator's output for each target."""
    conditions = generator.targets(labels)
    with torch.no_grad():
        outputs = [generator(x, c) for c in conditions]
    save_image_grid([x, *outputs], path)


def save_titled_grid(columns: list[tuple[str, torch.Tensor]], path: str | Path, title: str = "") -> None:
    """A grid with a title over each column: columns are (title, images (N,3,H,W) in [-1,1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = columns[0][1].size(0), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.3 * n_rows + 0.7), squeeze=False)
    for j, (name, images) in enumerate(columns):
        images = to_unit(images.detach().float().cpu())
        for i in range(n_rows):
            ax = axes[i][j]
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
    height = fig.get_size_inches()[1]
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, width=int(14 * n_cols))), fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - (0.55 if title else 0.1) / height))
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grouped_bars(table, path: str | Path, ylabel: str) -> None:
    """One panel per first index level (e.g. generator), one group of bars per second
    level (e.g. bypass), one bar per column (e.g. scenario)."""
    plt = _pyplot()
    panels = list(dict.fromkeys(table.index.get_level_values(0)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        part = table.loc[panel]
        width = 0.8 / len(part.columns)
        for j, column in enumerate(part.columns):
            ax.bar([i + j * width for i in range(len(part))], part[column].fillna(0).to_numpy(), width, label=column)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(part))])
        ax.set_xticklabels(part.index, rotation=45, ha="right", fontsize=7)
        ax.set_title(panel, fontsize=9)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def save_loss_curves(curves: dict, path: str | Path, every: int = 10) -> None:
    """Loss curves {(panel, label): [loss per step]}, averaged over blocks of `every` steps,
    one panel per first key, log scale."""
    plt = _pyplot()
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
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
