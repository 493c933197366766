"""The run as a plan of cached steps: shared steps once, rows written cell by cell,
resumable after a kill, the same rows from the Dask executor and from two runs at once."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.harness.cli import main
from bench.harness.profiles import get_profile
from bench.harness.results import RowLog
from tests.conftest import ROOT, make_face_folder

SELECTION = ["--defenses", "disrupting,cmua", "--bypass", "none,jpeg,lora", "--generators", "stargan"]


def ci_args(tmp_path, weights, out, selection=SELECTION):
    data = tmp_path / "faces"
    if not data.exists():
        make_face_folder(data, n=24, size=(20, 20))
    return ["run", *selection, "--profile", "ci", "--data", str(data), "--dataset", "folder",
            "--output", str(out), "--set", f"generators.stargan.weights={weights}", "--set", "resolution=16",
            "--set", "splits.finetune=[0,8]", "--set", "splits.defense=[8,16]", "--set", "splits.eval=[16,24]",
            "--set", "leakage.defenses=all"]


def rows_of(out) -> dict:
    """Each row's value, n and direction by its coordinates (not cache_hit, seconds)."""
    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    keyed = {(r["generator"], r["defense"], r["bypass"], r["scenario"], r["reference"], r["metric"], r["target"]):
             (r["value"], r["n"], r["higher_is_better"], r["threshold"]) for r in rows}
    assert len(keyed) == len(rows)
    return keyed


def assert_same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][1:] == b[key][1:], key
        assert a[key][0] == pytest.approx(b[key][0], abs=1e-6), key


def test_the_plan_holds_shared_steps_once_and_leakage_as_cells(tmp_path, tiny_stargan_file, monkeypatch, capsys):
    from bench.harness.cli import build_parser, resolved_config
    from bench.harness.runner import plan_run

    args = build_parser().parse_args(ci_args(tmp_path, tiny_stargan_file, tmp_path / "out"))
    plan, _ = plan_run(resolved_config(args), args.defenses, args.bypass, args.generators)
    counts = plan.count()
    assert counts["fit"] == 1  # one LoRA fit serves both defenses and both scenarios
    assert counts["defense_fit"] == 1 + 2  # CMUA against the generator, and against each leaked pipeline
    assert counts["clean"] == 1
    cells = [u.cell for u in plan.units if not u.budget]
    assert len(cells) == 3 + 2 * 3 + 2 * 2  # clean inputs; each defense x each bypass; each x jpeg, lora
    leaked = [plan.steps[u.step] for u in plan.units if u.budget and u.cell.scenario == "leakage"]
    fit = next(s.id for s in plan.steps.values() if s.kind == "fit")
    assert all(fit in s.inputs or "jpeg" in s.label for s in leaked)
    order = list(plan.steps)
    assert all(order.index(i) < order.index(sid) for sid, s in plan.steps.items() for i in s.inputs)

    assert main([*ci_args(tmp_path, tiny_stargan_file, tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "cell" in printed and "estimated time left" in printed and not (tmp_path / "out").exists()


def test_a_run_resumes_where_it_stopped_and_ends_with_the_same_rows(tmp_path, tiny_stargan_file, capsys):
    assert main(ci_args(tmp_path, tiny_stargan_file, tmp_path / "whole")) == 0
    whole = rows_of(tmp_path / "whole")
    meta = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert meta["plan"]["steps"]["ran"]["cell"] == 13 and not meta["plan"]["steps"]["from_cache"]
    fits = {(f["defense"], f["scenario"], f["against"]) for f in meta["defense_fits"]}
    assert fits == {("cmua", "standard", None), ("cmua", "leakage", "jpeg"), ("cmua", "leakage", "lora")}
    assert "leakage (lora)" in (tmp_path / "whole" / "defense_fits.csv").read_text()
    costs = [json.loads(line) for line in (tmp_path / "whole" / "costs.jsonl").read_text().splitlines()]
    assert {c["kind"] for c in costs} == {"bypass_fit", "defense_fit"}

    # the same command again on the finished folder: nothing runs, and run.json (what ran,
    # how long it took) is kept rather than replaced by an empty run's
    finished = (tmp_path / "whole" / "run.json").read_text()
    assert main(ci_args(tmp_path, tiny_stargan_file, tmp_path / "whole")) == 0
    assert "finished: nothing to do" in capsys.readouterr().out
    assert (tmp_path / "whole" / "run.json").read_text() == finished
    assert rows_of(tmp_path / "whole") == whole

    # an interrupted run of the same plan: a few cells written, the last one cut short
    out = tmp_path / "cut"
    assert main(ci_args(tmp_path, tiny_stargan_file, out)) == 0
    lines = (out / "cells.jsonl").read_text().splitlines(keepends=True)
    (out / "cells.jsonl").write_text("".join(lines[:40]) + lines[40][:25])
    (out / "run.json").unlink()
    kept = RowLog(out)
    assert main(ci_args(tmp_path, tiny_stargan_file, out)) == 0
    assert_same_rows(rows_of(out), whole)
    assert (out / "cells.jsonl").read_text().count("\n") == len(whole)
    assert kept.finished_plan() == json.loads((out / "plan.json").read_text())["id"]


def test_another_plan_in_the_same_folder_is_refused(tmp_path, tiny_stargan_file, capsys):
    out = tmp_path / "out"
    assert main(ci_args(tmp_path, tiny_stargan_file, out)) == 0
    other = ["--defenses", "disrupting", "--bypass", "none", "--generators", "stargan"]
    assert main(ci_args(tmp_path, tiny_stargan_file, out, other)) == 2
    assert "another plan" in capsys.readouterr().err
    assert main([*ci_args(tmp_path, tiny_stargan_file, out, other), "--fresh"]) == 0
    assert {(d, b) for (_, d, b, *_) in rows_of(out)} == {("none", "none"), ("disrupting", "none")}


def run_in_background(args, env):
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def bench_env(tmp_path, cache):
    return {**os.environ, "BENCH_CACHE": str(cache), "PYTHONPATH": str(ROOT)}


def test_a_killed_run_keeps_its_finished_cells_and_resumes(tmp_path, tiny_stargan_file):
    assert main(ci_args(tmp_path, tiny_stargan_file, tmp_path / "whole")) == 0
    whole = rows_of(tmp_path / "whole")
    out, env = tmp_path / "killed", bench_env(tmp_path, tmp_path / "other-cache")
    process = run_in_background(ci_args(tmp_path, tiny_stargan_file, out), env)
    cells = out / "cells.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (cells.exists() and cells.read_text().count("\n") >= 30):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    on_disk = cells.read_text()
    assert on_disk.count("\n") >= 30 and not (out / "run.json").exists()
    assert all(json.loads(line) for line in on_disk.splitlines()[:-1])
    done = subprocess.run([sys.executable, "-m", "bench", *ci_args(tmp_path, tiny_stargan_file, out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    assert_same_rows(rows_of(out), whole)


def test_two_runs_at_once_on_one_cache_compute_each_step_once(tmp_path, tiny_stargan_file):
    cache = tmp_path / "shared-cache"
    env = bench_env(tmp_path, cache)
    runs = [run_in_background(ci_args(tmp_path, tiny_stargan_file, tmp_path / name), env) for name in ("a", "b")]
    for process in runs:
        assert process.wait(timeout=600) == 0, process.stderr.read()[-2000:]
    assert_same_rows(rows_of(tmp_path / "a"), rows_of(tmp_path / "b"))
    ran = [json.loads((tmp_path / name / "run.json").read_text())["plan"]["steps"]["ran"] for name in ("a", "b")]
    steps = json.loads((tmp_path / "a" / "run.json").read_text())["plan"]["steps"]["list"]
    assert sum(sum(r.values()) for r in ran) == len(steps)  # no step computed twice
    from bench.harness.cache import Cache

    entries = list(cache.glob("*/*/*/manifest.json"))
    assert entries and all(Cache(cache).load(p.parent.parent.parent.name, p.parent.name) for p in entries)


def test_the_dask_executor_gives_the_rows_of_the_local_one(tmp_path, tiny_stargan_file, monkeypatch):
    pytest.importorskip("distributed")
    one_thread = ["--set", "threads=1"]  # what CPU numbers depend on, the same for both
    assert main([*ci_args(tmp_path, tiny_stargan_file, tmp_path / "local"), *one_thread]) == 0
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "dask-cache"))  # the workers compute every step again
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    args = [*ci_args(tmp_path, tiny_stargan_file, tmp_path / "dask"), *one_thread, "--executor", "dask",
            "--workers", "2"]
    assert main(args) == 0
    assert_same_rows(rows_of(tmp_path / "dask"), rows_of(tmp_path / "local"))
    meta = json.loads((tmp_path / "dask" / "run.json").read_text())
    assert meta["plan"]["executor"] == "dask" and not meta["plan"]["steps"]["from_cache"]
    ran = {s["id"].split("/")[0] for s in meta["plan"]["steps"]["list"] if s["status"] == "ran"}
    assert ran == {"clean", "fit", "defense_fit", "protect", "cell"}


def test_a_sign_step_precision_other_than_fp32_enters_the_keys_and_a_wrong_one_is_refused():
    from bench.contract.errors import ConfigError
    from bench.harness.plan import attack_precision_of, precision_parts

    config = get_profile("ci")
    assert config["attack_precision"] == "fp32" and "attack_precision" not in precision_parts(config)
    assert precision_parts({**config, "attack_precision": "bf16"})["attack_precision"] == "bf16"
    assert attack_precision_of({**config, "attack_precision": "auto"}) in ("fp32", "bf16")
    with pytest.raises(ConfigError, match="attack_precision"):
        attack_precision_of({**config, "attack_precision": "fp16"})


def test_protected_cells_score_fid_and_kid_only_where_the_reports_read_them(tmp_path, tiny_stargan_file):
    from bench.harness.cli import build_parser, resolved_config
    from bench.harness.runner import plan_run

    selection = ["--defenses", "disrupting", "--bypass", "none,jpeg,lora_warning", "--generators", "stargan"]
    base = [*ci_args(tmp_path, tiny_stargan_file, tmp_path / "out", selection), "--set",
            'metrics=["l2","dsr","fid","kid"]', "--set", 'scenarios=["standard"]']

    def scored(*extra) -> dict:
        args = build_parser().parse_args([*base, *extra])
        plan, skipped = plan_run(resolved_config(args), args.defenses, args.bypass, args.generators)
        if {"fid", "kid"} & set(skipped):
            pytest.skip("the Inception weights for FID and KID are not installed")
        return {(s.task["defense"], s.task["bypass"]): set(s.task["metrics"])
                for s in plan.steps.values() if s.kind == "cell"}

    everything = {"l2", "dsr", "fid", "kid"}
    default = scored()
    assert default[("none", "jpeg")] == everything  # a bypass's benign outputs: Table II
    assert default[("disrupting", "lora_warning")] == everything  # a defensive patch's: Table IV
    assert default[("disrupting", "jpeg")] == default[("disrupting", "none")] == {"l2", "dsr"}
    assert all(m == everything for m in scored("--set", "set_metrics_on_protected=true").values())
