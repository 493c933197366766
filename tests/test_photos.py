"""Photos as people have them: read as seen (EXIF applied), in their own depth and mode,
and written back with only the changed pixels different, each within the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.contract.errors import DataError
from bench.toolkit.photos import read_photo


def noise(shape, seed=0, top=255, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, top + 1, shape).astype(dtype)


@pytest.mark.parametrize("mode, shape", [("RGB", (30, 40, 3)), ("L", (30, 40))])
def test_eight_bit_photos_read_and_write_back_identically(tmp_path, mode, shape):
    pixels = noise(shape)
    Image.fromarray(pixels, mode).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    assert photo.size == (40, 30) and photo.top == 255 and photo.notes == []
    photo.save_png(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as copy:
        assert copy.mode == mode and np.array_equal(np.asarray(copy), pixels)


def test_alpha_is_kept_as_it_was(tmp_path):
    rgba = noise((20, 24, 4), seed=1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    assert photo.pixels.shape == (20, 24, 3) and np.array_equal(photo.alpha, rgba[..., 3])
    photo.save_png(tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgba)


def test_sixteen_bit_greyscale_keeps_its_depth(tmp_path):
    grey = noise((16, 20), seed=2, top=65535, dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    assert photo.top == 65535 and photo.levels(0.05) == 1638
    assert photo.rgb().mode == "RGB" and np.array_equal(np.asarray(photo.rgb())[..., 0], (grey >> 8).astype(np.uint8))
    photo.save_png(tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")).astype(np.uint16), grey)


def test_exif_orientation_is_applied(tmp_path):
    pixels = noise((30, 40, 3), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "a.jpg", exif=exif, quality=100)
    photo = read_photo(tmp_path / "a.jpg")
    assert photo.size == (30, 40) and photo.notes == ["EXIF orientation 6 applied"]


def test_modes_that_cannot_hold_a_small_change_are_read_as_colour_with_a_note(tmp_path):
    Image.fromarray(noise((12, 12, 3), seed=4)).convert("CMYK").save(tmp_path / "a.jpg")
    photo = read_photo(tmp_path / "a.jpg")
    assert photo.pixels.shape == (12, 12, 3) and photo.notes == ["mode CMYK read as 8-bit colour"]


def test_unreadable_photo_is_one_data_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a photo")
    with pytest.raises(DataError, match="cannot read photo"):
        read_photo(tmp_path / "a.jpg")


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_changes_land_only_under_the_mask_and_within_eps_of_the_original(tmp_path, mode):
    Image.fromarray(noise((20, 20, 3) if mode == "RGB" else (20, 20), seed=5), mode).save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    box = (4, 2, 12, 14)
    wild = torch.rand(1, 3, 12, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1  # far beyond any budget
    mask = torch.zeros(12, 8, dtype=torch.bool)
    mask[3:9, 2:6] = True
    changed = photo.with_changes(box, wild, mask, photo, eps=0.05)
    difference = np.abs(changed.pixels.astype(int) - photo.pixels.astype(int)).max(axis=2)
    assert difference.max() == photo.levels(0.05) == 6
    outside = np.ones_like(difference, dtype=bool)
    outside[2 + 3:2 + 9, 4 + 2:4 + 6] = False
    assert difference[outside].max() == 0 and changed.pixels.dtype == np.uint8
