"""The paper profile end to end (256 px, the official checkpoints' layouts, the paper's
networks) on random weights written where `bench download` says, one evaluation image
and every defense and bypass at its smallest step counts: a first run on a GPU must
not die on a shape, a dtype or a missing file. Slow (run with -m slow)."""

import json
import math

import pytest

from bench.contract.registry import registry
from bench.harness.cli import main
from tests.conftest import shared_path
from tests.paper_weights import write_paper_weights

# every defense and bypass at its smallest step counts (the LoRA variants are LoRA)
SMALLEST = {
    "limit": 1, "finetune_limit": 2, "defense_fit_limit": 2, "batch_size": 4,
    "defenses.disrupting.steps": 1, "defenses.cmua.steps": 1, "defenses.cmua.batch_size": 2,
    "defenses.dfrap.steps": 1, "defenses.raw.steps": 1, "defenses.raw.eot_samples": 1,
    "defenses.pg.iterations": 1, "defenses.pg.batch_size": 1,
    "defenses.idguard.iterations": 1, "defenses.idguard.batch_size": 1, "defenses.antiforgery.steps": 1,
    "bypasses.lora.pgd_steps": 1, "bypasses.lora.batch_size": 2,
    "bypasses.lora_warning.epochs": 1, "bypasses.lora_warning_pixel.epochs": 1,
    "bypasses.gat.epochs": 1, "bypasses.gat.d_warmup": 1, "bypasses.gat.pgd_steps": 1, "bypasses.gat.batch_size": 2,
    "bypasses.magat.epochs": 1, "bypasses.magat.pgd_steps": 1, "bypasses.magat.batch_size": 2,
    "bypasses.ri.pgd_steps": 1, "bypasses.ri.batch_size": 2,
}


@pytest.mark.slow
def test_the_paper_profile_runs_end_to_end_on_random_official_weights(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    data, reference = shared_path("data", "celebahq"), shared_path("reference")
    write_paper_weights(tmp_path / "weights", reference)
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    settings = [arg for key, value in SMALLEST.items() for arg in ("--set", f"{key}={value}")]
    settings += ["--set", "allow_unverified_weights=true"]  # random weights: not the released files
    assert main(["run", "--profile", "paper", "--data", str(data), "--dataset", "celebahq", "--defenses", "all",
                 "--bypass", ",".join(registry("bypasses").names()), "--generators", "all", *settings,
                 "--output", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    meta = json.loads((out / "run.json").read_text())
    cells = {(r["generator"], r["defense"], r["bypass"], r["scenario"]) for r in rows}
    generators, defenses, bypasses = (meta["selected"][k] for k in ("generators", "defenses", "bypasses"))
    assert sorted(generators) == ["attgan", "hisd", "stargan"] and len(defenses) == 7 and "lora" in bypasses
    for g in generators:
        for d in defenses:
            for b in bypasses:
                assert (g, d, b, "standard") in cells
    assert any(c[3] == "leakage" for c in cells)
    assert meta["config"]["resolution"] == 256 and all(w["weights"] == "official"
                                                       for w in meta["config"]["generators"].values())
    assert {found["state"] for found in meta["official_weights"].values()} == {"different"}
    assert all(math.isfinite(r["value"]) for r in rows if r["value"] is not None)
    assert (out / "table1.csv").exists() and (out / "report.md").exists()
