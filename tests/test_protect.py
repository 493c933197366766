"""`bench protect`: one protected PNG per photo, within the budget as written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.harness.cli import main
from bench.harness.protect import copy_names, eight_bit
from bench.toolkit.data import read_image
from tests.conftest import make_face_folder


def test_eight_bit_copies_stay_within_eps_of_the_photo_after_rounding():
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 256, (4, 3, 8, 8), generator=gen).float() / 127.5 - 1
    eps = 0.06  # 7.65 levels: rounding alone could reach 8
    protected = (clean + (torch.rand(clean.shape, generator=gen) * 2 - 1) * eps).clamp(-1, 1)
    protected[0, 0, 0, 0] = clean[0, 0, 0, 0] + eps  # the worst case
    copies = eight_bit(protected, clean, eps).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (copies - clean).abs().max() <= eps


def test_copy_names_keep_stems_unless_two_photos_share_one():
    assert copy_names([Path("a.jpg"), Path("b.png")]) == ["a.png", "b.png"]
    assert copy_names([Path("a.jpg"), Path("a.png"), Path("c.bmp")]) == ["a.jpg.png", "a.png.png", "c.png"]


def test_protect_writes_one_copy_per_photo_within_eps_and_scores_the_written_copies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photos = make_face_folder(tmp_path / "photos", n=5, size=(90, 70), with_labels=False)
    out = tmp_path / "protected"
    args = ["protect", "--profile", "ci", "--defense", "disrupting", "--generators", "stargan,attgan"]
    assert main([*args, str(photos), str(out)]) == 0
    report = json.loads((out / "report" / "protect.json").read_text())
    assert report["photos"] == 5 and report["labels_inferred_by"]["classifier"] == "attribute_classifier"
    for generator, folder in report["folders"].items():
        copies = sorted(Path(folder).glob("*.png"))
        assert [c.name for c in copies] == [f"{i}.png" for i in range(1, 6)]
        for copy in copies:
            written = np.asarray(Image.open(copy)).astype(int)
            original = read_image(photos / copy.name, 64).astype(int)
            assert written.shape == (64, 64, 3)
            assert np.abs(written - original).max() / 127.5 <= report["eps"]
    rows = {r["generator"]: r for r in report["generators"]}
    assert set(rows) == {"stargan", "attgan"}
    assert all(0 < r["linf"] <= report["eps"] and 0 <= r["dsr"] <= 1 and r["edits"] > 0 for r in rows.values())
    assert (out / "report" / "report.md").exists() and (out / "report" / "protect.md").exists()
