"""Image grids and plots for results."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from bench.io import atomic_write


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (some generators overshoot)."""
    return ((x + 1) / 2).clamp(0, 1)


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
    outputs = [generator(x, c) for c in conditions]
    save_image_grid([x, *outputs], path)
