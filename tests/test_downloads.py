"""`bench download` verifies each file by size and SHA-256 (verified, different,
unverified, missing), and a run refuses an official checkpoint that is not verified
unless allowed, recording what it loaded."""

from __future__ import annotations

import hashlib
import json
import shutil

import torch

from bench.contract.io import file_sha256
from bench.harness.cli import main
from bench.harness.downloads import DIFFERENT, MISSING, UNVERIFIED, VERIFIED, Expected, check
from tests.conftest import make_face_folder, shared_path
from tests.paper_weights import write_generators


def test_a_file_is_verified_by_size_and_hash_and_a_known_other_release_is_named(tmp_path):
    path = tmp_path / "200000-G.ckpt"
    path.write_bytes(b"released")
    released = hashlib.sha256(b"released").hexdigest()
    assert check(Expected("g", path, "src", released, 8)).state == VERIFIED
    assert check(Expected("g", path, "src", released[:8])).state == VERIFIED  # a torch hub prefix
    assert check(Expected("g", path, "src", released, 9)).state == DIFFERENT  # the size is part of it
    assert check(Expected("g", path, "src", None)).state == UNVERIFIED
    assert check(Expected("g", tmp_path / "absent", "src", released)).state == MISSING
    other = check(Expected("g", path, "src", "0" * 64, others={released: "the 128 px release"}))
    assert other.state == DIFFERENT and "the 128 px release" in other.detail and "not be comparable" in other.detail


def test_bench_download_on_a_right_a_wrong_and_no_file(tmp_path, monkeypatch, capsys):
    comdefend = shared_path("weights", "comdefend")
    reference = shared_path("reference")
    weights = tmp_path / "weights"
    shutil.copytree(comdefend, weights / "comdefend")  # the official files: right
    write_generators(weights, reference)  # official layouts, random values: wrong
    (weights / "hisd" / "gen_00600000.pt").unlink()  # none
    monkeypatch.setenv("BENCH_WEIGHTS", str(weights))
    assert main(["download"]) == 1  # a file is different
    lines = capsys.readouterr().out.splitlines()
    state = {line.split(":")[0]: line.split(":")[1].strip() for line in lines if not line.startswith((" ", "bench"))}
    assert state["comdefend enc20_0.0001.npy"] == state["comdefend dec20_0.0001.npy"] == VERIFIED
    assert state["stargan"] == state["attgan"] == DIFFERENT and state["hisd"] == MISSING
    stargan = next(line for line in lines if line.startswith("stargan:"))
    assert "399a26023ec159fd" in stargan and "not be comparable with the paper's" in stargan

    release_name = weights / "hisd" / "checkpoint_256_celeba-hq.pt"  # HiSD's own release: accepted, no hash
    torch.save({"gen_test": {}}, release_name)
    assert main(["download", "hisd"]) == 0
    assert f"hisd: {UNVERIFIED}: {release_name}" in capsys.readouterr().out


def test_a_run_refuses_an_unverified_official_checkpoint_unless_allowed(tmp_path, monkeypatch, capsys):
    reference = shared_path("reference")
    write_generators(tmp_path / "weights", reference)
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    data = make_face_folder(tmp_path / "faces", n=4, size=(16, 16))
    args = ["run", "--profile", "ci", "--defenses", "disrupting", "--bypass", "none", "--generators", "stargan",
            "--data", str(data), "--dataset", "folder", "--set", "generators.stargan.weights=official",
            "--set", "resolution=16", "--set", "splits.eval=[2,4]", "--set", 'metrics=["l2"]',
            "--output", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "official stargan checkpoint different" in err and "allow_unverified_weights=true" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "cells.jsonl").exists()

    assert main([*args, "--set", "allow_unverified_weights=true"]) == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["allow_unverified_weights"] is True
    found = record["official_weights"]["stargan"]
    assert found["state"] == DIFFERENT and found["sha256"] == file_sha256(tmp_path / "weights" / "stargan" /
                                                                          "200000-G.ckpt")
