"""The result format (bench.contract.results): a finished run is read without torch,
and run.json goes through the typed RunRecord unchanged."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from bench.contract.errors import BenchError
from bench.contract.results import RUN, RunRecord
from tests.conftest import ROOT

COMMITTED_RUN = ROOT / "results" / "quick-all" / "runs" / "quick-all"

READ_WITHOUT_TORCH = """
import json, sys
from bench.harness.cli import main
run, out = sys.argv[1], sys.argv[2]
assert main(["report", run, "--output", out + "/report"]) == 0
assert main(["leaderboard", run, "--output", out + "/board"]) == 0
print(json.dumps(sorted(m for m in ("torch", "piq", "torchvision") if m in sys.modules)))
"""


def read_without_torch(run, out) -> list[str]:
    """`bench report` and `bench leaderboard` of `run` in a fresh process: the heavy
    libraries they imported."""
    done = subprocess.run([sys.executable, "-c", READ_WITHOUT_TORCH, str(run), str(out)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_of_the_current_format(folder):
    """A copy of the committed run with what a run records now and it predates: the cost
    each bypass declares (which its installed plugin gives, importing torch here)."""
    from bench.harness.reporting.ladder import declared_costs

    run = shutil.copytree(COMMITTED_RUN, folder)
    record = RunRecord.read(run)
    record.bypass_costs = declared_costs(record)
    record.write(run)
    return run


def test_report_and_leaderboard_of_a_finished_run_import_no_torch(tmp_path):
    assert read_without_torch(run_of_the_current_format(tmp_path / "run"), tmp_path) == []
    assert (tmp_path / "report" / "table1.csv").exists() and (tmp_path / "board" / "board.json").exists()


def test_a_metric_the_run_could_not_compute_prints_na_without_torch(tmp_path):
    """FID skipped (its weights missing): Table II shows it as n/a under its own header,
    whose direction comes from the spec the run recorded, not from the metric's code
    (the run records every skipped metric's spec, as a run does now)."""
    from bench.contract.registry import registry

    run = run_of_the_current_format(tmp_path / "run")
    rows = [line for line in (run / "cells.jsonl").read_text().splitlines() if json.loads(line)["metric"] != "fid"]
    (run / "cells.jsonl").write_text("\n".join(rows) + "\n")
    record = RunRecord.read(run)
    spec = record.metrics.pop("fid")
    record.metrics_skipped["fid"] = "weights missing at /nowhere"
    record.skipped_metric_specs = {"fid": spec, "clip_score": registry("metrics").get("clip_score").info()}
    record.write(run)
    assert read_without_torch(run, tmp_path / "out") == []
    table2 = pd.read_csv(tmp_path / "out" / "report" / "table2.csv", header=[0, 1], index_col=0, keep_default_na=False)
    assert table2.loc["lora", ("stargan", "FID↓")] == "n/a" and table2.loc["jpeg", ("hisd", "FID↓")] == "n/a"
    assert "FID↓ n/a: weights missing at /nowhere" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_run_json_reads_and_writes_back_unchanged(tmp_path):
    original = json.loads((COMMITTED_RUN / RUN).read_text())
    record = RunRecord.read(COMMITTED_RUN)
    assert record.profile == original["config"]["profile"] and record.evaluation == original["data"]["eval"]
    record.write(tmp_path)
    again = json.loads((tmp_path / RUN).read_text())
    # the same keys in the same order, and the fields newer than the run, empty
    assert {k: v for k, v in again.items() if k in original} == original
    assert [k for k in again if k in original] == list(original)
    assert all(not again[k] for k in set(again) - set(original))


def test_keys_a_later_version_adds_are_kept(tmp_path):
    original = {**json.loads((COMMITTED_RUN / RUN).read_text()), "energy_joules": 12.5}
    RunRecord.from_json(original).write(tmp_path)
    assert json.loads((tmp_path / RUN).read_text())["energy_joules"] == 12.5


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"config": {}}'])
def test_a_damaged_run_json_is_one_line_naming_the_file(tmp_path, damage):
    (tmp_path / RUN).write_text(damage)
    with pytest.raises(BenchError, match=re.escape(str(tmp_path / RUN))):
        RunRecord.read(tmp_path)
