import pytest
import torch
import torch.nn.functional as F

from bench.contract.errors import ConfigError
from bench.toolkit.finetune import adversarial_example
from bypasses.ri import RI, ReconstructionNet, randomise

TINY = dict(blocks=1, channels=4, batch_size=4, pgd_steps=2)


def images(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _fit(generator, seed=0, **params):
    """4 images in one batch, 2 of the 5 edit targets: 2 steps per epoch."""
    x = images()
    labels = torch.randint(0, 2, (4, 5), generator=torch.Generator().manual_seed(1)).float()
    conditions = generator.targets(labels)[:2]
    bypass = RI(**{**TINY, **params})
    state, info = bypass.fit(generator, x, conditions, seed, torch.device("cpu"))
    return bypass, state, info


def test_reconstruction_starts_as_the_identity_and_stays_in_range():
    net = ReconstructionNet(channels=4, blocks=2).eval()
    x = images()
    assert torch.equal(net(x), x)
    torch.nn.init.normal_(net.tail.weight, std=1.0)  # a large residual must still be clamped
    out = net(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1 and not torch.equal(out, x)


def test_published_sizes():
    net = ReconstructionNet()
    assert len(net.body) == 16 + 2 and net.head[0].out_channels == 64 and net.head[0].kernel_size == (9, 9)


def test_randomisation_keeps_the_size_and_is_deterministic_under_its_seed():
    x = images(3, 32)
    out = randomise(x, 0.107, seed=0)
    assert out.shape == x.shape
    assert torch.equal(out, randomise(x, 0.107, seed=0))
    assert not torch.equal(out, randomise(x, 0.107, seed=1))
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.equal(randomise(x, 0.0, seed=0), x)  # no room to pad: off


def test_stacked_copies_share_each_images_draw():
    x = images(3, 32)
    both = randomise(torch.cat([x, x]), 0.107, seed=0, copies=2)
    assert torch.equal(both[:3], both[3:]) and torch.equal(both[:3], randomise(x, 0.107, seed=0))


def test_gradients_flow_through_purify(tiny_stargan):
    bypass, *_ = _fit(tiny_stargan)
    x = images().requires_grad_(True)
    bypass.purify(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in bypass.net.parameters())


def test_fit_leaves_the_generator_untouched(tiny_stargan):
    before = {k: v.clone() for k, v in tiny_stargan.state_dict().items()}
    flags = [p.requires_grad for p in tiny_stargan.parameters()]
    _, state, info = _fit(tiny_stargan)
    assert all(torch.equal(before[k], v) for k, v in tiny_stargan.state_dict().items())
    assert [p.requires_grad for p in tiny_stargan.parameters()] == flags
    assert all(p.grad is None for p in tiny_stargan.parameters())
    assert info["steps"] == 2 == len(info["loss_curve"]) and info["train_seconds"] > 0
    assert info["trainable_params"] == sum(v.numel() for k, v in state.items() if "running" not in k
                                           and "num_batches" not in k)


def test_fit_reduces_the_loss(tiny_stargan):
    """On smooth images under strong PGD noise, R learns to remove part of it."""
    x = F.interpolate(images(4, 4), size=16, mode="bilinear", align_corners=False)
    conditions = tiny_stargan.targets(torch.zeros(4, 5))[:2]
    bypass = RI(**{**TINY, "eps": 0.3, "pgd_step_size": 0.15, "lr": 3e-3, "epochs": 8, "pad_fraction": 0.0,
                   "feature_loss": "none"})
    _, info = bypass.fit(tiny_stargan, x, conditions, 0, torch.device("cpu"))
    curve = info["loss_curve"]
    assert sum(curve[-2:]) < 0.8 * sum(curve[:2])  # last epoch against the first
    x_adv = adversarial_example(tiny_stargan, x, conditions[0], tiny_stargan(x, conditions[0]), bypass.params, 99)
    with torch.no_grad():
        assert F.mse_loss(bypass.purify(x_adv), x) < 0.98 * F.mse_loss(x_adv, x)


def test_load_state_restores_an_identical_purifier(tiny_stargan):
    fitted, state, info = _fit(tiny_stargan)
    restored = RI(**TINY)
    restored.load_state(state, info)
    x = images(seed=3)
    assert torch.equal(fitted.purify(x), restored.purify(x))
    assert not torch.equal(restored.purify(x), randomise(x, restored.params.pad_fraction, 0))  # it learned


def test_fit_is_deterministic_under_a_seed(tiny_stargan):
    _, a, _ = _fit(tiny_stargan, seed=5)
    _, b, _ = _fit(tiny_stargan, seed=5)
    _, c, _ = _fit(tiny_stargan, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_feature_loss_options_train_differently(tiny_stargan):
    states = [_fit(tiny_stargan, feature_loss=loss, feature_weight=10.0)[1]
              for loss in ("generator_features", "generator_output", "none")]
    key = "tail.weight"
    assert not torch.equal(states[0][key], states[1][key]) and not torch.equal(states[1][key], states[2][key])


def test_user_errors_are_config_errors(tiny_stargan):
    with pytest.raises(ConfigError, match="feature_loss"):
        RI(feature_loss="vgg")
    with pytest.raises(ConfigError, match="not been fitted"):
        RI().purify(images())
    _, state, info = _fit(tiny_stargan)
    with pytest.raises(ConfigError, match="does not fit a net of 2 blocks"):
        RI(**{**TINY, "blocks": 2}).load_state(state, info)
    tiny_stargan.feature_module = lambda: None
    with pytest.raises(ConfigError, match="names no feature layer"):
        _fit(tiny_stargan)
