"""What GAT and MaGAT share (bypasses/whole_generator.py): the fitted state is the whole
generator, it leaves the original untouched, and patches a fresh copy of the same
architecture only."""

import pytest
import torch

from bench.contract.errors import ConfigError
from bypasses.gat import GAT
from bypasses.magat import MaGAT
from generators.stargan import StarGAN

SETTINGS = {GAT: dict(epochs=1, batch_size=2, pgd_steps=2, d_warmup=2), MaGAT: dict(epochs=1, batch_size=2, pgd_steps=2)}
METHODS = pytest.mark.parametrize("method", list(SETTINGS), ids=lambda m: m.name)


def fit(method, generator, seed=0):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    conditions = generator.targets(torch.randint(0, 2, (2, 5), generator=gen).float())
    bypass = method(**SETTINGS[method])
    state, info = bypass.fit(generator, x, conditions, seed, torch.device("cpu"))
    return bypass, state, info, x, conditions


@METHODS
def test_fit_trains_every_generator_parameter_and_leaves_the_original(method, tiny_stargan):
    before = {k: v.clone() for k, v in tiny_stargan.state_dict().items()}
    _, state, info, *_ = fit(method, tiny_stargan)
    assert all(torch.equal(before[k], v) for k, v in tiny_stargan.state_dict().items())
    assert state.keys() == before.keys()
    assert all(not torch.equal(state[k], before[k]) for k, _ in tiny_stargan.named_parameters())
    assert info["trainable_params"] == sum(q.numel() for q in tiny_stargan.parameters())
    assert info["train_seconds"] > 0


@METHODS
def test_fit_is_deterministic_under_a_seed(method, tiny_stargan):
    _, a, *_ = fit(method, tiny_stargan, seed=3)
    _, b, *_ = fit(method, tiny_stargan, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


@METHODS
def test_patch_applies_the_fitted_weights_to_a_fresh_generator(method, tiny_stargan, tiny_stargan_file):
    bypass, state, info, x, conditions = fit(method, tiny_stargan)
    patched = bypass.patch(tiny_stargan)
    restored = method(**SETTINGS[method])
    restored.load_state(state, info)
    again = restored.patch(StarGAN.load(str(tiny_stargan_file), 16))
    assert torch.equal(patched(x, conditions[0]), again(x, conditions[0]))
    assert not torch.allclose(patched(x, conditions[0]), tiny_stargan(x, conditions[0]))


@METHODS
def test_weights_of_another_generator_are_rejected(method, tiny_stargan):
    bypass, *_ = fit(method, tiny_stargan)
    with pytest.raises(ConfigError, match="do not fit this stargan generator: .* mismatching tensors"):
        bypass.patch(StarGAN(conv_dim=4, repeat_num=1))
    with pytest.raises(ConfigError, match="has not been fitted"):
        method().patch(tiny_stargan)
