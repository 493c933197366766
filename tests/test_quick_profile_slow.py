"""The quick profile on real held-out faces with the shipped StarGAN and AttGAN (minutes: marked slow).

Run with `tox -- -m slow` or `pytest -m slow`.
"""

import json

import pytest

from bench.harness.cli import main
from generators.attgan import AttGAN
from generators.stargan import StarGAN
from tests.conftest import shared_path


@pytest.mark.slow
@pytest.mark.parametrize("generator", [StarGAN, AttGAN], ids=lambda g: g.name)
def test_disrupting_works_and_lora_patching_bypasses_it(tmp_path, generator):
    if not generator.shipped_weights_path(64).exists():
        pytest.skip(f"no shipped {generator.name} weights")
    data = shared_path("data", "celebahq")
    out = tmp_path / "run"
    assert main(["run", "--defenses", "disrupting", "--bypass", "none,jpeg,lora", "--generators", generator.name,
                 "--data", str(data), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]
    # the standard scenario (the quick profile also runs the leakage one, with the same keys)
    value = {(r["defense"], r["bypass"], r["metric"]): r["value"] for r in rows if r["scenario"] == "standard"}
    assert value[("disrupting", "none", "dsr")] >= 0.9
    assert value[("disrupting", "lora", "dsr")] <= 0.1
    assert value[("none", "lora", "ssim")] >= 0.8  # benign outputs stay close to the original
