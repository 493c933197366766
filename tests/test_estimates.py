"""Step estimates: this machine's history first, then the reference run's timings scaled
by the probe (only for its profile and resolution); the run's bar weighted by them."""

from __future__ import annotations

import json

import pytest
import torch

from bench.harness import estimates
from bench.harness.cache import Cache
from bench.harness.estimates import CACHED_STEP_SECONDS, Estimator, signature
from bench.harness.executors import Progress
from bench.harness.plan import Plan, Step

CONFIG = {"profile": "quick", "resolution": 64}


def fit_parts(generator: str, rank: int = 8) -> dict:
    return {"step": "fit", "device": "cpu", "bypass": {"name": "lora", "params": {"rank": rank}},
            "generator": {"name": generator}}


def step(parts: dict, kind: str = "fit") -> Step:
    from bench.harness.cache import make_key

    return Step(kind, make_key(parts), parts, {}, (), "a step")


@pytest.fixture
def reference(tmp_path, monkeypatch):
    folder = tmp_path / "released"
    folder.mkdir()
    monkeypatch.setenv("BENCH_RELEASED_FITS", str(folder))
    monkeypatch.setattr(estimates, "probe_seconds", lambda: 2.0)  # this machine: twice as slow as the reference
    timings = {"profile": "quick", "resolution": 64, "unit": estimates.UNIT, "cpu": "the reference CPU",
               "probe_seconds": 1.0,
               "steps": [{"signature": ["fit", "lora", "stargan", "cpu", None], "seconds": 300.0},
                         {"signature": ["fit", "lora"], "seconds": 200.0}]}
    (folder / "timings.json").write_text(json.dumps(timings))
    return folder


def test_the_signature_names_kind_plugin_generators_and_device():
    assert signature("fit", fit_parts("attgan")) == ("fit", "lora", "attgan", "cpu", None)
    cell = {"labels": ["hisd", "pg", "jpeg", "transfer:stargan"], "device": "cpu", "metrics": {"ssim": {}, "fid": {}}}
    assert signature("cell", cell) == ("cell", "transfer/jpeg", "hisd", "cpu", "fid+ssim")
    fit = {"defense": {"name": "cmua"}, "generators": [{"name": "attgan"}, {"name": "hisd"}], "device": "cpu"}
    assert signature("defense_fit", fit) == ("defense_fit", "cmua", "attgan+hisd", "cpu", None)
    patched = {"name": "stargan", "bypassed_by": {"bypass": {"name": "lora", "version": "1"}}}
    behind = {"defense": {"name": "idguard"}, "generators": [{"name": "attgan"}, patched], "device": "cpu"}
    assert signature("defense_fit", behind) == ("defense_fit", "idguard", "attgan+stargan<lora", "cpu", None)
    protect = {"defense": {"name": "disrupting"}, "generator": patched, "device": "cpu"}
    assert signature("protect", protect) == ("protect", "disrupting", "stargan<lora", "cpu", None)


def test_this_machine_first_then_the_reference_scaled_then_by_kind_and_plugin(tmp_path, reference):
    cache = Cache(tmp_path / "cache")
    cache.put("fit", fit_parts("attgan", rank=4), {"value": torch.ones(1)}, {"seconds": 50.0})
    estimator = Estimator(cache, CONFIG)
    assert estimator.seconds(step(fit_parts("attgan"))) == 50.0  # this machine's attgan fits
    assert estimator.seconds(step(fit_parts("stargan"))) == 600.0  # the reference's, x2
    assert estimator.seconds(step(fit_parts("hisd"))) == 50.0  # by kind and plugin: this machine's first
    assert estimator.seconds(step(fit_parts("attgan", rank=4))) == CACHED_STEP_SECONDS  # in the cache
    assert estimator.seconds(step({"step": "clean", "device": "cpu"}, "clean")) is None
    assert estimator.sources == {"this machine": 2, "reference": 1, "none": 1}
    assert "the reference CPU" in estimator.note() and "x2.00" in estimator.note()


def cell_parts(clean: dict, bypass: str = "none", metrics=("fid", "l2")) -> dict:
    from bench.harness.cache import make_key

    return {"step": "cell", "clean": make_key(clean), "device": "cpu", "labels": ["hisd", "pg", bypass, "standard"],
            "metrics": {m: {"name": m} for m in metrics}}


def test_steps_are_estimated_by_seconds_per_pass_of_their_own_bypass_and_metrics(tmp_path):
    cache = Cache(tmp_path / "cache")
    demo, celebahq = ({"step": "clean", "device": "cpu", "images": {"n": n}} for n in (32, 256))
    cache.put("clean", demo, {"value": torch.ones(1)}, {"seconds": 1.0})
    for parts, seconds in ((cell_parts(demo), 16.0), (cell_parts(demo, "comdefend"), 64.0),
                           (cell_parts(demo, metrics=("l2",)), 0.5)):
        cache.put("cell", parts, {"value": torch.ones(1)}, {"seconds": seconds})
    plan = Plan()
    plan.steps["clean/x"] = step(celebahq, "clean")
    estimator = Estimator(cache, CONFIG, plan)
    assert estimator.seconds(step(cell_parts(celebahq), "cell")) == 128.0  # 0.5 s an image, 256 images
    assert estimator.seconds(step(cell_parts(celebahq, "comdefend"), "cell")) == 512.0
    assert estimator.seconds(step(cell_parts(celebahq, metrics=("l2",)), "cell")) == 4.0
    # a bypass never seen: the median of the others with these metrics (0.5 and 2 s an image)
    assert estimator.seconds(step(cell_parts(celebahq, "lora_r4"), "cell")) == 320.0
    unplanned = {"step": "clean", "device": "cpu", "images": {"n": 8}}  # neither planned nor cached
    assert estimator.seconds(step(cell_parts(unplanned), "cell")) == 16.0  # images unknown: the median step


def test_a_cell_of_metrics_never_scored_in_its_scenario_goes_by_the_same_metrics_elsewhere(tmp_path):
    cache = Cache(tmp_path / "cache")
    clean = {"step": "clean", "device": "cpu", "images": {"n": 32}}
    cache.put("clean", clean, {"value": torch.ones(1)}, {"seconds": 1.0})
    transfer = {**cell_parts(clean, metrics=("l2",)), "labels": ["hisd", "pg", "none", "transfer:stargan"]}
    cache.put("cell", transfer, {"value": torch.ones(1)}, {"seconds": 2.0})
    cache.put("cell", cell_parts(clean, metrics=("fid", "l2")), {"value": torch.ones(1)}, {"seconds": 60.0})
    estimator = Estimator(cache, CONFIG)
    assert estimator.seconds(step(cell_parts(clean, "jpeg", metrics=("l2",)), "cell")) == 2.0  # not FID's 60 s
    assert estimator.seconds(step(cell_parts(clean, "jpeg", metrics=("ssim",)), "cell")) == 60.0  # the scenario's


def test_a_step_counts_its_faces_and_the_repeats_its_settings_ask(tmp_path):
    from bench.harness.estimates import image_passes

    def fit(epochs, faces=None):
        return {"bypass": {"name": "lora", "params": {"epochs": epochs, "faces": faces}}, "images": {"n": 256}}

    def protect(steps, eot_samples=None):
        params = {"steps": steps, "eps": 0.05} | ({"eot_samples": eot_samples} if eot_samples else {})
        return {"step": "protect", "device": "cpu", "defense": {"name": "raw", "params": params},
                "generator": {"name": "stargan"}, "images": {"n": 32}}

    assert image_passes(fit(4), None) == 1024
    assert image_passes(fit(4, faces=8), None) == 32  # the cost ladder's patch on 8 of the split's faces
    assert image_passes({"defense": {"name": "pg", "params": {}}, "images": {"n": 128}}, None) == 128
    assert image_passes({"defense": {"name": "pg", "params": {"iterations": 400}}, "images": {"n": 128}}, None) == 51200
    assert image_passes(protect(40, eot_samples=4), None) == 5120
    cache = Cache(tmp_path / "cache")
    cache.put("fit", {**fit_parts("hisd"), **fit(4)}, {"value": torch.ones(1)}, {"seconds": 400.0})
    warning = {**fit_parts("hisd"), **fit(5)}  # a defensive patch: five epochs
    assert Estimator(cache, CONFIG).seconds(step(warning)) == 500.0
    cache.put("protect", protect(40, eot_samples=4), {"value": torch.ones(1)}, {"seconds": 600.0})
    assert Estimator(cache, CONFIG).seconds(step(protect(10, eot_samples=4), "protect")) == 150.0
    assert Estimator(cache, CONFIG).seconds(step(protect(40, eot_samples=2), "protect")) == 300.0


def test_the_reference_serves_its_profile_and_resolution_only(tmp_path, reference):
    paper = Estimator(Cache(tmp_path / "cache"), {"profile": "paper", "resolution": 256})
    assert paper.seconds(step(fit_parts("stargan"))) is None
    (reference / "timings.json").write_text("{not json")
    assert Estimator(Cache(tmp_path / "cache"), CONFIG).seconds(step(fit_parts("stargan"))) is None


def test_the_bar_moves_by_estimated_seconds():
    with Progress(["a", "b", "c"], {"a": 600.0, "b": None, "c": CACHED_STEP_SECONDS}, "run") as bar:
        assert bar.weights == {"a": 600.0, "b": 600.0, "c": CACHED_STEP_SECONDS}  # b: the mean of computed steps
        bar.running("fit lora on stargan", "a")
        assert "3 steps left: fit lora on stargan (~10 min)" in bar.bar.postfix
        bar.done("a")
        assert bar.bar.n == 600.0 and bar.steps_left == 2
        bar.running("a step with no estimate", "b")
        assert "(~" not in bar.bar.postfix
