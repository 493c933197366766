import numpy as np
import torch
from PIL import Image

from bench.toolkit.figures import CELL, save_titled_grid


def test_titled_grid_puts_each_image_in_its_column_and_row_enlarged(tmp_path):
    """Column j, row i holds image i of column j, enlarged by whole pixels to CELL, under
    the titles."""
    n_rows, size = 3, 32
    colours = [(-1.0, 1.0), (1.0, -1.0)]  # (red, blue): a blue column, then a red one
    columns = []
    for j, (red, blue) in enumerate(colours):
        images = torch.empty(n_rows, 3, size, size)
        images[:, 0], images[:, 2] = red, blue
        images[:, 1] = torch.linspace(-1, 1, n_rows).view(n_rows, 1, 1)  # green tells the row
        columns.append((f"column {j}\nsecond line", images))
    path = tmp_path / "grid.png"
    save_titled_grid(columns, path, "a title over the whole grid")
    grid = np.asarray(Image.open(path).convert("RGB")).astype(int)

    lefts = []
    for red, blue in colours:
        mask = (grid[..., 0] == (255 if red > 0 else 0)) & (grid[..., 2] == (255 if blue > 0 else 0))
        full_rows = np.flatnonzero(mask.sum(1) == CELL)  # grid rows crossing one cell of this column
        tops = [r for r in full_rows if r - 1 not in full_rows]
        assert len(tops) == n_rows and len(full_rows) == n_rows * CELL
        greens = [grid[top, mask[top], 1].mean() for top in tops]
        assert greens == sorted(greens) and greens[0] == 0 and greens[-1] == 255  # row i holds image i
        lefts.append(np.flatnonzero(mask.any(0)).min())
    assert lefts[0] < lefts[1]
    assert (grid[:tops[0]].max(-1) < 100).any()  # dark text above the images
