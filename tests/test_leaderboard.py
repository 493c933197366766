"""The leaderboard, built from synthetic runs whose every number is known: worst cases,
ranking, the budget flag, incomplete entries, protocols kept apart, and every number of
the written board traced back to a cells.jsonl row."""

import json
import random
from pathlib import Path

import pytest

from bench.contract.errors import BenchError
from bench.harness.cli import main
from bench.harness.reporting.board import build_board, group_by_protocol
from bench.harness.reporting.leaderboard import write_leaderboards
from bench.harness.reporting.runs import read_run

GENERATORS = ["stargan", "attgan"]
BYPASSES = ["none", "jpeg", "lora"]


def row(generator, defense, bypass, scenario, metric, value, reference="original", n=20):
    return {"generator": generator, "defense": defense, "bypass": bypass, "scenario": scenario,
            "reference": reference, "metric": metric, "target": "all", "higher_is_better": metric == "ssim",
            "threshold": None, "value": value, "n": n, "cache_hit": False, "seconds": 0.1}


def budget_rows(generator, defense, bypass, scenario, linf):
    return [row(generator, defense, bypass, scenario, name, value, reference="clean_input")
            for name, value in (("linf", linf), ("l2_norm", 3.0), ("psnr", 36.0), ("ssim", 0.95))]


def write_run(path, rows, defenses, eval_pixels="p0", stargan_hash="s" * 64, profile="quick"):
    path.mkdir(parents=True)
    (path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"harness_version": "0.1.0", "command": "bench run", "finished": "2026-12-04T00:00:00+00:00",
            "git": {"commit": "abc", "dirty": False}, "seed": 0, "wall_seconds": 1.0,
            "config": {"profile": profile, "resolution": 64, "protocol": {"eps": 0.05, "tolerance": 1e-5}},
            "data": {"eval": {"name": "demo", "n": 4, "first": ["a.png"], "last": ["d.png"], "ids": "i0",
                              "pixels_sha256": eval_pixels}},
            "plugins": {"generators": {"stargan": {"weights_sha256": stargan_hash},
                                       "attgan": {"weights_sha256": "a" * 64}},
                        "defenses": {d: {"name": d, "version": "1", "params": {"eps": eps}}
                                     for d, eps in defenses.items()},
                        "bypasses": {b: {"name": b, "version": "1", "params": {}} for b in BYPASSES}},
            "plugin_origins": {"defenses": {d: {"distribution": "example-dist", "distribution_version": "2.0",
                                                "entry_point": f"pkg:{d}", "paper": f"paper of {d}", "url": "u",
                                                "licence": "MIT", "version": "1"} for d in defenses}}}
    (path / "run.json").write_text(json.dumps(meta))
    return path


def synthetic_rows(seed=0, skip=(), linf=None):
    """Defenses a, b, c (and the clean baseline) under every bypass, standard and leakage;
    `skip`: (defense, generator, bypass, scenario) cells left out; `linf`: per defense."""
    rng = random.Random(seed)
    rows = []
    for g in GENERATORS:
        for d in ["none", "a", "b", "c"]:
            for b in BYPASSES:
                for scenario in ("standard", "leakage"):
                    if (scenario == "leakage" and (b == "none" or d == "none")) or (d, g, b, scenario) in skip:
                        continue
                    rows.append(row(g, d, b, scenario, "dsr", round(rng.random(), 4)))
                    rows.append(row(g, d, b, scenario, "l2", round(rng.random() / 10, 4)))
                    rows.append(row(g, d, b, scenario, "ssim", 0.5))
                    if d != "none" and (b == "none" or scenario == "leakage"):
                        rows += budget_rows(g, d, b, scenario, (linf or {}).get(d, 0.05))
    return rows


def test_worst_case_is_the_minimum_over_bypasses_and_scenarios_and_breaks_ties_of_break_cost(tmp_path):
    rows = synthetic_rows()
    board = build_board([read_run(write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05}))])
    for entry in board.entries:
        for g in GENERATORS:
            mine = [r for r in rows if r["defense"] == entry.label and r["generator"] == g and r["metric"] == "dsr"]
            lowest = min(mine, key=lambda r: r["value"])
            assert entry.worst[g]["dsr"] == lowest["value"]
            assert (entry.worst[g]["bypass"], entry.worst[g]["scenario"]) == (lowest["bypass"], lowest["scenario"])
    ranked = sorted(board.entries, key=lambda e: e.rank)
    assert [e.rank for e in ranked] == [1, 2, 3]
    keys = [(e.break_cost, e.robust_dsr, e.mean_dsr) for e in ranked]
    assert keys == sorted(keys, reverse=True)
    assert [c.label for c in board.columns] == ["no bypass", "jpeg", "jpeg (leakage)", "lora", "lora (leakage)"]


def test_an_entry_over_budget_or_with_missing_cells_is_listed_but_not_ranked(tmp_path):
    """A missing cell of the standard scenario withholds the rank; one of the leakage
    scenario (the adaptive defender's case) is reported beside it."""
    skip = {("b", "attgan", "lora", "standard"), ("a", "attgan", "lora", "leakage")}
    rows = synthetic_rows(skip=skip, linf={"c": 0.0625})
    board = build_board([read_run(write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05}))])
    entries = {e.label: e for e in board.entries}
    assert entries["a"].rank == 1 and entries["a"].status == "ranked"
    assert entries["a"].leakage_note == "leakage partly run (3 of 4)"
    assert entries["a"].leakage_missing == [{"generator": "attgan", "bypass": "lora", "scenario": "leakage"}]
    assert entries["b"].rank is None and entries["b"].status == "incomplete (1 cell missing)"
    assert entries["b"].missing == [{"generator": "attgan", "bypass": "lora", "scenario": "standard"}]
    assert entries["c"].rank is None and entries["c"].status == "over budget"
    assert entries["c"].budget["linf_max"] == 0.0625 and entries["c"].budget["within_budget"] is False
    # the bypass board counts the defenses within budget only, and the cells they lack
    by_column = {(b.column.bypass, b.column.scenario): b for b in board.bypass_entries}
    lora = by_column[("lora", "standard")]
    assert lora.missing == [{"generator": "attgan", "defense": "b"}] and lora.rank is None
    jpeg = by_column[("jpeg", "standard")]
    for g in GENERATORS:
        leaves = [r["value"] for r in rows if r["bypass"] == "jpeg" and r["scenario"] == "standard"
                  and r["generator"] == g and r["metric"] == "dsr" and r["defense"] in ("a", "b")]
        assert jpeg.worst[g]["dsr"] == max(leaves)
    assert by_column[("none", "standard")].status == "baseline"


def test_every_number_on_the_written_board_is_a_cells_row(tmp_path):
    rows = synthetic_rows(seed=3)
    run = write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05})
    assert main(["leaderboard", str(run), "--output", str(tmp_path / "board")]) == 0
    index = {(r["generator"], r["defense"], r["bypass"], r["scenario"], r["metric"]): r["value"] for r in rows
             if r["reference"] == "original"}
    for defense in ("a", "b", "c"):
        entry = json.loads((tmp_path / "board" / "entries" / f"{defense}.json").read_text())
        assert entry["distribution"] == "example-dist" and entry["parameters"] == {"eps": 0.05}
        assert entry["protocol"]["eps"] == 0.05 and entry["protocol"]["generators"]["stargan"] == "s" * 64
        assert len(entry["cells"]) == len(GENERATORS) * 5
        for cell in entry["cells"]:
            for metric in ("dsr", "l2"):
                key = (cell["generator"], defense, cell["bypass"], cell["scenario"], metric)
                assert cell[metric] == index[key]
        for g, worst in entry["worst_case"].items():
            assert worst["dsr"] == min(c["dsr"] for c in entry["cells"] if c["generator"] == g)
        assert entry["robust_dsr"] == pytest.approx(sum(w["dsr"] for w in entry["worst_case"].values()) / 2)
        linf = max(r["value"] for r in rows if r["defense"] == defense and r["metric"] == "linf")
        assert entry["budget"]["linf_max"] == linf
        assert entry["provenance"][0]["run"] == "run"
    board = json.loads((tmp_path / "board" / "board.json").read_text())
    assert [d["rank"] for d in board["defenses"]] == [1, 2, 3]
    html = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "src=" not in html and "<link" not in html and "http" not in html  # nothing from the network
    assert all(f'data-name="{d}"' in html for d in ("a", "b", "c"))


def test_runs_of_different_protocols_get_separate_boards(tmp_path):
    defenses = {"a": 0.05, "b": 0.05, "c": 0.05}
    one = write_run(tmp_path / "one", synthetic_rows(), defenses)
    other = write_run(tmp_path / "other", synthetic_rows(seed=1), defenses, eval_pixels="p1")
    runs = [read_run(one), read_run(other)]
    assert len(group_by_protocol(runs)) == 2
    written = write_leaderboards(runs, tmp_path / "boards")
    assert len(written) == 2 and all((where / "leaderboard.md").exists() for where, _ in written)
    with pytest.raises(BenchError, match="different protocols"):
        build_board(runs)


def test_runs_that_evaluated_a_generator_with_other_weights_are_refused(tmp_path):
    defenses = {"a": 0.05, "b": 0.05, "c": 0.05}
    one = write_run(tmp_path / "one", synthetic_rows(), defenses)
    other = write_run(tmp_path / "two", synthetic_rows(seed=1), defenses, stargan_hash="t" * 64)
    with pytest.raises(BenchError, match="stargan"):
        build_board([read_run(one), read_run(other)])


def test_merged_runs_take_each_cell_once_and_complete_an_entry(tmp_path):
    rows = synthetic_rows()
    leak = [r for r in rows if r["scenario"] == "leakage"]
    first = write_run(tmp_path / "standard", [r for r in rows if r["scenario"] == "standard"],
                      {"a": 0.05, "b": 0.05, "c": 0.05})
    alone = build_board([read_run(first)])
    assert all(e.rank is not None for e in alone.entries)  # no leakage column at all: complete
    second = write_run(tmp_path / "leakage", leak, {"a": 0.05, "b": 0.05, "c": 0.05})
    both = build_board([read_run(first), read_run(second)])
    assert len(both.columns) == 5 and all(e.rank is not None for e in both.entries)
    assert {r["run"] for r in both.runs} == {"standard", "leakage"}


def test_a_run_folder_without_run_json_is_one_clear_error(tmp_path, capsys):
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "cells.jsonl").write_text(json.dumps(row("stargan", "a", "none", "standard", "dsr", 0.5)) + "\n")
    assert main(["leaderboard", str(folder), "--output", str(tmp_path / "out")]) == 2
    assert "run.json" in capsys.readouterr().err


def test_ties_of_the_worst_case_are_broken_by_the_average_case(tmp_path):
    rows = []
    for g in GENERATORS:
        for d, values in {"a": (0.4, 0.0, 0.2), "b": (0.9, 0.0, 0.6), "c": (0.2, 0.1, 0.3)}.items():
            for b, value in zip(BYPASSES, values):
                rows += [row(g, d, b, "standard", "dsr", value), row(g, d, b, "standard", "l2", value / 10)]
            rows += budget_rows(g, d, "none", "standard", 0.05)
    board = build_board([read_run(write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05}))])
    ranks = {e.label: e.rank for e in board.entries}
    assert ranks == {"c": 1, "b": 2, "a": 3}  # c has the best worst case; b beats a on the average


@pytest.mark.parametrize("board_dir", sorted(str(p.parent) for p in
                                             (Path(__file__).resolve().parent.parent / "results").glob("**/board.json")))
def test_the_committed_reference_boards_rebuild_from_their_rows(board_dir):
    """Each committed board (results/*/leaderboard) is what its committed run's rows give."""
    from bench.harness.reporting.board_pages import board_json

    committed = json.loads((Path(board_dir) / "board.json").read_text())
    rebuilt = board_json(build_board([read_run(Path(board_dir) / "run")]))
    assert json.loads(json.dumps(rebuilt)) == committed


def test_a_run_without_the_no_bypass_column_still_ranks_its_complete_entries(tmp_path):
    """The clean baseline (defense none, bypass none) is always scored; it must not make
    "no bypass" a cell every defense lacks when the run had no such bypass."""
    rows = [r for r in synthetic_rows() if r["bypass"] != "none" or r["defense"] == "none"]
    board = build_board([read_run(write_run(tmp_path / "run", rows, {"a": 0.05, "b": 0.05, "c": 0.05}))])
    assert all(column.bypass != "none" for column in board.columns)
    assert all(entry.status == "ranked" for entry in board.entries)


def test_a_report_writes_the_runs_board_unless_told_not_to(tmp_path):
    from bench.harness.cli import main

    run = write_run(tmp_path / "run", synthetic_rows(), {"a": 0.05, "b": 0.05, "c": 0.05})
    assert main(["report", str(run), "--output", str(tmp_path / "with")]) == 0
    assert (tmp_path / "with" / "leaderboard" / "board.json").exists()
    assert main(["report", str(run), "--output", str(tmp_path / "without"), "--no-leaderboard"]) == 0
    assert (tmp_path / "without" / "table1.csv").exists() and not (tmp_path / "without" / "leaderboard").exists()
    assert "Leaderboard:" not in (tmp_path / "without" / "report.md").read_text()
