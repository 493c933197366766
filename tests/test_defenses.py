"""Behaviour of the learned, universal and robust defenses beyond the plugin contract
(which tests/test_registry.py checks for every registered defense)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.contract.errors import ConfigError
from bench.contract.plugins import FitTarget
from bench.toolkit.codecs import QualitySampler, differentiable_jpeg, jpeg_roundtrip
from defenses.cmua import CMUA
from defenses.dfrap import DFRAP, QUALITIES, QUALITY_WEIGHTS
from defenses.pg import PG
from defenses.raw import RAW, TRANSFORMS, Channel
from generators.stargan import StarGAN


def faces(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def target_of(generator, n=4, seed=0):
    labels = torch.randint(0, 2, (n, len(generator.attribute_names)),
                           generator=torch.Generator().manual_seed(seed)).float()
    return FitTarget(generator, generator.targets(labels), generator.unedited_conditions(labels))


def other_stargan():
    torch.manual_seed(1)
    return StarGAN(conv_dim=8, repeat_num=1).eval().requires_grad_(False)


def test_cmua_adds_one_perturbation_to_every_image(tiny_stargan):
    x = faces()
    cmua = CMUA(steps=2, batch_size=2)
    state, info = cmua.fit(x, [target_of(tiny_stargan)], 0, torch.device("cpu"))
    assert state["perturbation"].shape == (1, 3, 16, 16)
    assert state["perturbation"].abs().max() <= 0.05 + 1e-7
    assert info["updates"] == 2 * 5  # 2 batches x 5 targets
    protected = cmua.protect(faces(3, seed=5), tiny_stargan, torch.zeros(5, 3, 5), seed=0)
    inside = (faces(3, seed=5).abs() < 0.9).all(0, keepdim=True)  # away from the range limits
    deltas = protected[0] - faces(3, seed=5)
    assert torch.allclose((deltas - state["perturbation"])[inside.expand_as(deltas)], torch.tensor(0.0), atol=1e-6)


def test_cmua_across_generators_learns_from_each(tiny_stargan):
    x = faces()
    one, _ = CMUA(steps=2, batch_size=4).fit(x, [target_of(tiny_stargan)], 0, torch.device("cpu"))
    two, info = CMUA(steps=2, batch_size=4).fit(x, [target_of(tiny_stargan), target_of(other_stargan())], 0,
                                                torch.device("cpu"))
    assert info["updates"] == 10 and not torch.equal(one["perturbation"], two["perturbation"])
    assert CMUA(across_generators=False).fit_scope() == "generator" and CMUA().fit_scope() == "generators"


def test_cmua_steps_stay_float32_under_bf16_attack_precision(tiny_stargan):
    from bench.toolkit.attacks import attack_precision

    x = faces()
    plain, _ = CMUA(steps=2, batch_size=4).fit(x, [target_of(tiny_stargan)], 0, torch.device("cpu"))
    with attack_precision("bf16"):
        under_bf16, _ = CMUA(steps=2, batch_size=4).fit(x, [target_of(tiny_stargan)], 0, torch.device("cpu"))
    assert torch.equal(plain["perturbation"], under_bf16["perturbation"])


def test_cmua_refuses_to_protect_unfitted_or_at_another_size(tiny_stargan):
    cmua = CMUA()
    with pytest.raises(ConfigError, match="not been fitted"):
        cmua.protect(faces(), tiny_stargan, torch.zeros(5, 4, 5), 0)
    cmua.load_state({"perturbation": torch.zeros(1, 3, 32, 32)}, {})
    with pytest.raises(ConfigError, match="resolution"):
        cmua.protect(faces(), tiny_stargan, torch.zeros(5, 4, 5), 0)


def test_quality_sampler_follows_its_weights():
    sampler = QualitySampler(QUALITIES, QUALITY_WEIGHTS, seed=0)
    draws = sampler(20000)
    assert set(draws.long().tolist()) <= set(QUALITIES)
    for quality, weight in zip(QUALITIES, QUALITY_WEIGHTS):
        assert abs((draws == quality).float().mean().item() - weight) < 0.015
    assert torch.equal(QualitySampler(QUALITIES, QUALITY_WEIGHTS, 3)(50), QualitySampler(QUALITIES, QUALITY_WEIGHTS, 3)(50))
    with pytest.raises(ConfigError):
        QualitySampler([50, 101], [1, 1], 0)


def test_differentiable_jpeg_approximates_real_jpeg_and_passes_gradients():
    x = torch.nn.functional.interpolate(faces(2, 8), size=32, mode="bilinear")  # smooth, like a face
    x.requires_grad_(True)
    approx = differentiable_jpeg(x, torch.tensor([75.0, 75.0]))
    real = jpeg_roundtrip(x.detach(), 75)
    assert (approx.detach() - real).pow(2).mean() < 0.25 * (x.detach() - real).pow(2).mean() + 1e-3
    approx.sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="multiples of 16"):
        differentiable_jpeg(torch.zeros(1, 3, 20, 20), torch.tensor([75.0]))


def test_dfrap_learned_compressor_imitates_jpeg_and_reloads(tiny_stargan):
    x = faces(8, 16)
    dfrap = DFRAP(compressor="learned", surrogate_iters=60, surrogate_batch=8, surrogate_width=8, steps=2)
    assert dfrap.fit_scope() == "images" and DFRAP().fit_scope() is None
    state, info = dfrap.fit(x, [], 0, torch.device("cpu"))
    assert info["surrogate_mse_to_jpeg"] < info["surrogate_first_mse"]
    conditions = target_of(tiny_stargan, 8).conditions
    out = dfrap.protect(x, tiny_stargan, conditions, 0)
    reloaded = DFRAP(compressor="learned", surrogate_iters=60, surrogate_batch=8, surrogate_width=8, steps=2)
    reloaded.load_state(state, info)
    assert torch.equal(out, reloaded.protect(x, tiny_stargan, conditions, 0))
    assert (out - x).abs().max() <= 0.05 + 1e-6
    with pytest.raises(ConfigError, match="compressor"):
        DFRAP(compressor="webp")


@pytest.mark.parametrize("kind", TRANSFORMS)
@pytest.mark.parametrize("qualities", [[50, 90], []])
def test_raw_channel_transforms_are_differentiable(kind, qualities):
    x = faces(2, 16).requires_grad_(True)
    out = Channel([kind], qualities, seed=0)(x)
    assert out.shape == x.shape
    assert torch.equal(out, x) == (kind == "identity" and not qualities)
    out.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0


def test_raw_rejects_unknown_transforms():
    with pytest.raises(ConfigError, match="transforms"):
        RAW(transforms=["jpeg", "rotate"])


def test_pg_fits_the_same_with_its_clean_outputs_made_once_or_in_every_iteration(tiny_stargan, monkeypatch):
    import defenses.pg

    x = torch.rand(8, 3, 16, 16) * 2 - 1
    settings = dict(base_channels=4, depth=2, critic_channels=4, iterations=3, batch_size=4)
    once, _ = PG(**settings).fit(x, [target_of(tiny_stargan, 8)], 0, torch.device("cpu"))
    monkeypatch.setattr(defenses.pg, "CLEAN_OUTPUTS_BYTES", 0)
    every, _ = PG(**settings).fit(x, [target_of(tiny_stargan, 8)], 0, torch.device("cpu"))
    for key in once:
        assert torch.allclose(once[key].float(), every[key].float(), atol=1e-5), key


def test_pg_learns_to_distort_and_protects_in_one_pass(tiny_stargan):
    x = faces(8, 16)
    pg = PG(base_channels=4, depth=2, critic_channels=4, iterations=40, batch_size=4, lr=1e-3)
    state, info = pg.fit(x, [target_of(tiny_stargan, 8)], 0, torch.device("cpu"))
    assert info["final_weighted_l1"] > info["first_weighted_l1"]
    protected = pg.protect(x, tiny_stargan, target_of(tiny_stargan, 8).conditions, 0)
    assert torch.equal(protected[0], protected[-1])  # one perturbation per image, for all targets
    assert (protected - x).abs().max() <= 0.05 + 1e-6
    with pytest.raises(ConfigError, match="target_weights"):
        PG(target_weights=[1.0, 2.0]).fit(x, [target_of(tiny_stargan, 8)], 0, torch.device("cpu"))


def run_with(tmp_path, weights, out, defenses):
    from bench.harness.cli import main
    from tests.conftest import make_face_folder

    data = make_face_folder(tmp_path / "faces", n=16, size=(16, 16))
    return main(["run", "--defenses", defenses, "--bypass", "none", "--generators", "stargan",
                 "--profile", "ci", "--data", str(data), "--dataset", "folder", "--output", str(out),
                 "--set", f"generators.stargan.weights={weights}", "--set", "resolution=16",
                 "--set", "splits.defense=[0,8]", "--set", "splits.eval=[8,16]"])


def test_runner_fits_learned_defenses_once_and_reuses_the_fit(tmp_path, tiny_stargan_file):
    assert run_with(tmp_path, tiny_stargan_file, tmp_path / "run1", "cmua,pg") == 0
    meta = json.loads((tmp_path / "run1" / "run.json").read_text())
    fits = {f["defense"]: f for f in meta["defense_fits"]}
    assert set(fits) == {"cmua", "pg"} and not any(f["cache_hit"] for f in fits.values())
    assert fits["cmua"]["scope"] == "generators" and fits["cmua"]["generators"] == ["stargan"]
    assert meta["data"]["defense_fit"]["n"] == 8 and meta["data"]["eval"]["n"] == 4
    rows = [json.loads(r) for r in (tmp_path / "run1" / "cells.jsonl").read_text().splitlines()]
    assert {r["defense"] for r in rows} == {"none", "cmua", "pg"}

    assert run_with(tmp_path, tiny_stargan_file, tmp_path / "run2", "cmua,pg") == 0
    meta2 = json.loads((tmp_path / "run2" / "run.json").read_text())
    assert all(f["cache_hit"] for f in meta2["defense_fits"])
    rows2 = [json.loads(r) for r in (tmp_path / "run2" / "cells.jsonl").read_text().splitlines()]
    assert [r["value"] for r in rows2] == [r["value"] for r in rows]


def test_min_norm_weights_find_the_smallest_combination():
    from defenses.idguard import min_norm_weights

    w = min_norm_weights([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])])
    assert torch.allclose(w, torch.tensor([0.8, 0.2]), atol=1e-4)  # argmin w1^2 + 4 w2^2 on the simplex
    w = min_norm_weights([torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0]), torch.tensor([3.0, 0.0])])
    combined = w[0] * torch.tensor([1.0, 1.0]) + w[1] * torch.tensor([-1.0, -1.0]) + w[2] * torch.tensor([3.0, 0.0])
    assert combined.norm() < 1e-3 and abs(float(w.sum()) - 1) < 1e-5


def test_normalised_mgda_does_not_follow_the_smallest_gradient():
    from defenses.idguard import gradient_normaliser, min_norm_weights

    grads = [torch.tensor([10.0, 0.0]), torch.tensor([0.0, 0.1])]  # a generator the perturbation barely moves
    raw = min_norm_weights(grads)
    assert raw[1] > 0.99  # the min-norm point sits on the tiny gradient
    unit = min_norm_weights([g / gradient_normaliser(g, 1.0, "l2") for g in grads])
    assert torch.allclose(unit, torch.tensor([0.5, 0.5]), atol=1e-4)
    assert gradient_normaliser(grads[0], 0.5, "loss") == 0.5 and gradient_normaliser(grads[0], 0.5, "loss+") == 5.0
    assert gradient_normaliser(grads[0], 0.5, "none") == 1.0


def test_kpi_weighs_the_generator_that_resists_more():
    from defenses.idguard import kpi_weight

    assert kpi_weight(0.001, 1.0) > kpi_weight(0.1, 1.0) > kpi_weight(0.9, 1.0) > 0 == kpi_weight(1.0, 1.0)


def test_face_mask_covers_the_inner_face():
    from defenses.idguard import face_mask

    mask = face_mask((64, 64))
    assert 0.2 < mask.mean() < 0.4 and mask[0, 0, 35, 32] == 1 and mask[0, 0, 2, 2] == 0


@pytest.mark.parametrize("name", ["stargan", "attgan", "hisd"])
def test_quick_generators_name_their_mid_level_features(name):
    from bench.contract.registry import Registry
    from bench.toolkit.features import FeatureTap

    generator = Registry("generators").get(name).from_config("quick").eval()
    tap = FeatureTap(generator)
    x = faces(2, 32)
    labels = torch.zeros(2, len(generator.attribute_names))
    if name == "hisd":
        generator.set_references(faces(3, 32, seed=9))
    generator(x, generator.targets(labels)[0])
    tap.close()
    assert tap.value is not None and tap.value.dim() == 4 and tap.value.size(0) == 2


@pytest.mark.parametrize("weighting, normalisation", [("mgda", "none"), ("mgda", "l2"), ("kpi", "none"),
                                                      ("equal", "none")])
def test_idguard_fits_across_generators_with_each_weighting(tiny_stargan, weighting, normalisation):
    from defenses.idguard import IDGuard

    settings = dict(ngf=4, blocks=1, iterations=3, batch_size=2, weighting=weighting, identity_model="none",
                    mgda_normalisation=normalisation)
    x = faces(4, 16)
    targets = [target_of(tiny_stargan), target_of(other_stargan())]
    state, info = IDGuard(**settings).fit(x, targets, 0, torch.device("cpu"))
    again, _ = IDGuard(**settings).fit(x, targets, 0, torch.device("cpu"))
    assert all(torch.equal(v, again[k]) for k, v in state.items())
    assert state["prior"].abs().max() <= 0.05 and info["feature_term"] == {"stargan": True}
    defense = IDGuard(**settings)
    defense.load_state(state, info)
    out = defense.protect(x, tiny_stargan, targets[0].conditions, 0)
    assert (out - x).abs().max() <= 0.05 + 1e-6 and torch.equal(out[0], out[-1])


def test_idguard_identity_term_uses_the_project_classifier(tiny_stargan):
    from defenses.idguard import IDGuard

    state, info = IDGuard(ngf=4, blocks=1, iterations=2, batch_size=2).fit(
        faces(4, 16), [target_of(tiny_stargan)], 0, torch.device("cpu"))
    assert info["identity_model"] == "attribute_classifier" and info["mask"] == "face"


def test_idguard_rejects_bad_settings(tiny_stargan):
    from defenses.idguard import IDGuard

    with pytest.raises(ConfigError, match="weighting"):
        IDGuard(weighting="pcgrad")
    with pytest.raises(ConfigError, match="mgda_normalisation"):
        IDGuard(mgda_normalisation="max")
    with pytest.raises(ConfigError, match="generator_weights"):
        IDGuard(ngf=4, blocks=1, iterations=1, batch_size=2, generator_weights={"hisd": 100.0}).fit(
            faces(4, 16), [target_of(tiny_stargan)], 0, torch.device("cpu"))
    with pytest.raises(ConfigError, match="not been fitted"):
        IDGuard().protect(faces(), tiny_stargan, torch.zeros(5, 4, 5), 0)


def test_universal_defenses_fit_across_a_fixed_generator_set():
    from bench.contract.errors import ConfigError
    from bench.harness.plan import universal_generators
    from bench.harness.profiles import QUICK

    # a run of one generator fits CMUA across the profile's set, as a run of all does
    assert universal_generators(QUICK, ["attgan"]) == universal_generators(QUICK, ["stargan", "attgan", "hisd"])
    assert universal_generators(QUICK, ["attgan"]) == ["attgan", "hisd", "stargan"]
    assert universal_generators({"universal_fit_generators": "stargan,attgan"}, []) == ["attgan", "stargan"]
    assert universal_generators({"universal_fit_generators": "run"}, ["attgan"]) == ["attgan"]
    with pytest.raises(ConfigError, match="unknown generator"):
        universal_generators({"universal_fit_generators": "stargn"}, ["attgan"])
