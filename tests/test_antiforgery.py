"""Anti-Forgery beyond the plugin contract: its Lab colour space, that only a and b change,
the target each Adam step attacks, and what its public settings do to a real generator."""

from __future__ import annotations

import pytest
import torch

from bench.harness.inputs import load_generator
from bench.harness.profiles import QUICK
from bench.toolkit.data import load_demo
from defenses.antiforgery import AntiForgery, from_lab, to_lab, with_ab_change


def colours(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lab_is_the_cie_lab_of_srgb_normalised_as_the_public_code():
    # CIE Lab (D65) of sRGB red, green and white: standard values
    pixels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]).T.reshape(1, 3, 1, 3) * 2 - 1
    lab = to_lab(pixels)[0, :, 0].T
    expected = torch.tensor([[53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [100.0, 0.0, 0.0]])
    normalised = torch.cat([(expected[:, :1] - 50) / 100, expected[:, 1:] / 110], dim=1)
    assert torch.allclose(lab, normalised, atol=2e-3)


def test_lab_round_trip_gives_the_image_back():
    x = colours()
    assert (from_lab(to_lab(x)) - x).abs().max() < 1e-4


def test_only_a_and_b_change():
    x = colours() * 0.5  # away from the gamut's edges, where no clamp binds
    change = torch.full((4, 2, 16, 16), 0.01)
    lab, moved = to_lab(x), to_lab(with_ab_change(to_lab(x), change, ab_eps=0.05))
    assert (moved[:, 0] - lab[:, 0]).abs().max() < 1e-3
    assert torch.allclose(moved[:, 1:] - lab[:, 1:], torch.tensor(0.01), atol=1e-3)
    clamped = to_lab(with_ab_change(lab, change * 100, ab_eps=0.05))  # a change of 1.0 is clamped to 0.05
    assert torch.allclose(clamped[:, 1:] - lab[:, 1:], torch.tensor(0.05), atol=5e-3)


class Recording(torch.nn.Module):
    """A generator that records the condition of each call: x * (1 + c.mean())."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1), requires_grad=False)
        self.seen = []

    def forward(self, x, c):
        self.seen.append(float(c.flatten()[0]))
        return x * self.scale * (1 + c.mean())


def test_step_i_attacks_target_i_mod_t():
    generator = Recording()
    conditions = torch.arange(3, dtype=torch.float32).view(3, 1, 1).expand(3, 2, 1).contiguous()
    protected = AntiForgery(steps=7).protect(colours(2), generator, conditions, seed=0)
    assert protected.shape == (3, 2, 3, 16, 16) and torch.equal(protected[0], protected[2])
    # three clean fakes first, then one call per step (target step % 3), then none
    assert generator.seen == [0.0, 1.0, 2.0] + [float(i % 3) for i in range(7)]


@pytest.fixture(scope="module")
def stargan_and_faces():
    generator = load_generator(QUICK, "stargan")
    faces = load_demo(None, 64).subset(256, 260).load()
    labels = load_demo(None, 64).subset(256, 260).labels(generator.attribute_names)
    return generator, faces, generator.targets(labels)


def test_public_settings_push_the_fakes_away_within_the_rgb_budget(stargan_and_faces):
    generator, x, conditions = stargan_and_faces
    defense = AntiForgery()
    perturbed = defense.perturbed(x, conditions, generator)
    rgb = (perturbed - x).abs()
    assert 0 < (rgb > 0.05).float().mean() < 0.005  # the RGB bound binds at a few values only
    assert (to_lab(perturbed)[:, 1:] - to_lab(x)[:, 1:]).abs().max() < 0.05  # well inside ab_eps: Adam's small steps
    assert (to_lab(perturbed)[:, 0] - to_lab(x)[:, 0]).abs().max() < 0.01  # lightness kept
    protected = defense.protect(x, generator, conditions, seed=0)
    assert torch.equal(protected[0], defense.within_budget(x, perturbed))
    with torch.no_grad():
        before = torch.stack([generator(x, c) for c in conditions])
        after = torch.stack([generator(protected[t], c) for t, c in enumerate(conditions)])
    assert ((after - before) ** 2).mean() > 1e-3  # the fakes moved
