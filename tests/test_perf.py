"""`bench perf`: the PGD step's FLOPs and speed against the matmul peak, and a small run
timed cold and warm, as JSON."""

import json

import pytest

from bench.harness.cli import main
from bench.harness.perf import small_config
from bench.harness.profiles import get_profile


def test_perf_counts_the_pgd_step_and_compares_it_with_the_peak(tmp_path, capsys):
    results = {}
    for batch in (2, 4):
        out = tmp_path / str(batch)
        assert main(["perf", "--profile", "ci", "--generators", "stargan", "--batch", str(batch), "--repeats", "1",
                     "--matmul-size", "128", "--no-matrix", "--output", str(out)]) == 0
        results[batch] = json.loads((out / "perf.json").read_text())
    step = results[2]["pgd_step"][0]
    assert step["generator"] == "stargan" and step["gflop_per_step"] > 0 and step["share_of_peak"] > 0
    assert step["gflops"] == pytest.approx(step["share_of_peak"] * results[2]["matmul"]["gflops"])
    # the work grows with the batch, image for image
    assert results[4]["pgd_step"][0]["gflop_per_step"] == pytest.approx(2 * step["gflop_per_step"], rel=1e-6)
    assert "matrix" not in results[2]
    assert "share of peak" in capsys.readouterr().out


def test_the_small_run_shrinks_data_and_fits_by_the_scale():
    config = get_profile("quick")
    small, lengths = small_config(config, 8)
    assert (small["limit"], small["finetune_limit"], small["defense_fit_limit"]) == (4, 32, 16)
    assert lengths["pg"] == ("iterations", 400, 50) and small["defenses"]["pg"]["iterations"] == 50
    assert lengths["idguard"] == ("iterations", 300, 38)
    assert "disrupting" not in lengths  # nothing to fit


def test_perf_times_a_small_run_cold_then_warm(tmp_path, capsys):
    out = tmp_path / "perf"
    assert main(["perf", "--profile", "ci", "--generators", "attgan", "--defenses", "disrupting,pg",
                 "--bypass", "none,lora", "--scale", "2", "--repeats", "1", "--matmul-size", "128",
                 "--output", str(out)]) == 0
    matrix = json.loads((out / "perf.json").read_text())["matrix"]
    assert matrix["warm_seconds"] < matrix["cold_seconds"]  # the warm run reads every step from the cache
    kinds = {s["kind"] for s in matrix["steps"]}
    assert kinds == {"clean", "fit", "defense_fit", "protect", "cell"}
    for step in matrix["steps"]:
        assert step["seconds"] >= 0 and step["work"] > 0
        assert step["projected_seconds"] == pytest.approx(step["seconds"] * 2, rel=0.05, abs=1e-9) \
            or step["kind"] == "defense_fit"  # fits scale by their own length (rounded up when halved)
    assert matrix["peak_memory"]["host_rss_mb"] > 0
    assert "cold/warm" in capsys.readouterr().out
