"""`bench protect` on photos composed here: demo faces pasted at offsets and scales into
larger backgrounds, two faces in one, none, an EXIF-rotated copy, greyscale and alpha.
Each copy has its photo's size, its background untouched, every pixel within eps as
written, and StarGAN's edits of it disrupted as an attacker cuts it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.harness import cli, protect
from bench.harness.cli import main
from bench.harness.protect import copy_names
from bench.toolkit.composed_photos import background, compose
from bench.toolkit.data import DEMO_FACES
from bench.toolkit.face_align import bounds


def demo_face(i: int) -> np.ndarray:
    return np.asarray(Image.open(DEMO_FACES / f"{i:06d}.png").convert("RGB"))


def test_copy_names_keep_stems_unless_two_photos_share_one():
    assert copy_names([Path("a.jpg"), Path("b.png")]) == ["a.png", "b.png"]
    assert copy_names([Path("a.jpg"), Path("a.png"), Path("c.bmp")]) == ["a.jpg.png", "a.png.png", "c.png"]


def test_the_cli_default_crop_jitter_is_protects():
    assert cli.CROP_JITTER_DEFAULT == protect.CROP_JITTER


def outside_faces(size: tuple[int, int], faces) -> np.ndarray:
    """(H, W) bool: every pixel farther than the pasted squares' boxes (grown as `bounds` grows them)."""
    keep = np.ones((size[1], size[0]), dtype=bool)
    for quad in faces:
        grown = quad.shifted(0, 0, 1.1)
        left, top, right, bottom = bounds([grown], *size, margin=8)
        keep[top:bottom, left:right] = False
    return keep


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """One run of `bench protect` (Disrupting, StarGAN) over a folder of composed photos."""
    root = tmp_path_factory.mktemp("protect")
    photos, truth = root / "photos", {}
    photos.mkdir()
    one = compose([demo_face(1)], (300, 230), [2.5], seed=1)
    one.image.save(photos / "offset.png")
    two = compose([demo_face(2), demo_face(3)], (520, 300), [3.0, 2.0], seed=2)
    two.image.save(photos / "two.png")
    Image.fromarray(background(200, 150, seed=3)).save(photos / "none.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored turned; shown rotated 90 degrees counter-clockwise
    one.image.transpose(Image.Transpose.ROTATE_270).save(photos / "rotated.jpg", exif=exif, quality=95)
    grey = compose([demo_face(4)], (260, 200), [2.0], seed=4)
    grey.image.convert("L").save(photos / "grey.png")
    alpha = compose([demo_face(5)], (240, 240), [2.0], seed=5)
    rgba = alpha.image.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 240, dtype=np.uint8), (240, 1))))
    rgba.save(photos / "alpha.png")
    truth = {"offset": one, "two": two, "rotated": one, "grey": grey, "alpha": alpha}
    out = root / "protected"
    args = ["protect", "--defense", "disrupting", "--generators", "stargan", str(photos), str(out)]
    assert main(args) == 0
    return photos, out, truth, args


def test_copies_keep_each_photos_size_mode_and_background_within_eps(protected):
    photos, out, truth, _ = protected
    report = json.loads((out / "report" / "protect.json").read_text())
    assert report["photos"] == 6 and report["protected"] == 5 and report["eps"] == 0.05
    assert [Path(p).name for p in report["no_face"]] == ["none.png"] and not (out / "none.png").exists()
    for name, composed in truth.items():
        source = next(photos.glob(f"{name}.*"))
        with Image.open(source) as original_file, Image.open(out / f"{name}.png") as copy_file:
            # the rotated photo's copy is upright, as the photo is shown
            original = np.asarray(ImageOps.exif_transpose(original_file) if name == "rotated" else original_file)
            copy = np.asarray(copy_file)
            assert copy_file.size == composed.image.size, name
            assert copy_file.mode == {"grey": "L", "alpha": "RGBA"}.get(name, "RGB"), name
        difference = np.abs(copy.astype(int) - original.astype(int))
        difference = difference if difference.ndim == 2 else difference.max(axis=2)
        assert 0 < difference.max() <= np.floor(0.05 * 127.5), name
        assert difference[outside_faces(composed.image.size, composed.faces)].max() == 0, name
    assert np.array_equal(np.asarray(Image.open(out / "alpha.png"))[..., 3],
                          np.asarray(Image.open(photos / "alpha.png"))[..., 3])


def test_the_report_measures_the_copies_as_an_attacker_cuts_them(protected):
    _, out, _, _ = protected
    report = json.loads((out / "report" / "protect.json").read_text())
    (stargan,) = report["generators"]
    assert stargan["generator"] == "stargan" and stargan["faces"] == 6 and stargan["all_within_eps"]
    assert stargan["changed_outside_faces"] == 0
    assert stargan["faces_found_in_copies"] == 6 and stargan["dsr"] > 0.5  # the edits are disrupted
    assert 0 <= stargan["centre_crop"]["dsr"] <= 1 and 0 <= stargan["jpeg90"]["dsr"] <= 1
    lines = (out / "report" / "photos.csv").read_text().splitlines()
    assert len(lines) == 1 + 6 and lines[0].startswith("photo,copy,generator")
    assert "DSR detector" in (out / "report" / "protect.md").read_text()


def test_a_second_run_reads_every_photo_back(protected, capsys):
    _, out, _, args = protected
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == before
    assert "no face found" in capsys.readouterr().err


def test_a_folder_without_photos_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["protect", "--defense", "disrupting", str(tmp_path / "empty"), str(tmp_path / "out")]) != 0
    assert "no photos" in capsys.readouterr().err


@pytest.mark.slow
def test_a_twelve_megapixel_photo(tmp_path):
    photo = compose([demo_face(6)], (4000, 3000), [4.0], seed=6)
    photo.image.save(tmp_path / "big.jpg", quality=92)
    out = tmp_path / "out"
    assert main(["protect", "--defense", "disrupting", "--generators", "stargan", str(tmp_path / "big.jpg"),
                 str(out)]) == 0
    copy = np.asarray(Image.open(out / "big.png")).astype(int)
    original = np.asarray(Image.open(tmp_path / "big.jpg")).astype(int)
    assert copy.shape == (3000, 4000, 3)
    difference = np.abs(copy - original).max(axis=2)
    assert 0 < difference.max() <= 6 and difference[outside_faces((4000, 3000), photo.faces)].max() == 0


def test_settings_against_a_defenses_per_image_settings_are_refused():
    from bench.contract.errors import BenchError
    from bench.harness.profiles import get_profile

    config = get_profile("ci")
    assert protect.protect_config(config, "raw")["defenses"]["raw"]["variant"] == "joint"
    config["defenses"]["raw"] = {"variant": "per_target"}
    with pytest.raises(BenchError, match="per_image_settings"):
        protect.protect_config(config, "raw")
