"""The submission flow, proven by a package outside the repository: the example defense
(`examples/bench-defense-example`) is installed into a temporary folder, then found,
validated, run against several bypasses and ranked on the leaderboard, all through the
`bench` command. A plugin whose import fails is reported and does not break the rest."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bench-defense-example"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example package installed into a temporary folder (built from a copy, so the
    source tree stays clean), plus a broken plugin distribution beside it."""
    root = tmp_path_factory.mktemp("submission")
    source = shutil.copytree(EXAMPLE, root / "source")
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    broken = target / "broken_defense-0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-defense\nVersion: 0.1\n")
    (broken / "entry_points.txt").write_text("[bench.defenses]\nbroken = broken_defense:Broken\n")
    (target / "broken_defense.py").write_text("raise ImportError('needs a library that is not installed')\n")
    return target


def bench(site, *args, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env,
                          timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"bench {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def test_an_installed_package_is_validated_run_and_ranked(site, tmp_path):
    listed = bench(site, "ls", "defenses").stdout.split()
    assert "rfgsm" in listed and "disrupting" in listed
    validated = bench(site, "validate", "rfgsm").stdout
    assert "FAIL" not in validated and "|x_protected - x| <= eps" in validated

    run = tmp_path / "run"
    bench(site, "run", "--profile", "ci", "--defenses", "rfgsm,disrupting", "--bypass", "none,jpeg,lora",
          "--generators", "stargan", "--set", "leakage.defenses=all", "--output", str(run))
    origin = json.loads((run / "run.json").read_text())["plugin_origins"]["defenses"]["rfgsm"]
    assert origin["distribution"] == "bench-defense-example" and origin["distribution_version"] == "0.1.0"

    board = tmp_path / "board"
    printed = bench(site, "leaderboard", str(run), "--output", str(board)).stdout
    assert "2 of 2 defenses ranked" in printed
    entry = json.loads((board / "entries" / "rfgsm.json").read_text())
    assert entry["rank"] in (1, 2) and entry["status"] == "ranked"
    assert entry["distribution"] == "bench-defense-example" and entry["url"].startswith("https://")
    assert entry["budget"]["within_budget"] and entry["budget"]["linf_max"] <= 0.05 + 1e-5
    assert {(c["bypass"], c["scenario"]) for c in entry["cells"]} == {
        ("none", "standard"), ("jpeg", "standard"), ("jpeg", "leakage"), ("lora", "standard"), ("lora", "leakage")}
    # every cell of the entry is a row of the run
    rows = [json.loads(line) for line in (run / "cells.jsonl").read_text().splitlines()]
    for cell in entry["cells"]:
        match = [r for r in rows if (r["defense"], r["generator"], r["bypass"], r["scenario"], r["metric"],
                                     r.get("reference")) == ("rfgsm", cell["generator"], cell["bypass"],
                                                             cell["scenario"], "dsr", "original")]
        assert len(match) == 1 and match[0]["value"] == cell["dsr"]
    linf = [r["value"] for r in rows if r["defense"] == "rfgsm" and r["metric"] == "linf"]
    assert len(linf) == 3 and entry["budget"]["linf_max"] == max(linf)  # standard + two leakage pipelines

    # the report of the run writes the same board beside its tables
    bench(site, "report", str(run))
    assert json.loads((run / "leaderboard" / "entries" / "rfgsm.json").read_text())["cells"] == entry["cells"]


def test_a_plugin_that_fails_to_import_is_reported_and_does_not_break_the_rest(site, tmp_path):
    verbose = bench(site, "ls", "defenses", "-v").stdout
    line = next(line for line in verbose.splitlines() if line.strip().startswith("broken"))
    assert "import failed" in line and "ImportError" in line
    asked = bench(site, "validate", "broken", check=False)
    asked_run = bench(site, "run", "--profile", "ci", "--defenses", "broken", "--output", str(tmp_path / "x"),
                      check=False)
    for done in (asked, asked_run):
        assert done.returncode != 0
    assert asked_run.returncode == 2
    error = asked_run.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("bench: error:") and "'broken'" in error[0]
