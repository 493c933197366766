from pathlib import Path

import pandas as pd
import pytest

from bench.harness.reporting.render import to_markdown
from bench.harness.reporting.tables import (
    averaged_over_defenses,
    defense_summary,
    defensive_table,
    leakage_comparison,
    table1,
    table3,
    training_table,
)


def test_training_table_prints_parameter_counts_as_integers():
    costs = pd.DataFrame([
        dict(generator="stargan", bypass="lora", metric="train_seconds", value=542.151),
        dict(generator="stargan", bypass="lora", metric="trainable_params", value=116580.0),
    ])
    text = to_markdown(training_table(costs).value, "training cost")
    assert " 116580 |" in text and "116580.000" not in text
    assert " 542.151 |" in text


def cell(generator, defense, bypass, metric, value, scenario="standard", reference="original"):
    return dict(generator=generator, defense=defense, bypass=bypass, metric=metric, value=value,
                scenario=scenario, reference=reference, higher_is_better=metric == "ssim")


def synthetic_cells():
    rows = []
    for g, scale in (("stargan", 1.0), ("attgan", 0.5)):
        for d, dsr in (("disrupting", 1.0), ("cmua", 0.6)):
            for b, factor in (("none", 1.0), ("jpeg", 0.5), ("gat", 0.3), ("lora", 0.02), ("lora_r4", 0.1)):
                rows += [cell(g, d, b, "dsr", dsr * factor * scale), cell(g, d, b, "l2", 0.1 * factor),
                         cell(g, d, b, "ssim", 1 - 0.3 * factor)]
                if b in ("jpeg", "lora"):
                    rows.append(cell(g, d, b, "dsr", {"jpeg": 0.9, "lora": 0.05}[b] * scale, scenario="leakage"))
    return pd.DataFrame(rows)


def synthetic_costs():
    return pd.DataFrame([dict(generator=g, bypass=b, metric=metric, value=value) for g in ("stargan", "attgan")
                         for b, seconds, params in (("gat", 500.0, 8e6), ("lora", 50.0, 3e5))
                         for metric, value in (("train_seconds", seconds), ("trainable_params", params))])


def test_worst_case_summary_takes_the_defense_a_bypass_copes_with_least():
    summary = defense_summary(synthetic_cells()).value
    assert summary.loc["lora", ("stargan", "worst DSR↓")] == 0.02
    assert summary.loc["jpeg", ("stargan", "mean DSR↓")] == pytest.approx((0.5 + 0.3) / 2)
    assert summary.loc["jpeg", ("attgan", "worst DSR↓")] == 0.25


def test_a_bypass_one_generator_lacks_prints_dashes_and_whole_counts():
    cells = pd.concat([synthetic_cells(), pd.DataFrame([cell("stargan", "disrupting", "lora_x", "dsr", 0.125)])])
    text = to_markdown(defense_summary(cells).value, "summary")
    row = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("| lora_x")).split("|")]
    assert row[1:-1] == ["lora_x", "–", "–", "–", "0.125", "0.125", "1"]


def test_table3_joins_one_defense_with_training_cost():
    t3 = table3(synthetic_cells(), synthetic_costs(), "disrupting", ["gat", "lora"]).value
    assert list(t3.index) == ["gat", "lora"]
    assert t3.loc["lora", ("stargan", "DSR↓")] == 0.02 and t3.loc["gat", ("stargan", "params↓")] == 8_000_000
    assert t3.loc["lora", ("attgan", "train s↓")] == 50.0


def test_leakage_compares_the_same_cells_in_both_scenarios():
    leak = leakage_comparison(synthetic_cells()).value
    assert leak.loc[("stargan", "jpeg"), "DSR standard↓"] == pytest.approx((0.5 + 0.3) / 2)
    assert leak.loc[("stargan", "jpeg"), "DSR leakage↓"] == pytest.approx(0.9)
    assert ("stargan", "gat") not in leak.index  # no leakage rows: not compared


def test_rank_table_and_table1_keep_their_bypasses_only():
    cells = synthetic_cells()
    t6 = averaged_over_defenses(cells, ["lora_r4", "lora"]).value
    assert list(t6.index) == ["lora_r4", "lora"]
    assert t6.loc["lora", ("stargan", "DSR↓")] == pytest.approx((0.02 + 0.012) / 2)
    t1 = table1(cells, bypasses=["none", "lora"]).value
    assert set(t1.index.get_level_values(1)) == {"no bypass", "lora"}


def test_the_rank_table_averages_over_the_defenses_every_rank_was_scored_with():
    from bench.harness.reporting.tables import protected_by_common_defenses

    extra = pd.DataFrame([cell("stargan", "antiforgery", "lora", m, v) for m, v in (("dsr", 0.9), ("l2", 0.5),
                                                                                    ("ssim", 0.1))])
    cells = pd.concat([synthetic_cells(), extra])  # a run of more defenses merged with the rank sweep's
    t6 = averaged_over_defenses(cells, ["lora_r4", "lora"]).value
    assert t6.loc["lora", ("stargan", "DSR↓")] == pytest.approx((0.02 + 0.012) / 2)
    assert protected_by_common_defenses(cells, ["lora_r4", "lora"])[1] == ["antiforgery"]
    assert protected_by_common_defenses(cells, ["lora"])[1] == []


def test_defensive_rows_are_split_by_reference():
    rows = [cell("stargan", d, "lora_warning", m, v, reference=r)
            for d in ("none", "disrupting") for m, v in (("ssim", 0.9), ("l2", 0.01))
            for r in ("marked", "outside_mark")]
    table = defensive_table(pd.DataFrame(rows), ["lora_warning"]).value
    assert table.loc[("stargan", "lora_warning", "SSIM to marked fake"), "benign"] == 0.9
    assert ("stargan", "lora_warning", "L2 to fake, outside mark") in table.index
    rows.append(cell("stargan", "disrupting", "lora_warning", "mark_recovery", 0.7, reference="marked"))
    rows.append(cell("stargan", "pg", "lora_warning", "mark_recovery", 0.5, reference="marked"))
    table = defensive_table(pd.DataFrame(rows), ["lora_warning"]).value
    assert table.loc[("stargan", "lora_warning", "mark recovery, inside mark"), "protected (worst)"] == 0.5
    assert table1(pd.DataFrame(rows + [cell("stargan", "none", "none", "dsr", 0.0)])).value.shape[0] == 1


def test_several_runs_make_one_report(tmp_path):
    import json

    from bench.harness.reporting.report import write_report

    cells = synthetic_cells()
    for name, bypasses in (("a", {"none", "lora"}), ("b", {"none", "jpeg", "gat"})):
        (tmp_path / name).mkdir()
        part = cells[cells.bypass.isin(bypasses)]
        (tmp_path / name / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part.to_dict("records")))
    text = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    table = pd.read_csv(tmp_path / "merged" / "table1.csv", header=[0, 1], index_col=[0, 1])
    assert {"lora", "jpeg", "gat", "no bypass"} == set(table.index.get_level_values(1))
    assert "Table I" in text and not (tmp_path / "a" / "table1.csv").exists()


def test_a_merged_report_gives_the_wall_time_of_each_part():
    from bench.contract.results import RunRecord
    from bench.harness.reporting.report import wall_times

    records = [RunRecord("0.1.0", 0, {}, {}, {}, wall_seconds=seconds) for seconds in (1200.4, 300.0, None)]
    assert wall_times(records) == "1200 s + 300 s"


def test_run_metadata_keeps_the_git_state_taken_at_the_start():
    import torch

    from bench.harness.provenance import run_metadata

    start = {"commit": "0" * 40, "dirty": False}
    record = run_metadata({"seed": 0}, {}, {}, torch.device("cpu"), "bench run", git=start)
    assert record.git == start and record.to_json()["git"] == start


def test_the_git_state_names_the_changed_files(tmp_path, monkeypatch):
    import subprocess

    import bench
    from bench.harness.provenance import git_state

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "__init__.py").write_text("")
    (tmp_path / "results.md").write_text("a table")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "bench" / "__init__.py"))
    assert git_state()["dirty"] is False and "changed" not in git_state()
    (tmp_path / "results.md").write_text("a table made again")
    (tmp_path / "untracked.txt").write_text("not the checkout's")
    assert git_state()["dirty"] is True and git_state()["changed"] == ["results.md"]


def test_the_provenance_line_tells_a_changed_report_from_changed_code():
    from bench.harness.reporting.report import tree_state

    assert tree_state({"commit": "abc", "dirty": False}) == ""
    assert tree_state({"commit": "abc", "dirty": True}) == " (dirty)"
    assert tree_state({"dirty": True, "changed": ["results/a/table1.csv", "results/a/report.md"]}) == \
        " (only results/ changed: 2 files)"
    assert tree_state({"dirty": True, "changed": ["results/a/table1.csv", "bench/cli.py"]}) == " (dirty)"


def quality_cells():
    """Benign outputs of two bypasses, and a defensive patch with and without MMFA."""
    rows = []
    for g, n in (("stargan", 160), ("hisd", 96)):
        for b, fid in (("jpeg", 8.0), ("lora", 9.5)):
            for metric, value in (("fid", fid), ("kid", fid / 1000), ("ssim", 0.9), ("brisque", 20.0)):
                rows.append({**cell(g, "none", b, metric, value), "n": n})
        for b, ssim, sem in (("lora_warning", 0.9, 0.95), ("lora_warning_pixel", 0.8, 0.85)):
            for d, shift in (("none", 0.0), ("disrupting", 0.1), ("cmua", 0.2)):
                for metric, value in (("fid", 10 + 10 * shift), ("brisque", 18.0), ("ssim", ssim - shift),
                                      ("classifier_cosine", sem - shift)):
                    rows.append({**cell(g, d, b, metric, value, reference="marked"), "n": n,
                                 "higher_is_better": metric in ("ssim", "classifier_cosine")})
    return pd.DataFrame(rows)


def test_table2_shows_each_bypass_benign_quality_with_its_n():
    from bench.harness.reporting.tables import table2

    t2 = table2(quality_cells(), ["jpeg", "lora", "ri"], {"kid": "weights missing"}).value
    assert list(t2.index) == ["jpeg", "lora"]
    assert t2.loc["lora", ("stargan", "FID↓")] == 9.5 and t2.loc["jpeg", ("hisd", "BRISQUE↓")] == 20.0
    assert t2.loc["jpeg", ("stargan", "n")] == 160 and t2.loc["jpeg", ("hisd", "n")] == 96
    assert t2.loc["jpeg", ("stargan", "SSIM↑")] == 0.9
    assert t2.loc["jpeg", ("stargan", "KID×1000↓")] == pytest.approx(8.0)  # printed in thousandths


def test_table2_prints_na_for_a_skipped_metric():
    from bench.harness.reporting.tables import table2

    cells = quality_cells()
    t2 = table2(cells[cells.metric != "kid"], ["jpeg", "lora"], {"kid": "weights missing"}).value
    assert (t2[("stargan", "KID×1000↓")] == "n/a").all()


def test_table4_averages_adversarial_outputs_over_the_defenses():
    from bench.harness.reporting.tables import table4

    t4 = table4(quality_cells(), ["lora_warning"]).value
    assert list(t4.index) == [("lora_warning", "benign"), ("lora_warning", "adversarial")]
    assert t4.loc[("lora_warning", "benign"), ("stargan", "FID↓")] == 10
    assert t4.loc[("lora_warning", "adversarial"), ("stargan", "FID↓")] == pytest.approx(11.5)


def test_table5_uses_the_stand_in_and_says_so():
    from bench.harness.reporting.tables import semantic_metric, table5

    cells, skipped = quality_cells(), {"clip_score": "CLIP weights not found at /x"}
    recorded = {"classifier_cosine": {"higher_is_better": True, "stand_in_for": "clip_score", "description": "d"}}
    semantic, note = semantic_metric(cells, recorded, skipped)
    t5 = table5(cells, {"without": "lora_warning_pixel", "with": "lora_warning"}, semantic, skipped).value
    assert list(t5.index) == [("w/o", "benign"), ("w/o", "adversarial"), ("w/", "benign"), ("w/", "adversarial")]
    assert t5.loc[("w/", "benign"), ("stargan", "classifier cosine↑")] == 0.95
    assert t5.loc[("w/o", "adversarial"), ("hisd", "SSIM↑")] == pytest.approx(0.65)
    assert "stands in for the CLIP score" in note and "/x" in note


def test_latex_is_booktabs_with_arrows():
    from bench.harness.reporting.render import to_latex
    from bench.harness.reporting.tables import table2

    text = to_latex(table2(quality_cells(), ["jpeg", "lora"]).value, "Table II: benign_impact")
    assert "\\toprule" in text and "\\midrule" in text and "\\bottomrule" in text
    assert "FID$\\downarrow$" in text and "SSIM$\\uparrow$" in text and "benign\\_impact" in text
    assert "\\multicolumn{5}{c}{stargan}" in text


def test_overlapping_runs_count_each_cell_once(tmp_path):
    import json

    from bench.harness.reporting.report import write_report

    first, second = tmp_path / "a", tmp_path / "b"
    for folder, value in ((first, 0.5), (second, 0.1)):
        folder.mkdir()
        rows = [cell("stargan", "disrupting", "jpeg", "dsr", value), cell("stargan", "cmua", "jpeg", "dsr", 0.2)]
        (folder / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report([first, second], tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", header=[0, 1], index_col=0)
    assert summary.loc["jpeg", ("stargan", "mean DSR↓")] == pytest.approx(0.35)
    assert summary.loc["jpeg", ("stargan", "defenses")] == 2


def test_fit_costs_come_from_costs_jsonl_or_from_the_rows_of_older_runs(tmp_path):
    import json

    from bench.harness.reporting.runs import read_cells, read_costs

    old, new = tmp_path / "schema1", tmp_path / "schema2"
    rows = synthetic_cells().to_dict("records")
    legacy = [cell("stargan", "none", "lora", "train_seconds", 50.0), cell("stargan", "none", "lora",
                                                                            "trainable_params", 3e5)]
    for folder, extra in ((old, legacy), (new, [])):
        folder.mkdir()
        (folder / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + extra))
    (new / "costs.jsonl").write_text(json.dumps({"kind": "bypass_fit", "generator": "stargan", "plugin": "lora",
                                                 "train_seconds": 50.0, "trainable_params": 300000}) + "\n")
    for folder in (old, new):
        costs = read_costs(folder).set_index("metric").value
        assert costs["train_seconds"] == 50.0 and costs["trainable_params"] == 3e5
        assert len(read_cells(folder)) == len(rows)


COMMITTED = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("result", sorted(str(p.parent.relative_to(COMMITTED)) for p in COMMITTED.glob("**/runs")))
def test_the_committed_reference_tables_rebuild_from_their_rows(result, tmp_path):
    """Each committed result made by `results/make.sh` (its runs' rows in `runs/`) holds
    the tables `bench report` makes from those rows."""
    from bench.harness.reporting.report import write_report

    folder = COMMITTED / result
    write_report(sorted((folder / "runs").iterdir()), tmp_path)
    committed = sorted(p.name for p in folder.glob("*.csv"))
    assert committed and committed == sorted(p.name for p in tmp_path.glob("*.csv"))
    for name in committed:
        assert (tmp_path / name).read_text() == (folder / name).read_text(), name
