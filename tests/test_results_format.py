"""The result format (bench.contract.results): a finished run is read without torch,
and run.json goes through the typed RunRecord unchanged."""

import json
import re
import subprocess
import sys

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


def test_report_and_leaderboard_of_a_finished_run_import_no_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", READ_WITHOUT_TORCH, str(COMMITTED_RUN), str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "report" / "table1.csv").exists() and (tmp_path / "board" / "board.json").exists()


def test_run_json_reads_and_writes_back_unchanged(tmp_path):
    original = json.loads((COMMITTED_RUN / RUN).read_text())
    record = RunRecord.read(COMMITTED_RUN)
    assert record.profile == original["config"]["profile"] and record.evaluation == original["data"]["eval"]
    record.write(tmp_path)
    again = json.loads((tmp_path / RUN).read_text())
    assert again == original and list(again) == list(original)  # the same keys, in the same order


def test_keys_a_later_version_adds_are_kept(tmp_path):
    original = {**json.loads((COMMITTED_RUN / RUN).read_text()), "energy_joules": 12.5}
    RunRecord.from_json(original).write(tmp_path)
    assert json.loads((tmp_path / RUN).read_text())["energy_joules"] == 12.5


@pytest.mark.parametrize("damage", ["{not json", "[1, 2]", '{"config": {}}'])
def test_a_damaged_run_json_is_one_line_naming_the_file(tmp_path, damage):
    (tmp_path / RUN).write_text(damage)
    with pytest.raises(BenchError, match=re.escape(str(tmp_path / RUN))):
        RunRecord.read(tmp_path)
