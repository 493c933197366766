"""The transfer scenario: protections made against other generators, edited by each
generator; the standard scenario's protect steps reused, a universal defense fitted again
across the others, every made image against every edit, and its tables and board column."""

from __future__ import annotations

import json

import pytest
import torch

from bench.contract.results import STANDARD, TRANSFER, across, transfer_scenario, transfer_source
from bench.harness.cli import main
from bench.harness.reporting.board import build_board
from bench.harness.reporting.runs import Run, read_cells
from bench.harness.reporting.tables import OTHERS, transfer_matrix, transfer_summary
from bench.harness.steps import transferred

SELECTION = ["--defenses", "disrupting,cmua,antiforgery", "--bypass", "none", "--generators", "stargan,attgan"]


def transfer_config():
    from bench.harness.profiles import get_profile

    config = get_profile("ci")
    config.update(scenarios=[STANDARD, TRANSFER], metrics=["l2", "dsr", "brisque"], limit=3)
    return config


def test_the_scenario_names_its_source():
    assert transfer_source(transfer_scenario("stargan")) == "stargan"
    assert transfer_source(transfer_scenario(across(["attgan", "hisd"]))) == "across:attgan+hisd"
    assert transfer_source("standard") is None and transfer_source("transfer") is None


def test_the_plan_reuses_standard_protections_and_fits_universal_defenses_across_the_others():
    from bench.harness.runner import plan_run

    plan, _ = plan_run(transfer_config(), "disrupting,cmua", "none", "stargan,attgan,hisd")
    standard = {(u.cell.generator, u.cell.defense): u.step for u in plan.units
                if u.budget and u.cell.scenario == STANDARD}
    moved = [u for u in plan.units if transfer_source(u.cell.scenario)]
    assert not any(u.budget for u in moved)  # the protect steps' budgets are the standard scenario's
    assert all(plan.steps[u.step].task["metrics"] == ["l2", "dsr"] for u in moved)  # transfer.metrics
    assert all(plan.steps[u.step].task["metrics"] == ["l2", "dsr", "brisque"] for u in plan.units
               if not u.budget and u.cell.scenario == STANDARD)
    per_image = {(u.cell.generator, transfer_source(u.cell.scenario)): u.step for u in moved
                 if u.cell.defense == "disrupting"}
    assert len(per_image) == 3 * 2
    for (g, source), cell in per_image.items():
        assert standard[(source, "disrupting")] in plan.steps[cell].inputs  # reused, not made again
    universal = {u.cell.generator: transfer_source(u.cell.scenario) for u in moved if u.cell.defense == "cmua"}
    assert universal == {"stargan": "across:attgan+hisd", "attgan": "across:hisd+stargan", "hisd": "across:attgan+stargan"}
    fits = [s for s in plan.steps.values() if s.kind == "defense_fit"]
    across = sorted(sorted(t["generator"] for t in s.task["targets"]) for s in fits)
    assert across == [["attgan", "hisd"], ["attgan", "hisd", "stargan"], ["attgan", "stargan"], ["hisd", "stargan"]]


class Doubling(torch.nn.Module):
    """A generator and its pipeline: x * (1 + c), no purification."""

    def __init__(self):
        super().__init__()
        self.model = self
        self.unused = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def purify(self, x):
        return x

    def forward(self, x, c):
        return x * (1 + c.view(-1, 1, 1, 1))


def test_every_made_image_meets_every_edit():
    conditions = torch.tensor([0.0, 1.0]).view(2, 1).expand(2, 3).contiguous()  # T = 2 targets, N = 3 faces
    clean = torch.randn(2, 3, 3, 4, 4)
    per_target = torch.randn(5, 3, 3, 4, 4)  # made for the source's 5 targets
    x, outputs, references = transferred(Doubling(), per_target, conditions, clean, 8, False)
    assert outputs.shape == (10, 3, 3, 4, 4) and references.shape == (10, 3, 3, 4, 4)
    assert torch.allclose(outputs[2 * 4 + 1], per_target[4] * 2)  # source target 4, edit 1
    assert torch.equal(references[7], clean[1])
    one_each = per_target[:1].expand(5, -1, -1, -1, -1)  # the same image for every source target
    x, outputs, references = transferred(Doubling(), one_each, conditions, clean, 8, False)
    assert x.dim() == 4 and outputs.shape == (2, 3, 3, 4, 4) and torch.equal(references, clean)


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "run"
    assert main(["run", *SELECTION, "--profile", "ci", "--limit", "3", "--output", str(out),
                 "--set", 'scenarios=["standard","transfer"]', "--set", 'metrics=["l2","ssim","dsr"]']) == 0
    return out


def test_a_run_scores_transfer_cells_from_the_standard_protections(transfer_run):
    rows = [json.loads(line) for line in (transfer_run / "cells.jsonl").read_text().splitlines()]
    dsr = {(r["generator"], r["defense"], r["scenario"]): r for r in rows if r["metric"] == "dsr"}
    # Disrupting makes one image per (face, StarGAN target): 5 x AttGAN's 5 edits x 3 faces
    assert dsr[("attgan", "disrupting", "transfer:stargan")]["n"] == 5 * 5 * 3
    assert dsr[("stargan", "antiforgery", "transfer:attgan")]["n"] == 5 * 3  # one image per face
    assert dsr[("stargan", "cmua", "transfer:across:attgan")]["n"] == 5 * 3  # fitted on attgan alone
    assert all(len(r["per_image"]) == 3 for r in dsr.values())


def test_its_tables_and_board_column(transfer_run, tmp_path):
    assert main(["report", str(transfer_run), "--output", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Transfer: DSR of protections made against other generators" in report
    assert (tmp_path / "fig_transfer.png").stat().st_size > 1000
    cells = read_cells(transfer_run)
    matrix = transfer_matrix(cells).value
    assert ("cmua", OTHERS) in matrix.index and ("disrupting", "attgan") in matrix.index
    seen = cells[(cells.metric == "dsr") & (cells.scenario == STANDARD) & (cells.defense == "disrupting")
                 & (cells.generator == "stargan")].value.iloc[0]
    assert matrix.loc[("disrupting", "stargan"), "stargan DSR↓"] == pytest.approx(seen)  # the diagonal
    summary = transfer_summary(cells).value
    unseen = cells[(cells.metric == "dsr") & cells.scenario.str.startswith("transfer:")
                   & (cells.defense == "disrupting")]
    assert summary.loc["disrupting", "unseen: worst DSR"] == pytest.approx(unseen.value.min())
    from bench.contract.results import RunRecord

    board = build_board([Run(transfer_run, cells, RunRecord.read(transfer_run))])
    entry = next(e for e in board.entries if e.label == "disrupting")
    assert entry.transfer["dsr"] == pytest.approx(unseen.value.min()) and entry.transfer["cells"] == 2
    assert entry.transfer["source"] in ("stargan", "attgan")
    assert all(not str(c["scenario"]).startswith(TRANSFER) for c in entry.cells)  # not ranked on
