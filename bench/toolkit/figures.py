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
