"""Released fits: a run's fits, released, serve a later run of the same recipe on an
empty cache (marked `released`, the same rows); --refit fits anew; a damaged or foreign
release is never used."""

from __future__ import annotations

import json

import pytest

from bench.contract.errors import BenchError
from bench.harness.cli import main
from bench.harness.released import release
from tests.conftest import make_face_folder


@pytest.fixture
def released_folder(tmp_path, monkeypatch):
    folder = tmp_path / "released"
    monkeypatch.setenv("BENCH_RELEASED_FITS", str(folder))
    return folder


def run_cli(tmp_path, weights, out, cache, monkeypatch, extra=()):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / cache))
    data = make_face_folder(tmp_path / "faces", n=16, size=(20, 20))
    args = ["run", "--defenses", "pg", "--bypass", "none,lora", "--generators", "stargan", "--profile", "ci",
            "--data", str(data), "--dataset", "folder", "--output", str(out),
            "--set", f"generators.stargan.weights={weights}", "--set", "resolution=16",
            "--set", "splits.finetune=[0,8]", "--set", "splits.defense=[0,8]", "--set", "splits.eval=[8,16]",
            "--set", 'metrics=["l2","dsr"]', "--set", "leakage.defenses=all", *extra]
    assert main(args) == 0
    return out


def rows(out):
    return sorted((r["scenario"], r["defense"], r["bypass"], r["metric"], r.get("reference"), r["value"])
                  for r in map(json.loads, (out / "cells.jsonl").read_text().splitlines()))


def statuses(out) -> dict[str, str]:
    steps = json.loads((out / "run.json").read_text())["plan"]["steps"]["list"]
    return {s["what"]: s["status"] for s in steps if s["id"].split("/")[0] in ("fit", "defense_fit")}


def test_released_fits_serve_the_same_recipe_and_refit_fits_anew(tmp_path, tiny_stargan_file, released_folder,
                                                                   monkeypatch, capsys):
    made = run_cli(tmp_path, tiny_stargan_file, tmp_path / "made", "cache-a", monkeypatch)
    fits = statuses(made)
    # LoRA on StarGAN, PG against StarGAN, PG against the LoRA pipeline (leakage)
    assert len(fits) == 3 and set(fits.values()) == {"ran"}
    index = release(made, released_folder, allow_dirty=True)
    assert {entry["what"] for entry in index} == set(fits)
    assert all(entry["bytes"] > 0 and len(entry["sha256"]) == 64 for entry in index)
    assert json.loads((released_folder / "timings.json").read_text())["probe_seconds"] > 0
    capsys.readouterr()

    served = run_cli(tmp_path, tiny_stargan_file, tmp_path / "served", "cache-b", monkeypatch)
    assert set(statuses(served).values()) == {"released"}
    assert "3 fits of this recipe come released with bench" in capsys.readouterr().out
    assert rows(served) == rows(made)
    costs = [json.loads(line) for line in (served / "costs.jsonl").read_text().splitlines()]
    assert all(c["released"] for c in costs)
    assert not (tmp_path / "cache-b" / "fit").exists()  # the run's own cache holds no copy

    refit = run_cli(tmp_path, tiny_stargan_file, tmp_path / "refit", "cache-c", monkeypatch, ["--refit"])
    assert set(statuses(refit).values()) == {"ran"}
    assert json.loads((refit / "run.json").read_text())["config"]["released_fits"] is False
    assert rows(refit) == rows(made)  # the same recipe on the same machine: the same fits


def test_a_damaged_release_is_refitted_and_another_recipe_is_not_served(tmp_path, tiny_stargan_file,
                                                                        released_folder, monkeypatch):
    made = run_cli(tmp_path, tiny_stargan_file, tmp_path / "made", "cache-a", monkeypatch)
    release(made, released_folder, allow_dirty=True)
    damaged = next(released_folder.glob("fit/*/*/tensors.safetensors"))
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\0" * 8)
    with pytest.warns(UserWarning, match="released fit .* is damaged"):
        run = run_cli(tmp_path, tiny_stargan_file, tmp_path / "damaged", "cache-b", monkeypatch)
    assert statuses(run)["fit lora on stargan"] == "ran"
    assert damaged.exists()  # a release is read-only: reported, never removed

    other = run_cli(tmp_path, tiny_stargan_file, tmp_path / "other", "cache-c", monkeypatch,
                    ["--set", "bypasses.lora.rank=4"])
    assert statuses(other)["fit lora on stargan"] == "ran"


def test_release_refuses_a_run_that_read_released_fits(tmp_path, tiny_stargan_file, released_folder, monkeypatch):
    made = run_cli(tmp_path, tiny_stargan_file, tmp_path / "made", "cache-a", monkeypatch)
    release(made, released_folder, allow_dirty=True)
    served = run_cli(tmp_path, tiny_stargan_file, tmp_path / "served", "cache-b", monkeypatch)
    with pytest.raises(BenchError, match="--refit"):
        release(served, tmp_path / "again", allow_dirty=True)


def test_the_release_covers_the_main_jobs_fits_and_each_file_is_its_hash():
    """Every fit of `bench run --defenses all --bypass lora` (the quick profile on the demo
    faces) comes released, on any CPU (fits' sign steps are float32 everywhere)."""
    from bench.harness.cache import Cache
    from bench.harness.plan import FIT_KINDS
    from bench.harness.profiles import get_profile
    from bench.harness.released import RELEASED
    from bench.harness.runner import plan_run

    index = json.loads((RELEASED / "index.json").read_text())
    plan, _ = plan_run(get_profile("quick"), "all", "lora", "all")
    fits = {sid for sid, s in plan.steps.items() if s.kind in FIT_KINDS}
    assert fits and fits <= {entry["id"] for entry in index["fits"]}
    store = Cache(RELEASED, read_only=True, kinds=FIT_KINDS)
    for entry in index["fits"]:
        kind, key = entry["id"].split("/")
        assert store.load(kind, key) is not None, entry["what"]
    assert index["made_by"]["dirty"] is False and index["made_by"]["commit"]
