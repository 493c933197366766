"""Bad and unusual inputs over every command, as a new user would try them.

A bad input ends with exit code 2 and exactly one `bench: error:` line, no traceback;
an unusual but valid one exits 0. Each case runs `bench`'s `main` in this process (what
the `bench` script calls). With BENCH_FUZZ_TABLE=FILE the table of input, expected and
got is written there (Markdown).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.harness.cli import main
from tests.conftest import CELEBA_ATTRS, ROOT, make_face_folder, write_attribute_file

ERROR, OK = 2, 0
TINY = ["--profile", "ci", "--generators", "stargan", "--defenses", "disrupting", "--bypass", "none"]
RESULTS: list[tuple[str, str, str, str]] = []


@dataclass
class Case:
    name: str
    argv: list[str]  # "{w}" stands for the world folder below
    expected: int = ERROR
    env: dict = field(default_factory=dict)


class Marker:
    """Unpickling this writes a file: a checkpoint that executes code if loaded unsafely."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def build_world(w: Path) -> None:
    """Data folders, label files, weight files and plain files for the cases."""
    make_face_folder(w / "labelled", n=6)
    make_face_folder(w / "unlabelled", n=6, with_labels=False)
    make_face_folder(w / "corrupt", n=6)
    (w / "corrupt" / "5.png").write_bytes(b"\x89PNG but not really")
    (w / "empty").mkdir()
    (w / "not_images").mkdir()
    (w / "not_images" / "notes.txt").write_text("no images here")
    make_face_folder(w / "short_labels", n=6, with_labels=False)
    write_attribute_file(w / "short_labels" / "list_attr_x.txt", ["1.png", "2.png"], CELEBA_ATTRS)
    make_face_folder(w / "bad_labels", n=6)
    (w / "bad_labels" / "list_attr_test.txt").write_text("6\nMale Young\n1.png 1\n")
    (w / "celebahq_nolabels" / "images_64").mkdir(parents=True)
    odd_images(w / "odd")
    (w / "afile.txt").write_text("a file, not a folder")
    (w / "not_a_run").mkdir()
    (w / "not_a_run" / "cells.jsonl").write_text('{"x": 1}\n')
    (w / "not_a_run" / "run.json").write_text("[]")
    (w / "damaged_bookkeeping").mkdir()
    (w / "damaged_bookkeeping" / "run.json").write_text("[1]")
    (w / "damaged_bookkeeping" / "plan.json").write_text('"a string"')
    for generator, name in (("stargan", "200000-G.ckpt"),):
        (w / "garbage_weights" / generator).mkdir(parents=True)
        (w / "garbage_weights" / generator / name).write_bytes(os.urandom(256))
        (w / "pickle_weights" / generator).mkdir(parents=True)
        with open(w / "pickle_weights" / generator / name, "wb") as f:
            pickle.dump({"G": Marker(str(w / "executed"))}, f)


def odd_images(folder: Path) -> None:
    """Image modes and sizes people have: greyscale, RGBA, CMYK, 16-bit, palette, 7x7 px."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "grey.png")
    rgb.convert("RGBA").save(folder / "alpha.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(folder / "sixteen.png")
    rgb.convert("P").save(folder / "palette.bmp")
    rgb.resize((7, 7)).save(folder / "tiny.webp")
    files = sorted(p.name for p in folder.iterdir())
    write_attribute_file(folder / "list_attr_odd.txt", files, CELEBA_ATTRS)


CASES = [
    # --- command-line flags ----------------------------------------------------------------
    Case("unknown command", ["fly"]),
    Case("run --limit -3", ["run", "--limit", "-3"]),
    Case("run --limit 0", ["run", "--limit", "0"]),
    Case("run --limit abc", ["run", "--limit", "abc"]),
    Case("run --seed -1", ["run", "--seed", "-1"]),
    Case("run --seed 2**70", ["run", "--seed", str(2**70)]),
    Case("--set seed=2**70", ["run", *TINY, "--set", f"seed={2**70}"]),
    Case("ri seed=-1", ["run", *TINY, "--set", "bypasses.ri.seed=-1"]),
    Case("run --defenses ''", ["run", "--defenses", ""]),
    Case("run --defenses ,", ["run", "--defenses", ","]),
    Case("run --defenses nosuch", ["run", "--defenses", "nosuch"]),
    Case("run --bypass jpg (typo)", ["run", "--bypass", "jpg"]),
    Case("run --generators stargen (typo)", ["run", "--generators", "stargen"]),
    Case("run --profile fast", ["run", "--profile", "fast"]),
    Case("run --dataset imagenet", ["run", "--dataset", "imagenet"]),
    Case("run --device tpu", ["run", *TINY, "--device", "tpu"]),
    Case("run --executor spark", ["run", "--executor", "spark"]),
    Case("run --workers 0", ["run", "--executor", "dask", "--workers", "0"]),
    Case("run --output an existing file", ["run", *TINY, "--output", "{w}/afile.txt"]),
    Case("run --output under a file", ["run", *TINY, "--output", "{w}/afile.txt/run"]),
    # --- --set values ------------------------------------------------------------------------
    Case("--set without =", ["run", *TINY, "--set", "limit"]),
    Case("--set unknown setting", ["run", *TINY, "--set", "limt=3"]),
    Case("--set limit=0", ["run", *TINY, "--set", "limit=0"]),
    Case("--set limit=\"8\" (a string)", ["run", *TINY, "--set", 'limit="8"']),
    Case("--set batch_size=0", ["run", *TINY, "--set", "batch_size=0"]),
    Case("--set threads=-2", ["run", *TINY, "--set", "threads=-2"]),
    Case("--set seed=1.5", ["run", *TINY, "--set", "seed=1.5"]),
    Case("--set resolution=63", ["run", *TINY, "--set", "resolution=63"]),
    Case("--set attack_precision=fp16", ["run", *TINY, "--set", "attack_precision=fp16"]),
    Case("--set scenarios=[]", ["run", *TINY, "--set", "scenarios=[]"]),
    Case("--set scenarios=[adaptive]", ["run", *TINY, "--set", 'scenarios=["adaptive"]']),
    Case("--set metrics=[psnr_x]", ["run", *TINY, "--set", 'metrics=["psnr_x"]']),
    Case("--set protocol.eps=0", ["run", *TINY, "--set", "protocol.eps=0"]),
    Case("--set splits.eval=[10,5]", ["run", *TINY, "--set", "splits.eval=[10,5]"]),
    Case("--set splits.eval=[3]", ["run", *TINY, "--set", "splits.eval=[3]"]),
    Case("--set splits.eval=[-4,2]", ["run", *TINY, "--set", "splits.eval=[-4,2]"]),
    Case("--set splits.eval outside the data", ["run", *TINY, "--set", "splits.eval=[90000,90010]"]),
    Case("--set leakage.bypasses=jpg", ["run", *TINY, "--set", "leakage.bypasses=jpg"]),
    Case("--set device=gpu", ["run", *TINY, "--set", "device=gpu"]),
    Case("--set universal_fit_generators=stargen", ["run", *TINY, "--set", "universal_fit_generators=stargen"]),
    Case("--set defenses.disrupting=5 (not a table)", ["run", *TINY, "--set", "defenses.disrupting=5"]),
    Case("--set generators.stargan=1 (not a table)", ["run", *TINY, "--set", "generators.stargan=1"]),
    Case("--set bypasses.lora_r4.plugin=nosuch", ["run", *TINY, "--set", "bypasses.lora_r4.plugin=nosuch"]),
    Case("--set generators.stargan.wieghts=official", ["run", *TINY, "--set", "generators.stargan.wieghts=official"]),
    Case("--set metrics=[]", ["run", *TINY, "--set", "metrics=[]"]),
    Case("--set defenses.nosuch.steps=3", ["run", *TINY, "--set", "defenses.nosuch.steps=3"]),
    # --- plugin parameters -------------------------------------------------------------------
    Case("disrupting eps=-0.1", ["run", *TINY, "--set", "defenses.disrupting.eps=-0.1"]),
    Case("disrupting eps=0", ["run", *TINY, "--set", "defenses.disrupting.eps=0"]),
    Case("disrupting steps=0", ["run", *TINY, "--set", "defenses.disrupting.steps=0"]),
    Case("disrupting variant=best", ["run", *TINY, "--set", "defenses.disrupting.variant=best"]),
    Case("disrupting stepz=3 (typo)", ["run", *TINY, "--set", "defenses.disrupting.stepz=3"]),
    Case("disrupting rand_init=1", ["run", *TINY, "--set", "defenses.disrupting.rand_init=1"]),
    Case("lora rank=-1", ["run", *TINY, "--set", "bypasses.lora.rank=-1"]),
    Case("lora_r4 rank=0 (a variant)", ["run", *TINY, "--set", "bypasses.lora_r4.rank=0"]),
    Case("lora epochs=0", ["run", *TINY, "--set", "bypasses.lora.epochs=0"]),
    Case("jpeg quality=0", ["run", *TINY, "--set", "bypasses.jpeg.quality=0"]),
    Case("jpeg quality=101", ["run", *TINY, "--set", "bypasses.jpeg.quality=101"]),
    Case("raw jpeg_qualities=[50,200]", ["run", *TINY, "--set", "defenses.raw.jpeg_qualities=[50,200]"]),
    Case("raw transforms=[]", ["run", *TINY, "--set", "defenses.raw.transforms=[]"]),
    Case("pg lr=0", ["run", *TINY, "--set", "defenses.pg.lr=0"]),
    Case("cmua momentum=2", ["run", *TINY, "--set", "defenses.cmua.momentum=2"]),
    Case("ri pad_fraction=-0.1", ["run", *TINY, "--set", "bypasses.ri.pad_fraction=-0.1"]),
    # --- data folders and label files ---------------------------------------------------------
    Case("--data missing", ["run", *TINY, "--data", "{w}/nowhere", "--dataset", "folder"]),
    Case("--data a file", ["run", *TINY, "--data", "{w}/afile.txt", "--dataset", "folder"]),
    Case("--data empty folder", ["run", *TINY, "--data", "{w}/empty", "--dataset", "folder"]),
    Case("--data folder without images", ["run", *TINY, "--data", "{w}/not_images", "--dataset", "folder"]),
    Case("--data with a corrupt image", ["run", *TINY, "--data", "{w}/corrupt", "--dataset", "folder"]),
    Case("label file missing images", ["run", *TINY, "--data", "{w}/short_labels", "--dataset", "folder"]),
    Case("label file with short lines", ["run", *TINY, "--data", "{w}/bad_labels", "--dataset", "folder"]),
    Case("celebahq layout without labels", ["run", *TINY, "--data", "{w}/celebahq_nolabels"]),
    Case("--dataset celebahq without --data", ["run", *TINY, "--dataset", "celebahq"]),
    # --- weights and environment -----------------------------------------------------------
    Case("paper profile, weights missing", ["run", *TINY[2:], "--profile", "paper"],
         env={"BENCH_WEIGHTS": "{w}/empty"}),
    Case("BENCH_WEIGHTS is a file", ["run", *TINY[2:], "--profile", "paper"], env={"BENCH_WEIGHTS": "{w}/afile.txt"}),
    Case("official checkpoint of random bytes", ["run", *TINY[2:], "--profile", "paper"],
         env={"BENCH_WEIGHTS": "{w}/garbage_weights"}),
    Case("official checkpoint that pickles code", ["run", *TINY[2:], "--profile", "paper"],
         env={"BENCH_WEIGHTS": "{w}/pickle_weights"}),
    Case("LoRA's ResNet-50 features without their weights", ["run", *TINY[:4], "--defenses", "disrupting",
                                                          "--bypass", "lora", "--set",
                                                          "bypasses.lora.image_features=resnet50"],
         env={"BENCH_WEIGHTS": "{w}/empty", "TORCH_HOME": "{w}/empty"}),
    Case("BENCH_CACHE is a file", ["run", *TINY, "--output", "{w}/out-cache"], env={"BENCH_CACHE": "{w}/afile.txt"}),
    Case("BENCH_CACHE under a file", ["run", *TINY, "--output", "{w}/out-cache"],
         env={"BENCH_CACHE": "{w}/afile.txt/cache"}),
    # --- other commands ------------------------------------------------------------------------
    Case("report of a folder with no run", ["report", "{w}/empty"]),
    Case("report of a missing folder", ["report", "{w}/nowhere"]),
    Case("leaderboard of a folder with no run", ["leaderboard", "{w}/empty"]),
    Case("report of rows that are not rows", ["report", "{w}/not_a_run"]),
    Case("leaderboard of a run.json that is not one", ["leaderboard", "{w}/not_a_run"]),
    Case("validate nosuch", ["validate", "nosuch"]),
    Case("grid --output a file", ["grid", "--profile", "ci", "--output", "{w}/afile.txt"]),
    Case("report --output a file", ["report", "{w}/out-odd", "--output", "{w}/afile.txt"]),
    Case("perf --output a file", ["perf", "--output", "{w}/afile.txt"]),
    Case("weights path that is no checkpoint", ["run", *TINY, "--set", "generators.stargan.weights={w}/afile.txt"]),
    Case("ls widgets", ["ls", "widgets"]),
    Case("grid --faces 0", ["grid", "--faces", "0"]),
    Case("edit-success --limit -1", ["edit-success", "--limit", "-1"]),
    Case("perf --scale 0", ["perf", "--scale", "0"]),
    Case("perf --repeats 0", ["perf", "--repeats", "0"]),
    Case("perf --batch two", ["perf", "--batch", "two"]),
    Case("download nosuch", ["download", "nosuch"]),
    Case("train-generator nosuch", ["train-generator", "nosuch", "--data", "{w}/labelled", "--dataset", "folder"]),
    Case("train-generator lr_g=-1", ["train-generator", "stargan", "--data", "{w}/labelled", "--dataset", "folder",
                                     "--set", "lr_g=-1"]),
    Case("train-classifier iters=0", ["train-classifier", "--data", "{w}/labelled", "--dataset", "folder",
                                      "--set", "iters=0"]),
    Case("train-demo-faces without --data", ["train-demo-faces"]),
    Case("make-demo-faces --count 0", ["make-demo-faces", "--count", "0"]),
    Case("protect with an unknown defense", ["protect", "--defense", "nosuch", "{w}/labelled", "{w}/out-p"]),
    Case("protect a missing folder", ["protect", "--profile", "ci", "--defense", "disrupting", "{w}/nowhere",
                                      "{w}/out-p"]),
    Case("protect into a file", ["protect", "--profile", "ci", "--defense", "disrupting", "{w}/labelled",
                                 "{w}/afile.txt"]),
    Case("protect into the photos' folder", ["protect", "--profile", "ci", "--defense", "disrupting", "{w}/labelled",
                                             "{w}/labelled"]),
    Case("protect with a per-target defense", ["protect", "--profile", "ci", "--defense", "raw",
                                               "--set", "defenses.raw.variant=per_target", "--set",
                                               "defenses.raw.steps=1", "--generators", "stargan", "{w}/labelled",
                                               "{w}/out-per-target"]),
    # --- unusual but valid ----------------------------------------------------------------------
    Case("odd image modes and sizes", ["run", *TINY, "--data", "{w}/odd", "--dataset", "folder",
                                       "--output", "{w}/out-odd"], OK),
    Case("photos without labels (inferred)", ["run", *TINY, "--data", "{w}/unlabelled", "--dataset", "folder",
                                              "--output", "{w}/out-unlabelled"], OK),
    Case("protect photos without labels", ["protect", "--profile", "ci", "--defense", "disrupting",
                                           "--generators", "stargan", "{w}/unlabelled", "{w}/out-protect"], OK),
    Case("--limit larger than the split", ["run", *TINY, "--limit", "500", "--dry-run"], OK),
    Case("--set with an int for a float", ["run", *TINY, "--set", "defenses.disrupting.eps=1", "--dry-run"], OK),
    Case("dry run", ["run", "--dry-run"], OK),
    Case("--output with damaged run.json and plan.json", ["run", *TINY, "--output", "{w}/damaged_bookkeeping"], OK),
    Case("validate a plugin", ["validate", "jpeg"], OK),
    Case("ls", ["ls"], OK),
    Case("download", ["download"], OK, env={"BENCH_WEIGHTS": "{w}/empty", "TORCH_HOME": "{w}/empty"}),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("world")
    build_world(w)
    yield w
    table = os.environ.get("BENCH_FUZZ_TABLE")
    if table:
        lines = ["| input | expected | got |", "|---|---|---|"]
        lines += [f"| {name} (`{' '.join(argv)}`) | {expected} | {got} |" for name, argv, expected, got in RESULTS]
        Path(table).write_text("\n".join(lines) + "\n")


def expand(text: str, w: Path) -> str:
    return text.replace("{w}", str(w))


def call(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's exit
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def describe(code: int, output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("bench: error:")]
    return f"exit {code}" + (f", {len(errors)} error line: {errors[0][len('bench: error: '):][:110]}" if errors else "")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_error_line_and_unusual_input_runs(case, world, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # bench-results/ of valid runs lands here
    for name, value in case.env.items():
        monkeypatch.setenv(name, expand(value, world))
    argv = [expand(a, world) for a in case.argv]
    code, output = call(argv, capsys)
    RESULTS.append((case.name, [a.replace(str(world), "W") for a in argv], f"exit {case.expected}",
                    describe(code, output)))
    assert "Traceback" not in output
    assert code == case.expected, output[-2000:]
    if case.expected == ERROR:
        assert sum(line.startswith("bench: error:") for line in output.splitlines()) == 1, output
    assert not (world / "executed").exists(), "a checkpoint's pickle ran code"


def test_photos_without_labels_record_the_inferring_classifier(world, capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    code, output = call(["run", *TINY, "--data", str(world / "unlabelled"), "--dataset", "folder",
                         "--output", str(out)], capsys)
    assert code == 0 and "inferred" in output
    source = json.loads((out / "run.json").read_text())["data"]["eval"]["labels_inferred_by"]
    assert source["classifier"] == "attribute_classifier" and len(source["sha256"]) == 64


def test_a_damaged_cache_entry_is_recomputed_to_the_same_rows(world, capsys, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert call(["run", *TINY, "--output", str(first)], capsys)[0] == 0
    cache = Path(os.environ["BENCH_CACHE"])
    for tensors in (cache / "protect").rglob("tensors.safetensors"):
        tensors.write_bytes(b"damaged")
    assert call(["run", *TINY, "--output", str(second)], capsys)[0] == 0

    def values(run):
        return [(r["generator"], r["defense"], r["metric"], r["value"])
                for r in map(json.loads, (run / "cells.jsonl").read_text().splitlines())]
    assert values(first) == values(second)


def test_ctrl_c_ends_a_run_with_one_line_and_the_rerun_resumes(tmp_path):
    """A real process, interrupted as a person would with Ctrl-C once rows are on disk."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "bench", "run", "--profile", "ci", "--generators", "stargan,attgan",
               "--defenses", "disrupting,dfrap", "--bypass", "none,jpeg", "--output", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_CACHE": str(tmp_path / "cache")}
    # a terminal's Ctrl-C: a shell starts background jobs with SIGINT ignored (so a suite run with `&`
    # inherits that), and Python raises KeyboardInterrupt only where SIGINT was not ignored at its start
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "cells.jsonl").exists() and (out / "cells.jsonl").stat().st_size):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    interrupted = [line for line in err.splitlines() if line.startswith("bench: interrupted:")]
    assert len(interrupted) == 1 and "run the same command to resume" in interrupted[0], err
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["cache_hits"] > 0  # what the interrupted run finished
