import errno
import json
import shutil

import pytest
import torch

from bench.contract.errors import BenchError
from bench.harness.cache import Cache, make_key
from bench.harness.cli import main
from tests.conftest import make_face_folder


def test_put_get_roundtrip_and_verification(tmp_path):
    cache = Cache(tmp_path)
    parts = {"step": "clean", "seed": 0}
    value = torch.arange(6.0).view(2, 3)
    cache.put("clean", parts, {"value": value}, {"seconds": 1.5})
    tensors, info = cache.get("clean", parts)
    assert torch.equal(tensors["value"], value) and info["seconds"] == 1.5
    assert cache.get("clean", {**parts, "seed": 1}) is None


def test_damaged_entry_is_dropped(tmp_path):
    cache = Cache(tmp_path)
    parts = {"x": 1}
    cache.put("protect", parts, {"value": torch.ones(3)})
    entry = cache.path("protect", make_key(parts))
    data = (entry / "tensors.safetensors").read_bytes()
    (entry / "tensors.safetensors").write_bytes(data[:-4] + b"\x00\x00\x00\x01")
    assert cache.get("protect", parts) is None
    assert not entry.exists()


def test_a_full_disk_is_one_clear_error_and_leaves_no_half_entry(tmp_path, monkeypatch):
    def no_space(path, *_):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("bench.harness.cache.save_tensors", no_space)
    cache = Cache(tmp_path)
    with pytest.raises(BenchError, match="cannot store cache entry .*No space left on device"):
        cache.put("protect", {"x": 1}, {"value": torch.ones(3)})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert cache.get("protect", {"x": 1}) is None


def test_a_copy_of_the_data_in_another_folder_reuses_the_cache(tmp_path, monkeypatch):
    """Keys name the images by ids and pixels, not by the folder (a second clone, a moved data set)."""
    monkeypatch.chdir(tmp_path)
    first = make_face_folder(tmp_path / "here" / "faces", n=6)
    second = shutil.copytree(first, tmp_path / "elsewhere" / "faces-copy")
    args = ["run", "--profile", "ci", "--generators", "stargan", "--defenses", "disrupting", "--bypass", "none,jpeg",
            "--dataset", "folder"]
    assert main([*args, "--data", str(first), "--output", "a"]) == 0
    assert main([*args, "--data", str(second), "--output", "b"]) == 0
    rows = (tmp_path / "b" / "cells.jsonl").read_text().splitlines()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["cache_hits"] == len(rows) > 0
    assert all(json.loads(r)["cache_hit"] for r in rows)


def test_generator_weights_change_the_key(tiny_stargan):
    key_before = make_key({"generator": tiny_stargan.identity()})
    with torch.no_grad():
        tiny_stargan.main[0].weight[0, 0, 0, 0] += 1e-3
    assert make_key({"generator": tiny_stargan.identity()}) != key_before


def test_disabled_cache_stores_nothing(tmp_path):
    cache = Cache(tmp_path, enabled=False)
    cache.put("clean", {"a": 1}, {"value": torch.ones(1)})
    assert cache.get("clean", {"a": 1}) is None
    assert not any(tmp_path.iterdir())
