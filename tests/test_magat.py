import pytest
import torch

from bench.contract.errors import ConfigError
from bypasses.magat import MaGAT, edit_mask, masked_mse

FAST = dict(epochs=1, batch_size=2, pgd_steps=2)


def fit(generator, seed=0, **params):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
    conditions = generator.targets(torch.randint(0, 2, (2, 5), generator=gen).float())
    bypass = MaGAT(**{**FAST, **params})
    state, info = bypass.fit(generator, x, conditions, seed, torch.device("cpu"))
    return bypass, state, info, x, conditions


def test_the_mask_is_the_edited_region():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[..., :2, :2] = 0.5  # channel sum 1.5 > 0.5
    y[..., 3, 3] = 0.1  # 0.3: below the threshold
    hard = edit_mask(y, x)
    assert hard.shape == (1, 1, 4, 4) and hard.sum() == 4 and hard[..., :2, :2].all()
    soft = edit_mask(y, x, "soft")
    assert soft[..., 0, 0] == 1 and torch.isclose(soft[..., 3, 3], torch.tensor(0.2)).all()
    out = y + 0.1
    assert torch.isclose(masked_mse(out, y, hard), torch.tensor(0.01))  # mean over the 4 pixels x 3 channels
    assert masked_mse(out, y, torch.zeros_like(hard)) == 0


def test_fit_counts_one_step_per_batch_and_the_mask_term_counts(tiny_stargan):
    _, a, info, *_ = fit(tiny_stargan, seed=3)
    assert info["steps"] == len(info["loss_curve"]) == 5
    _, unmasked, *_ = fit(tiny_stargan, seed=3, mask_weight=0.0)
    assert not all(torch.equal(a[k], unmasked[k]) for k in a)


def test_unknown_mask_is_one_clear_error():
    with pytest.raises(ConfigError, match="'mask' must be 'hard' or 'soft'"):
        MaGAT(mask="circle")
