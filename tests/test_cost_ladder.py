"""The cost ladder and the board it ranks, from synthetic runs whose answer is known:
where each defense breaks, its break cost and interval, the order they give, a generator
no defense disrupts leaving that order alone, and a scenario a run did not cover shown
beside the rank instead of withholding it."""

import json

import numpy as np
import pytest

from bench.harness.cli import main
from bench.harness.reporting.board import build_board
from bench.harness.reporting.ladder import Ladder, Rung, break_replicates
from bench.harness.reporting.runs import read_run
from tests.test_leaderboard import budget_rows, row

# bypass -> (rung, fine-tuning faces, fit seconds)
LADDER = {"none": (0, 0, None), "jpeg": (1, 0, None), "blur": (1, 0, None), "comdefend": (2, 256, 300.0),
          "lora_faces8": (3, 8, 20.0), "lora": (3, 256, 600.0)}
# defense -> generator -> DSR under each bypass, in LADDER's order
DSR = {
    "early": {"stargan": (0.9, 0.05, 0.7, 0.5, 0.4, 0.0), "attgan": (0.8, 0.6, 0.02, 0.3, 0.2, 0.0)},
    "late": {"stargan": (0.9, 0.6, 0.7, 0.5, 0.3, 0.05), "attgan": (0.9, 0.5, 0.5, 0.5, 0.08, 0.0)},
    "never": {"stargan": (0.9, 0.8, 0.8, 0.7, 0.6, 0.5), "attgan": (0.05, 0.0, 0.0, 0.0, 0.0, 0.0)},
}
# ladder positions: none 0, jpeg and blur 1 (equal cost), comdefend 2, lora_faces8 3, lora 4; unbroken 5
BREAKS = {"early": {"stargan": ("jpeg", 1), "attgan": ("blur", 1)},
          "late": {"stargan": ("lora", 4), "attgan": ("lora_faces8", 3)},
          "never": {"stargan": (None, 5), "attgan": ("none", 0)}}
BREAK_COST = {"early": 1.0, "late": 3.5, "never": 2.5}
N = 40  # images per cell


def per_image(value, n=N):
    """n per-image values with mean `value`: a share `value` of the images disrupted."""
    disrupted = round(value * n)
    return [1.0] * disrupted + [0.0] * (n - disrupted)


def ladder_rows(dsr=DSR, generators=("stargan", "attgan"), leakage=()):
    rows = []
    for d, by_generator in dsr.items():
        for g in generators:
            for b, value in zip(LADDER, by_generator[g]):
                value = round(value * N) / N
                dsr_row = row(g, d, b, "standard", "dsr", value, n=N)
                dsr_row["per_image"] = per_image(value)
                rows += [dsr_row, row(g, d, b, "standard", "l2", 0.01, n=N)]
                if (d, b) in leakage:
                    rows.append(row(g, d, b, "leakage", "dsr", value, n=N) | {"per_image": per_image(value)})
            rows += budget_rows(g, d, "none", "standard", 0.05)
    return rows


def write_ladder_run(path, rows, defenses, generators=("stargan", "attgan"), threshold=0.1):
    path.mkdir(parents=True)
    (path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    costs = [{"kind": "bypass_fit", "generator": g, "plugin": b, "scenario": "standard", "train_seconds": seconds,
              "trainable_params": 10, "faces": faces, "epochs": 1, "device": "cpu", "seconds": seconds,
              "cache_hit": False}
             for g in generators for b, (_, faces, seconds) in LADDER.items() if seconds is not None]
    (path / "costs.jsonl").write_text("".join(json.dumps(c) + "\n" for c in costs))
    strength = {"jpeg": {"name": "quality", "value": 75, "stronger": "lower"},
                "blur": {"name": "sigma", "value": 1.0, "stronger": "higher"}}
    meta = {"harness_version": "0.1.0", "command": "bench run", "finished": "2026-12-07T00:00:00+00:00",
            "git": {"commit": "abc", "dirty": False}, "seed": 0, "wall_seconds": 1.0,
            "config": {"profile": "quick", "resolution": 64,
                       "protocol": {"eps": 0.05, "tolerance": 1e-5, "break_threshold": threshold}},
            "data": {"eval": {"name": "demo", "n": N, "first": ["a.png"], "last": ["z.png"], "ids": "i0",
                              "pixels_sha256": "p0"}},
            "plugins": {"generators": {g: {"weights_sha256": g[0] * 64} for g in generators},
                        "defenses": {d: {"name": d, "version": "1", "params": {"eps": 0.05}} for d in defenses},
                        "bypasses": {b: {"name": b.split("_")[0], "version": "1", "params": {}} for b in LADDER}},
            "bypass_costs": {b: {"plugin": b.split("_")[0], "rung": rung, "faces": faces, "epochs": None,
                                 "strength": strength.get(b)} for b, (rung, faces, _) in LADDER.items()}}
    (path / "run.json").write_text(json.dumps(meta))
    return path


def board_of(tmp_path, rows=None, defenses=tuple(DSR), **kwargs):
    run = write_ladder_run(tmp_path / "run", rows if rows is not None else ladder_rows(), defenses, **kwargs)
    return build_board([read_run(run)])


def test_each_defense_breaks_at_the_cheapest_bypass_and_ranks_by_its_mean_position(tmp_path):
    board = board_of(tmp_path)
    entries = {e.label: e for e in board.entries}
    for d, by_generator in BREAKS.items():
        for g, (bypass, position) in by_generator.items():
            found = entries[d].breaks[g]
            assert (found.rung.bypass if found.rung else None, found.position) == (bypass, position)
        assert entries[d].break_cost == BREAK_COST[d]
    assert {e.label: e.rank for e in board.entries} == {"late": 1, "never": 2, "early": 3}
    ladder = board.ladders["stargan"]
    assert [r.bypass for r in ladder.rungs] == ["none", "blur", "jpeg", "comdefend", "lora_faces8", "lora"]
    assert ladder.positions == [0, 1, 1, 2, 3, 4] and ladder.top == 5


def test_a_stricter_threshold_moves_the_breaks_up_the_ladder(tmp_path):
    board = board_of(tmp_path, threshold=0.01)
    entries = {e.label: e for e in board.entries}
    assert entries["early"].breaks["stargan"].rung.bypass == "lora"  # jpeg's 0.05 no longer counts
    assert entries["late"].breaks["attgan"].rung.bypass == "lora"  # nor lora_faces8's 0.075


def test_a_generator_no_defense_disrupts_leaves_the_order_alone(tmp_path):
    dsr = {d: {**by_generator, "hisd": (0.0,) * len(LADDER)} for d, by_generator in DSR.items()}
    generators = ("stargan", "attgan", "hisd")
    with_flat = board_of(tmp_path, ladder_rows(dsr, generators), generators=generators)
    assert {e.label: e.rank for e in with_flat.entries} == {"late": 1, "never": 2, "early": 3}
    assert all(e.breaks["hisd"].position == 0 for e in with_flat.entries)
    assert {e.label: e.break_cost for e in with_flat.entries} == {d: c * 2 / 3 for d, c in BREAK_COST.items()}


def test_break_costs_carry_intervals_that_tell_apart_what_differs(tmp_path):
    board = board_of(tmp_path)
    entries = {e.label: e for e in board.entries}
    for entry in entries.values():
        low, high = entry.break_interval
        assert low <= entry.break_cost <= high
    # "early" breaks at jpeg with DSR 0.05 = 2 of 40 images: a resample can leave it above 0.1
    assert entries["early"].break_interval[1] > 1.0
    assert entries["late"].tied_with == [] and "late" not in entries["early"].tied_with


def test_break_replicates_follow_the_resampled_cells():
    ladder = Ladder.of([Rung("none", 0, 0, None), Rung("jpeg", 1, 0, None), Rung("lora", 3, 8, 5.0)])
    replicates = {"none": np.array([0.9, 0.05, 0.9]), "jpeg": np.array([0.5, 0.5, 0.09]),
                  "lora": np.array([0.2, 0.0, 0.2])}
    assert break_replicates(ladder, replicates, 0.1).tolist() == [3.0, 0.0, 1.0]  # unbroken, none, jpeg
    assert break_replicates(ladder, {**replicates, "jpeg": None}, 0.1) is None


def test_a_scenario_the_run_did_not_cover_is_shown_beside_the_rank(tmp_path):
    """Leakage cells for one defense only: the others are ranked, with "leakage not run"."""
    board = board_of(tmp_path, ladder_rows(leakage={("late", "jpeg"), ("late", "lora")}))
    entries = {e.label: e for e in board.entries}
    assert all(e.rank is not None for e in board.entries)
    assert entries["late"].leakage_note == "leakage run"
    assert entries["early"].leakage_note == "leakage not run" and entries["early"].missing == []


def test_a_missing_standard_cell_withholds_the_rank(tmp_path):
    rows = [r for r in ladder_rows() if not (r["defense"] == "early" and r["bypass"] == "jpeg"
                                            and r["generator"] == "stargan")]
    entries = {e.label: e for e in board_of(tmp_path, rows).entries}
    assert entries["early"].rank is None and entries["early"].status == "incomplete (1 cell missing)"


def test_the_written_board_carries_break_costs_and_figures(tmp_path):
    run = write_ladder_run(tmp_path / "run", ladder_rows(), tuple(DSR))
    assert main(["leaderboard", str(run), "--output", str(tmp_path / "board")]) == 0
    board = json.loads((tmp_path / "board" / "board.json").read_text())
    first = board["defenses"][0]
    assert first["name"] == "late" and first["break_cost"] == BREAK_COST["late"]
    assert first["breaks"]["attgan"] | {"dsr_interval": None} == {
        "bypass": "lora_faces8", "rung": 3, "rung_name": "fine-tuning", "faces": 8, "fit_seconds": 20.0,
        "position": 3, "dsr": 0.075, "dsr_interval": None}
    never = next(d for d in board["defenses"] if d["name"] == "never")
    assert never["breaks"]["stargan"]["rung_name"] == "unbroken" and never["breaks"]["stargan"]["position"] == 5
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "lora_faces8 (fine-tuning, 8 faces) 0.075" in markdown and "unbroken" in markdown
    html = (tmp_path / "board" / "leaderboard.html").read_text()
    assert "break cost" in html and "lora_faces8 (fine-tuning, 8 faces) 0.075" in html
    for figure in ("effort.png", "transforms.png"):
        assert (tmp_path / "board" / figure).stat().st_size > 10_000


@pytest.mark.parametrize("bypass, expected", [("none", 0), ("jpeg", 1), ("comdefend", 2), ("lora", 3), ("ri", 3)])
def test_built_in_bypasses_declare_their_rung(bypass, expected):
    from bench.contract.registry import registry

    assert registry("bypasses").get(bypass)().attack_cost()["rung"] == expected


def test_a_third_party_bypass_inherits_a_rung_and_its_faces_budget():
    from dataclasses import dataclass

    import torch

    from bench.contract.plugins import Bypass

    class Filter(Bypass):
        name = "filter"

        def purify(self, x):
            return x

    class Patch(Bypass):
        name = "patch"
        kind, trainable = "patch", True

        @dataclass
        class Params:
            faces: int | None = None
            epochs: int = 2

    assert Filter().attack_cost()["rung"] == 1 and Filter().attack_cost()["faces"] == 0
    cost = Patch(faces=8).attack_cost()
    assert (cost["rung"], cost["faces"], cost["epochs"]) == (3, 8, 2)
    images = torch.zeros(20, 3, 4, 4)
    assert Patch(faces=8).fitting_images(images).size(0) == 8 and Patch().fitting_images(images).size(0) == 20


def test_named_bypass_sets_expand_where_a_bypass_name_goes():
    from bench.harness.plan import resolve_names
    from bench.harness.profiles import check_settings, get_profile

    config = check_settings(get_profile("quick"))
    names = resolve_names(config, "disrupting", "ladder,ri", "stargan")["bypasses"]
    assert names[0] == "none" and names[-1] == "ri" and len(names) == len(set(names))
    assert {"jpeg_q30", "webp", "resize_25", "blur_s2", "noise_s16", "social", "comdefend", "lora_faces8",
            "lora"} <= set(names)
    assert resolve_names(config, "disrupting", "transforms", "stargan")["bypasses"] == \
        config["bypass_sets"]["transforms"]
