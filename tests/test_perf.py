"""`bench perf`: the PGD step's FLOPs and speed against the matmul peak, as JSON."""

import json

import pytest

from bench.harness.cli import main


def test_perf_counts_the_pgd_step_and_compares_it_with_the_peak(tmp_path, capsys):
    results = {}
    for batch in (2, 4):
        out = tmp_path / str(batch)
        assert main(["perf", "--profile", "ci", "--generators", "stargan", "--batch", str(batch), "--repeats", "1",
                     "--matmul-size", "128", "--output", str(out)]) == 0
        results[batch] = json.loads((out / "perf.json").read_text())
    step = results[2]["pgd_step"][0]
    assert step["generator"] == "stargan" and step["gflop_per_step"] > 0 and step["share_of_peak"] > 0
    assert step["gflops"] == pytest.approx(step["share_of_peak"] * results[2]["matmul"]["gflops"])
    # the work grows with the batch, image for image
    assert results[4]["pgd_step"][0]["gflop_per_step"] == pytest.approx(2 * step["gflop_per_step"], rel=1e-6)
    assert "share of peak" in capsys.readouterr().out
