import pytest
import torch

from bench.contract.errors import ConfigError, WeightsError
from bypasses.lora import LoRAPatching, count_trainable, inject_lora, patch_tensors
from generators.stargan import StarGAN
from tests.conftest import reference_layout


def test_official_stargan_rank8_layout_and_count():
    layout = reference_layout("lora_patched_stargan_r8.json")
    patched = LoRAPatching(rank=8).fresh_patched(StarGAN.from_config("official"), seed=0)
    state = patched.state_dict()
    assert list(state) == list(layout["state_dict"])
    assert all(list(state[k].shape) == v for k, v in layout["state_dict"].items())
    assert count_trainable(patched) == layout["num_trainable_params"] == 352_874
    assert sum(p.numel() for p in patched.parameters()) == layout["num_params"]


def test_injection_wraps_linear_and_freezes_everything_else():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    wrapped = inject_lora(model, rank=2)
    assert wrapped == ["0", "2"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.{k}" for i in (0, 2) for k in ("lora_A", "lora_B", "gate")}


def test_gate_and_b_init_options(tiny_stargan):
    x, c = torch.rand(2, 3, 16, 16) * 2 - 1, torch.zeros(2, 5)
    zero_b = LoRAPatching(b_init="zeros").fresh_patched(tiny_stargan, 0)
    assert torch.allclose(zero_b(x, c), tiny_stargan(x, c), atol=1e-6)  # usual LoRA: identity at start
    official = LoRAPatching().fresh_patched(tiny_stargan, 0)
    assert not torch.allclose(official(x, c), tiny_stargan(x, c), atol=1e-3)  # public code: not
    ungated = LoRAPatching(gated=False).fresh_patched(tiny_stargan, 0)
    assert not any(k.endswith("gate") for k in ungated.state_dict())


OFFLINE_MMFA = {"image_features": "classifier_features", "semantic_features": "classifier_attributes"}


def _fit(tiny_stargan, seed=0, **params):
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    conditions = tiny_stargan.targets(torch.randint(0, 2, (4, 5)).float())
    bypass = LoRAPatching(**{"rank": 2, "batch_size": 2, "pgd_steps": 2, **OFFLINE_MMFA, **params})
    state, info = bypass.fit(tiny_stargan, images, conditions, seed, torch.device("cpu"))
    return bypass, state, info, images, conditions


def test_fit_trains_only_the_patch(tiny_stargan):
    base_before = {k: v.clone() for k, v in tiny_stargan.state_dict().items()}
    bypass, state, info, images, conditions = _fit(tiny_stargan)
    assert all(torch.equal(base_before[k], v) for k, v in tiny_stargan.state_dict().items())
    assert set(k.rsplit(".", 1)[-1] for k in state) == {"lora_A", "lora_B", "gate"}
    assert info["trainable_params"] == sum(v.numel() for v in state.values())
    assert info["steps"] == 2 * 5 and len(info["loss_curve"]) == 10 and info["train_seconds"] > 0
    fresh = LoRAPatching(rank=2).fresh_patched(tiny_stargan, seed=0)
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())  # it learned


def test_fit_is_deterministic_under_a_seed(tiny_stargan):
    _, a, *_ = _fit(tiny_stargan, seed=5)
    _, b, *_ = _fit(tiny_stargan, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_patch_applies_to_a_fresh_generator(tiny_stargan, tiny_stargan_file):
    bypass, state, info, images, conditions = _fit(tiny_stargan)
    patched = bypass.patch(tiny_stargan)
    fresh_generator = StarGAN.load(str(tiny_stargan_file), 64)
    restored = LoRAPatching(rank=2, batch_size=2, pgd_steps=2, **OFFLINE_MMFA)
    restored.load_state(patch_tensors(patched), info)
    again = restored.patch(fresh_generator)
    c = conditions[0]
    assert torch.allclose(patched(images, c), again(images, c), atol=1e-6)
    assert patched.weight_hash() != tiny_stargan.weight_hash()


def test_patch_for_another_rank_is_rejected(tiny_stargan):
    _, state, info, *_ = _fit(tiny_stargan)
    other = LoRAPatching(rank=4)
    other.load_state(state, info)
    with pytest.raises(ConfigError, match="does not fit this generator with rank 4"):
        other.patch(tiny_stargan)


def test_mmfa_feature_terms_change_the_patch_and_are_recorded(tiny_stargan):
    _, mmfa, mmfa_info, *_ = _fit(tiny_stargan)
    _, pixel, pixel_info, *_ = _fit(tiny_stargan, loss="pixel")
    assert mmfa_info["feature_terms"] == [[0.1, "classifier_features"], [0.1, "classifier_attributes"]] or \
        mmfa_info["feature_terms"] == [(0.1, "classifier_features"), (0.1, "classifier_attributes")]
    assert pixel_info["feature_terms"] == []
    assert mmfa_info["loss_curve"][0] > pixel_info["loss_curve"][0]  # the feature terms add to the loss
    assert not all(torch.equal(mmfa[k], pixel[k]) for k in mmfa)  # and their gradients reach the patch


def test_paper_feature_networks_missing_offline_fail_clearly(tiny_stargan, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="ResNet-50 ImageNet weights not found"):
        _fit(tiny_stargan, image_features="resnet50")


def test_defensive_patch_is_trained_toward_the_marked_fake(tiny_stargan):
    bypass, state, info, images, conditions = _fit(tiny_stargan, warning=True, epochs=3, lr=1e-2)
    assert bypass.defensive and not LoRAPatching().defensive
    c = conditions[0]
    with torch.no_grad():
        clean = tiny_stargan(images, c)
        marked = bypass.intended(clean)
        region = bypass.mark_region(16)
        trained, untrained = bypass.patch(tiny_stargan)(images, c), bypass.fresh_patched(tiny_stargan, 0)(images, c)
    assert region.any() and not region.all() and torch.equal(marked[..., ~region], clean[..., ~region])

    def error_in_mark(out):
        return (out - marked)[..., region].abs().mean()

    assert error_in_mark(trained) < 0.7 * error_in_mark(untrained)
    assert info["loss_curve"][-1] < 0.5 * info["loss_curve"][0]


def two_branch(layer, x):
    """The patched layer as the paper writes it: l(x) + gain * B(A x), computed as two branches."""
    gain = layer._gain()
    if hasattr(layer, "orig_linear"):
        return layer.orig_linear(x) + gain * torch.nn.functional.linear(x @ layer.lora_A.T, layer.lora_B)
    c, mix = layer.orig_conv, layer.lora_B[:, :, None, None]
    if isinstance(c, torch.nn.ConvTranspose2d):
        h = torch.nn.functional.conv_transpose2d(x, layer.lora_A, None, c.stride, c.padding, c.output_padding,
                                                 1, c.dilation)
    elif c.padding_mode == "zeros":
        h = torch.nn.functional.conv2d(x, layer.lora_A, None, c.stride, c.padding, c.dilation)
    else:
        padded = torch.nn.functional.pad(x, c._reversed_padding_repeated_twice, mode=c.padding_mode)
        h = torch.nn.functional.conv2d(padded, layer.lora_A, None, c.stride, 0, c.dilation)
    return c(x) + gain * torch.nn.functional.conv2d(h, mix)


@pytest.mark.parametrize("layer, shape", [
    (torch.nn.Conv2d(4, 6, 3, 2, 1), (2, 4, 9, 9)),
    (torch.nn.Conv2d(4, 6, 3, 1, 1, padding_mode="reflect"), (2, 4, 8, 8)),
    (torch.nn.ConvTranspose2d(4, 6, 4, 2, 1), (2, 4, 5, 5)),
    (torch.nn.Linear(5, 3), (2, 5)),
])
def test_a_patched_layer_runs_as_one_layer_with_the_two_branch_outputs_and_gradients(layer, shape):
    torch.manual_seed(0)
    model = torch.nn.Sequential(layer)
    inject_lora(model, rank=2)
    patched = model[0]
    with torch.no_grad():
        patched.gate.fill_(0.3)
    x = torch.randn(shape, requires_grad=True)
    merged, reference = patched(x), two_branch(patched, x)
    assert torch.allclose(merged, reference, atol=1e-5)
    grads = torch.autograd.grad(merged.square().sum(), [x, patched.lora_A, patched.lora_B, patched.gate])
    expected = torch.autograd.grad(reference.square().sum(), [x, patched.lora_A, patched.lora_B, patched.gate])
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_grouped_convolution_is_refused():
    with pytest.raises(ConfigError, match="groups=2"):
        inject_lora(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=2)), rank=2)
