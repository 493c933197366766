"""Image grids and plots for results."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid

from bench.contract.io import atomic_write

CELL = 128  # the least size of an image in a titled grid, in pixels


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
    """A grid with a title over each column: columns are (title, images (N,3,H,W) in [-1,1]).
    Drawn with PIL, each image enlarged by whole pixels to at least CELL px and framed (a
    plotting library took seconds per grid: most of a cached re-run's time)."""
    import math
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font, gap = ImageFont.load_default(size=11), 6
    n_rows, (h, w) = columns[0][1].size(0), columns[0][1].shape[-2:]
    scale = max(1, math.ceil(CELL / max(h, w)))
    cell_h, cell_w = h * scale + 2, w * scale + 2  # with a 1 px frame
    wrapped = "\n".join(textwrap.wrap(title, width=int(17 * len(columns)))) if title else ""
    title_h = (text_height(wrapped, font) + 2 * gap) if wrapped else gap
    head_h = max(text_height(name, font) for name, _ in columns) + gap
    canvas = Image.new("RGB", (gap + len(columns) * (cell_w + gap), title_h + head_h + n_rows * (cell_h + gap)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    if wrapped:
        draw.multiline_text((canvas.width / 2, gap), wrapped, fill="black", font=font, anchor="ma", align="center")
    for j, (name, images) in enumerate(columns):
        left = gap + j * (cell_w + gap)
        draw.multiline_text((left + cell_w / 2, title_h + head_h - gap // 2), name, fill="black", font=font,
                            anchor="md", align="center")
        pixels = (to_unit(images.detach().float().cpu()) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(n_rows):
            top = title_h + head_h + i * (cell_h + gap)
            draw.rectangle((left, top, left + cell_w - 1, top + cell_h - 1), outline="black")
            canvas.paste(Image.fromarray(pixels[i]).resize((w * scale, h * scale), Image.NEAREST), (left + 1, top + 1))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def text_height(text: str, font) -> int:
    """The height of `text` (lines and all) drawn from the top in `font`, in pixels."""
    from PIL import Image, ImageDraw

    return ImageDraw.Draw(Image.new("1", (1, 1))).multiline_textbbox((0, 0), text, font=font)[3]
