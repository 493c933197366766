"""Bootstrap intervals over images: resampling whole images, joint draws for statistics
of several cells, and their place in the report's tables and the leaderboard."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.harness import intervals
from bench.harness.reporting.render import emit
from bench.harness.reporting.specs import images_note
from bench.harness.reporting.tables import defense_summary, table1
from tests.test_leaderboard import row, synthetic_rows, write_run


def test_an_interval_resamples_whole_images_from_fixed_draws():
    half = [0.0] * 16 + [1.0] * 16
    low, high = intervals.interval(intervals.replicates(half))
    assert low < 0.5 < high
    # a proportion of 32 independent images: about +-1.96 * sqrt(0.25 / 32) = +-0.17
    assert 0.25 < high - low < 0.45
    assert (low, high) == intervals.interval(intervals.replicates(half))  # the same draws every time
    assert intervals.interval(intervals.replicates([0.3] * 32)) == (pytest.approx(0.3), pytest.approx(0.3))
    assert intervals.replicates(None) is None and np.isnan(intervals.interval(None)[0])


def test_statistics_of_several_cells_use_the_same_image_draws():
    rng = np.random.default_rng(1)
    a, b = rng.random(32), rng.random(32)
    ra, rb = intervals.replicates(a), intervals.replicates(b)
    worst = intervals.combined([ra, rb], np.max)
    assert (worst >= ra).all() and (worst >= rb).all()
    # the same images resampled: a cell and a copy shifted by a constant differ by exactly it
    diff = intervals.replicates(a + 0.01) - ra
    assert np.allclose(diff, 0.01)
    assert intervals.separable(intervals.replicates(a + 0.01), ra) is True
    assert intervals.separable(ra, intervals.replicates(a[::-1])) is False
    assert intervals.separable(ra, None) is None


def cells_with_images(dsr_of):
    """Table I rows of two defenses on one generator, with per-image DSRs."""
    rows = []
    for d, per_image in dsr_of.items():
        for metric, values in (("dsr", per_image), ("l2", [v / 10 for v in per_image]),
                               ("ssim", [1 - v / 10 for v in per_image])):
            r = row("stargan", d, "none", "standard", metric, float(np.mean(values)), n=5 * len(values))
            rows.append({**r, "per_image": list(values)})
    return pd.DataFrame(rows)


def test_tables_print_plus_minus_and_write_both_ends(tmp_path):
    cells = cells_with_images({"a": [1.0] * 20 + [0.0] * 12, "b": [0.2] * 32})
    text = emit(tmp_path, "table1", table1(cells), "Table I", note=images_note(cells))
    assert "0.625 ± 0.1" in text and "0.200 ± 0.000" in text
    assert "over the 32 evaluation images" in text
    csv = pd.read_csv(tmp_path / "table1.csv", header=[0, 1], index_col=[0, 1])
    low, high = csv[("stargan", "DSR↓ 95% low")], csv[("stargan", "DSR↓ 95% high")]
    assert (low <= csv[("stargan", "DSR↓")]).all() and (csv[("stargan", "DSR↓")] <= high).all()
    assert r"$\pm$" in (tmp_path / "table1.tex").read_text()
    summary = defense_summary(cells)
    worst = summary.value.loc["none", ("stargan", "worst DSR↓")]
    assert worst == 0.625 and summary.low.loc["none", ("stargan", "worst DSR↓")] <= worst


def test_rows_without_per_image_values_print_without_intervals(tmp_path):
    cells = cells_with_images({"a": [1.0, 0.0]}).drop(columns="per_image")
    text = emit(tmp_path, "t", table1(cells), "Table I", note=images_note(cells))
    assert "±" not in text and "No intervals" in text


def test_the_quality_tables_give_their_pair_metrics_intervals(tmp_path):
    from bench.harness.reporting.tables import defensive_table, table2

    spread = [0.8] * 16 + [1.0] * 16
    rows = [{**row("stargan", "none", "lora", "standard", "ssim", 0.9, n=160), "per_image": spread},
            row("stargan", "none", "lora", "standard", "fid", 40.0, n=160)]
    for d, shift in (("none", 0.0), ("a", -0.1), ("b", -0.3)):
        for metric, reference in (("ssim", "marked"), ("l2", "outside_mark")):
            per_image = [v + shift for v in spread] if metric == "ssim" else [0.01 - shift / 10] * 32
            rows.append({**row("stargan", d, "lora_warning", "standard", metric, float(np.mean(per_image)), n=160),
                         "reference": reference, "per_image": per_image})
    cells = pd.DataFrame(rows)
    text = emit(tmp_path, "table2", table2(cells, ["lora"]), "Table II")
    assert "0.900 ± 0.0" in text and "40.000 ±" not in text  # FID: a set metric, no interval over images
    found = defensive_table(cells, ["lora_warning"])
    table, low, high = found.value, found.low, found.high
    ssim = ("stargan", "lora_warning", "SSIM to marked fake")
    assert table.loc[ssim, "benign"] == pytest.approx(0.9) and table.loc[ssim, "protected (worst)"] == pytest.approx(0.6)
    assert table.loc[ssim, "protected (mean)"] == pytest.approx(0.7)
    assert low.loc[ssim, "protected (worst)"] < 0.6 < high.loc[ssim, "protected (worst)"]
    rows.append({**row("stargan", "none", "lora_warning", "standard", "mark_recovery", 0.94567, n=160),
                 "reference": "marked"})  # a metric kept without per-image values
    text = emit(tmp_path, "defensive", defensive_table(pd.DataFrame(rows), ["lora_warning"]), "Defensive")
    assert "| 0.946 " in text and "0.94567" not in text  # printed as its neighbours, without an interval
    l2 = ("stargan", "lora_warning", "L2 to fake, outside mark")
    assert table.loc[l2, "protected (worst)"] == pytest.approx(0.04)  # the largest L2 is the worst


def with_images(rows, spread):
    """Give every DSR row 32 per-image values `spread` above and below its value, in a
    pattern of its own per defense (so that two defenses' values are not paired alike)."""
    period = {"a": 1, "b": 2, "c": 4, "none": 8}
    out = []
    for r in rows:
        if r["metric"] == "dsr":
            v, k = r["value"], period[r["defense"]]
            r = {**r, "per_image": [v + spread * (-1) ** (i // k) for i in range(32)]}
        out.append(r)
    return out


def test_the_leaderboard_marks_entries_it_cannot_tell_apart(tmp_path):
    from bench.harness.reporting.board import build_board
    from bench.harness.reporting.runs import read_run

    rows = []
    for r in synthetic_rows():
        if r["metric"] == "dsr" and r["defense"] in ("a", "b", "c"):
            # a and b alike everywhere; c far below both
            r = {**r, "value": {"a": 0.60, "b": 0.61, "c": 0.10}[r["defense"]]}
        rows.append(r)
    board = build_board([read_run(write_run(tmp_path / "run", with_images(rows, 0.3),
                                            {"a": 0.05, "b": 0.05, "c": 0.05}))])
    entries = {e.label: e for e in board.entries}
    assert [entries[d].rank for d in "bac"] == [1, 2, 3]
    assert entries["a"].tied_with == ["b"] and entries["b"].tied_with == ["a"] and entries["c"].tied_with == []
    low, high = entries["c"].robust_interval
    assert low <= 0.10 <= high
    from bench.harness.reporting.leaderboard import write_board

    write_board(board, tmp_path / "board")
    saved = json.loads((tmp_path / "board" / "entries" / "a.json").read_text())
    assert saved["tied_with"] == ["b"] and len(saved["robust_dsr_interval"]) == 2
    assert "tied with (95%)" in (tmp_path / "board" / "leaderboard.md").read_text()
