import json

from bench.contract.io import load_tensors
from bench.harness.cli import main
from tests.conftest import make_face_folder


def run_cli(tmp_path, weights, out, extra=()):
    data = make_face_folder(tmp_path / "faces", n=16, size=(20, 20))
    args = ["run", "--defenses", "disrupting", "--bypass", "none,jpeg,lora", "--generators", "stargan",
            "--profile", "ci", "--data", str(data), "--dataset", "folder", "--output", str(out),
            "--set", f"generators.stargan.weights={weights}", "--set", "resolution=16",
            "--set", "splits.finetune=[0,8]", "--set", "splits.eval=[8,16]", *extra]
    return main(args)


def read_rows(out):
    return [json.loads(line) for line in (out / "cells.jsonl").read_text().splitlines()]


def test_run_writes_cells_and_metadata_then_reuses_the_cache(tmp_path, tiny_stargan_file, capsys):
    out = tmp_path / "run1"
    assert run_cli(tmp_path, tiny_stargan_file, out) == 0
    rows = read_rows(out)
    keys = {"generator", "defense", "bypass", "scenario", "metric", "value", "n"}
    assert all(keys <= set(r) and isinstance(r["value"], float) for r in rows)
    cells = {(r["defense"], r["bypass"], r["metric"]) for r in rows}
    for bypass in ("none", "jpeg", "lora"):
        for metric in ("l2", "ssim", "dsr"):
            assert ("disrupting", bypass, metric) in cells and ("none", bypass, metric) in cells
    assert not any(r["metric"] in ("train_seconds", "trainable_params") for r in rows)  # costs have their table
    costs = [json.loads(line) for line in (out / "costs.jsonl").read_text().splitlines()]
    lora = next(c for c in costs if c["kind"] == "bypass_fit" and c["plugin"] == "lora")
    assert lora["generator"] == "stargan" and lora["trainable_params"] > 0 and lora["train_seconds"] > 0
    leaked = {(r["defense"], r["bypass"]) for r in rows if r["scenario"] == "leakage" and r["metric"] == "dsr"}
    assert leaked == {("disrupting", "jpeg"), ("disrupting", "lora")}  # ci: Disrupting adapts to each bypass
    n = {r["n"] for r in rows if r["metric"] == "dsr"}
    assert n == {4 * 5}  # ci limit 4 images x 5 targets
    for r in rows:  # pair metrics keep each image's mean over its targets: the cell's value is their mean
        if r["metric"] in ("l2", "ssim", "dsr") and r.get("reference") == "original":
            assert len(r["per_image"]) == 4 and abs(sum(r["per_image"]) / 4 - r["value"]) < 1e-6
    clean = [r for r in rows if r["defense"] == "none" and r["bypass"] == "none" and r["metric"] == "l2"]
    assert clean[0]["value"] == 0.0
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["profile"] == "ci" and meta["seed"] == 0
    assert meta["plugins"]["generators"]["stargan"]["weights_sha256"]
    assert meta["environment"]["packages"]["torch"] and "commit" in meta["git"]
    assert (out / "table1.csv").exists() and "Table I" in capsys.readouterr().out
    assert (out / "examples_stargan.png").exists()
    patch, patch_meta = load_tensors(out / "fitted" / "stargan_lora.safetensors")
    assert patch and all(k.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "gate") for k in patch)
    assert patch_meta["bypass"]["params"]["rank"] == 8
    assert not any(r["cache_hit"] for r in rows)

    out2 = tmp_path / "run2"
    assert run_cli(tmp_path, tiny_stargan_file, out2) == 0
    rows2 = read_rows(out2)
    assert any(r["cache_hit"] for r in rows2)
    def key(r):
        return r["scenario"], r["defense"], r["bypass"], r["metric"], r.get("target"), r.get("reference")

    by_key = {key(r): r["value"] for r in rows}
    assert len(by_key) == len(rows) == len(rows2)
    assert all(by_key[key(r)] == r["value"] for r in rows2)


def test_unknown_names_fail_with_one_line(tmp_path, tiny_stargan_file, capsys):
    assert main(["run", "--defenses", "disruptng", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean 'disrupting'" in err
    assert run_cli(tmp_path, tiny_stargan_file, tmp_path / "o", ["--set", "bypasses.lora.rnak=4"]) == 2
    assert "did you mean 'rank'" in capsys.readouterr().err


def test_settings_are_checked(tmp_path, capsys):
    assert main(["run", "--data", str(tmp_path), "--set", "splits.evall=[0,10]"]) == 2
    assert "did you mean 'eval'" in capsys.readouterr().err
    assert main(["run", "--data", str(tmp_path), "--set", "limit=abc"]) == 2
    assert "must be int" in capsys.readouterr().err


def test_report_on_a_damaged_results_file(tmp_path, capsys):
    (tmp_path / "cells.jsonl").write_text('{"metric": "l2"}\n{broken\n')
    assert main(["report", str(tmp_path)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err


def test_variants_defensive_patch_and_leakage(tmp_path, tiny_stargan_file, capsys):
    out = tmp_path / "variants"
    data = make_face_folder(tmp_path / "faces2", n=16, size=(20, 20))
    assert main(["run", "--defenses", "disrupting", "--bypass", "lora_r4,lora_warning", "--generators", "stargan",
                 "--profile", "ci", "--data", str(data), "--dataset", "folder", "--output", str(out),
                 "--set", f"generators.stargan.weights={tiny_stargan_file}", "--set", "resolution=16",
                 "--set", "splits.finetune=[0,8]", "--set", "splits.eval=[8,16]",
                 "--set", "report.table1=[\"none\",\"lora_r4\"]", "--set", "leakage.bypasses=all"]) == 0
    rows = read_rows(out)
    references = {(r["bypass"], r["scenario"], r.get("reference")) for r in rows if r["metric"] == "ssim"}
    assert ("lora_warning", "standard", "marked") in references
    assert ("lora_warning", "standard", "outside_mark") in references
    recovery = [r for r in rows if r["metric"] == "mark_recovery"]
    assert {r["defense"] for r in recovery} == {"none", "disrupting"} and all(r["value"] <= 1 for r in recovery)
    assert ("lora_r4", "leakage", "original") in references
    assert not any(b == "lora_warning" and s == "leakage" for b, s, _ in references)  # not a bypass
    _, meta = load_tensors(out / "fitted" / "stargan_lora_r4.safetensors")
    assert meta["bypass"]["params"]["rank"] == 4 and meta["bypass"]["name"] == "lora"
    _, meta = load_tensors(out / "fitted" / "stargan_lora_warning.safetensors")
    assert meta["bypass"]["params"]["warning"] and meta["bypass"]["params"]["rank"] == 16  # the profile's variant
    report = (out / "report.md").read_text()
    assert "Defensive patching" in report and "leakage scenario" in report
    assert (out / "fig5_leakage.png").exists()


QUALITY = '["l2","ssim","dsr","fid","kid","brisque","clip_score","classifier_cosine"]'


def pooled_pixels(images, device="cpu"):
    """A cheap stand-in for the Inception features (the runner's plumbing is under test)."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(images.float(), 4).flatten(1).double()


def test_set_and_no_reference_metrics_give_one_row_per_cell(tmp_path, tiny_stargan_file, monkeypatch, capsys):
    from bench.toolkit import fid
    from bench.toolkit.metrics import FID

    monkeypatch.setattr(FID, "missing", classmethod(lambda cls: None))
    monkeypatch.setattr(FID, "weights_sha256", classmethod(lambda cls: "f" * 64))
    monkeypatch.setattr(fid, "set_features", pooled_pixels)
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "no-weights"))
    out = tmp_path / "run"
    assert run_cli(tmp_path, tiny_stargan_file, out, ["--set", f"metrics={QUALITY}",
                                                      "--set", "set_metrics_on_protected=true"]) == 0
    rows = read_rows(out)
    for metric in ("fid", "kid", "brisque", "classifier_cosine"):
        cells = [r for r in rows if r["metric"] == metric]
        assert {(r["defense"], r["bypass"]) for r in cells if r["scenario"] == "standard"} >= {
            ("none", "none"), ("none", "jpeg"), ("disrupting", "none"), ("disrupting", "lora")}
        assert all(r["n"] == 4 * 5 and isinstance(r["value"], float) for r in cells)
    clean = {r["metric"]: r["value"] for r in rows if (r["defense"], r["bypass"]) == ("none", "none")}
    protected = {r["metric"]: r["value"] for r in rows if (r["defense"], r["bypass"], r["scenario"]) ==
                 ("disrupting", "none", "standard")}
    assert abs(clean["fid"]) < 1e-6 and protected["fid"] > 1e-3  # the clean outputs are their own reference
    assert clean["classifier_cosine"] == 1.0 or abs(clean["classifier_cosine"] - 1) < 1e-5
    assert not [r for r in rows if r["metric"] == "clip_score"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["metrics"]["fid"]["weights_sha256"] == "f" * 64 and meta["metrics"]["fid"]["kind"] == "set"
    assert len(meta["metrics"]["brisque"]["weights_sha256"]) == 64
    assert "no-weights" in meta["metrics_skipped"]["clip_score"]
    assert set(meta["metric_seconds"]) >= {"fid", "kid", "brisque", "classifier_cosine"}
    printed = capsys.readouterr()
    assert "note: metric clip_score skipped" in printed.err + printed.out
    for grid in ("examples_stargan.png", "fig6_leakage_stargan.png"):
        assert (out / grid).exists()
    assert not (out / "fig7_defensive_stargan.png").exists()  # no defensive patch in this run

    computed = []  # a second run reads the set metrics' values from the cache
    monkeypatch.setattr(fid, "set_features", lambda images, device="cpu": computed.append(1) or pooled_pixels(images))
    assert run_cli(tmp_path, tiny_stargan_file, tmp_path / "again", ["--set", f"metrics={QUALITY}",
                                                                    "--set", "set_metrics_on_protected=true"]) == 0
    again = {(r["defense"], r["bypass"], r["scenario"]): r["value"] for r in read_rows(tmp_path / "again")
             if r["metric"] == "fid"}
    assert not computed and again == {(r["defense"], r["bypass"], r["scenario"]): r["value"] for r in rows
                                      if r["metric"] == "fid"}


def test_a_metric_without_its_weights_is_skipped_and_reported_as_na(tmp_path, tiny_stargan_file, monkeypatch):
    from bench.toolkit import inception

    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setattr(inception, "helper_file", lambda: None)
    out = tmp_path / "run"
    assert run_cli(tmp_path, tiny_stargan_file, out, ["--set", f"metrics={QUALITY}",
                                                      "--set", 'scenarios=["standard"]']) == 0
    assert not [r for r in read_rows(out) if r["metric"] in ("fid", "kid")]
    meta = json.loads((out / "run.json").read_text())
    assert inception.PTH_NAME in meta["metrics_skipped"]["fid"]
    report = (out / "report.md").read_text()
    table2 = report[report.index("### Table II"):].split("###")[1]
    assert "n/a" in table2 and f"FID↓ n/a: FID Inception weights not found at {tmp_path / 'no-weights'}" in table2
    assert "\\toprule" in (out / "table2.tex").read_text()


def test_defensive_patches_are_scored_against_the_marked_fakes(tmp_path, tiny_stargan_file, monkeypatch):
    from bench.toolkit import fid
    from bench.toolkit.metrics import FID

    monkeypatch.setattr(FID, "missing", classmethod(lambda cls: None))
    monkeypatch.setattr(FID, "weights_sha256", classmethod(lambda cls: "f" * 64))
    monkeypatch.setattr(fid, "set_features", pooled_pixels)
    out = tmp_path / "run"
    assert main(["run", "--defenses", "disrupting", "--bypass", "none,lora_warning,lora_warning_pixel",
                 "--generators", "stargan", "--profile", "ci", "--output", str(out),
                 "--data", str(make_face_folder(tmp_path / "faces", n=16, size=(20, 20))), "--dataset", "folder",
                 "--set", f"generators.stargan.weights={tiny_stargan_file}", "--set", "resolution=16",
                 "--set", "splits.finetune=[0,8]", "--set", "splits.eval=[8,16]",
                 "--set", "bypasses.lora_warning_pixel.epochs=1", "--set", 'scenarios=["standard"]',
                 "--set", f"metrics={QUALITY}"]) == 0
    rows = read_rows(out)
    quality = {(r["defense"], r["bypass"], r["reference"], r["metric"]) for r in rows
               if r["metric"] in ("fid", "kid", "brisque", "classifier_cosine")}
    for bypass in ("lora_warning", "lora_warning_pixel"):
        for defense in ("none", "disrupting"):
            assert {(defense, bypass, "marked", m) for m in ("fid", "kid", "brisque", "classifier_cosine")} <= quality
    assert not any(reference == "outside_mark" and m != "classifier_cosine" for _, _, reference, m in quality)
    for table in ("table4", "table5"):
        assert (out / f"{table}.csv").exists() and (out / f"{table}.tex").exists()
    report = (out / "report.md").read_text()
    assert "Table IV" in report and "Table V" in report and "stands in for the CLIP score" in report
    assert (out / "fig7_defensive_stargan.png").exists()
