import math

import pytest
import torch

import generators.hisd as hisd
from bench.contract.errors import ConfigError
from bypasses.gat import GAT
from generators.attgan import AttGAN
from generators.hisd import HiSD
from generators.hisd.recipe import nearest_reference
from generators.stargan import StarGAN

FAST = dict(epochs=1, batch_size=2, pgd_steps=2, d_warmup=2)


def tiny_attgan() -> AttGAN:
    torch.manual_seed(0)
    return AttGAN(dim=4, layers=3).eval()


def tiny_hisd() -> HiSD:
    torch.manual_seed(0)
    G = HiSD(style_dim=8, noise_dim=4, encoder=[4, 8], decoder=[8, 4], translators=[4, 4], extractors=[4, 8],
             mappers_pre=[8], mappers_post=[8], tags=[hisd.HAIR_COLOUR]).eval()
    G.set_references(torch.rand(3, 3, 16, 16) * 2 - 1)
    return G


def data(generator, n=2, size=16):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    labels = torch.randint(0, 2, (n, len(generator.attribute_names)), generator=gen).float()
    return x, generator.targets(labels), labels


def fit(generator, seed=0, **params):
    x, conditions, _ = data(generator)
    bypass = GAT(**{**FAST, **params})
    state, info = bypass.fit(generator, x, conditions, seed, torch.device("cpu"))
    return bypass, state, info, x, conditions


def test_fit_follows_the_generator_recipe_with_a_warmed_up_critic(tiny_stargan):
    _, _, info, *_ = fit(tiny_stargan, recipe_settings={"n_critic": 1})
    assert info["steps"] == 5 and info["generator_updates"] == len(info["loss_curve"]) == 5
    assert len(info["critic_curve"]) == 2 + 5 and info["critic_params"] > 0
    assert info["lr"] == 1e-4 and info["betas"] == [0.5, 0.999]  # StarGAN's recipe
    _, _, tuned, *_ = fit(tiny_stargan, lr=1e-3)
    assert tuned["lr"] == 1e-3


@pytest.mark.parametrize("make,settings", [
    (lambda: StarGAN(conv_dim=4, repeat_num=1).eval(), {"n_critic": 1}),
    (tiny_attgan, {"n_d": 1}),  # critic, generator, critic, ...
    (tiny_hisd, {}),  # generator and critic every iteration
], ids=["stargan", "attgan", "hisd"])
def test_the_recipe_of_every_generator_fine_tunes_it(make, settings):
    generator = make()
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    _, state, info, *_ = fit(generator, recipe_settings=settings)
    assert info["generator_updates"] >= 1 and all(math.isfinite(v) for v in info["critic_curve"])
    assert any(not torch.equal(state[k], before[k]) for k in before)


def test_unedited_conditions_are_recovered_from_the_targets():
    labels = torch.randint(0, 2, (16, 13)).float()
    attgan = tiny_attgan()
    assert torch.equal(attgan.recipe(16).unedited(attgan.targets(labels)), attgan.unedited_conditions(labels))
    stargan = StarGAN(conv_dim=4, repeat_num=1)
    assert torch.equal(stargan.recipe(16).unedited(stargan.targets(labels[:, :5])),
                       stargan.unedited_conditions(labels[:, :5]))


def test_hisd_images_take_the_attribute_of_the_nearest_reference():
    G = tiny_hisd()
    assert nearest_reference(G, G.references).tolist() == [0, 1, 2]


def test_unknown_settings_are_one_clear_error(tiny_stargan):
    with pytest.raises(ConfigError, match="'pgd_reference' must be 'current' or 'black'"):
        GAT(pgd_reference="original")
    with pytest.raises(ConfigError, match="'lr' must be a valid number"):
        GAT(lr="fast")
    with pytest.raises(ConfigError, match="did you mean 'n_critic'"):
        fit(tiny_stargan, recipe_settings={"n_critics": 1})
