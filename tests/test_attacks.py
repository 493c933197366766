import torch

from bench.toolkit.attacks import flatten_targets, per_sample_mse, pgd, random_start
from defenses.disrupting import Disrupting


def test_pgd_stays_in_eps_ball_and_image_range():
    torch.manual_seed(0)
    x = (torch.rand(4, 3, 8, 8) * 2 - 1).clamp(-0.99, 0.99)
    x[0] = 1.0  # saturated image: the [-1, 1] projection must bind
    target = torch.randn(4, 3, 8, 8)
    x_adv = pgd(x, lambda xa: per_sample_mse(xa * 3, target), eps=0.05, step_size=0.02, steps=5,
                x_init=random_start(x, 0.05, seed=1))
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    assert x_adv.min() >= -1 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.04  # it did move


def test_random_start_is_seeded():
    x = torch.zeros(2, 3, 4, 4)
    assert torch.equal(random_start(x, 0.05, 7), random_start(x, 0.05, 7))
    assert not torch.equal(random_start(x, 0.05, 7), random_start(x, 0.05, 8))


def test_flatten_targets_is_target_major():
    x = torch.arange(2.0).view(2, 1, 1, 1)
    cond = torch.tensor([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]])
    xs, cs = flatten_targets(x, cond)
    assert xs.view(-1).tolist() == [0, 1, 0, 1, 0, 1]
    assert cs.tolist() == [10, 11, 20, 21, 30, 31]


def _disrupting_setup(tiny_stargan):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    labels = torch.randint(0, 2, (3, 5)).float()
    return x, tiny_stargan.targets(labels)


def test_disrupting_is_bounded_seeded_and_disrupts(tiny_stargan):
    x, cond = _disrupting_setup(tiny_stargan)
    defense = Disrupting(steps=5, batch_size=4)
    x_adv = defense.protect(x, tiny_stargan, cond, seed=3)
    assert x_adv.shape == (5, 3, 3, 16, 16)
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6 and x_adv.abs().max() <= 1
    assert torch.equal(x_adv, defense.protect(x, tiny_stargan, cond, seed=3))
    with torch.no_grad():
        xs, cs = flatten_targets(x, cond)
        clean = tiny_stargan(xs, cs)
        noise = random_start(xs, 0.05, 99)
        disrupted = per_sample_mse(tiny_stargan(x_adv.reshape(xs.shape), cs), clean).mean()
        random_noise = per_sample_mse(tiny_stargan(noise, cs), clean).mean()
    assert disrupted > 2 * random_noise


def test_disrupting_result_does_not_depend_on_batch_size(tiny_stargan):
    x, cond = _disrupting_setup(tiny_stargan)
    a = Disrupting(steps=3, batch_size=2).protect(x, tiny_stargan, cond, seed=0)
    b = Disrupting(steps=3, batch_size=15).protect(x, tiny_stargan, cond, seed=0)
    assert torch.allclose(a, b, atol=1e-6)


def test_disrupting_joint_and_iterative_variants(tiny_stargan):
    x, cond = _disrupting_setup(tiny_stargan)
    xs, cs = flatten_targets(x, cond)
    with torch.no_grad():
        clean = tiny_stargan(xs, cs)
        noise_damage = per_sample_mse(tiny_stargan(random_start(xs, 0.05, 99), cs), clean).mean()
    results = {}
    for variant in ("joint", "iterative"):
        x_adv = Disrupting(steps=5, variant=variant).protect(x, tiny_stargan, cond, seed=0)
        assert x_adv.shape == (5, 3, 3, 16, 16)
        assert (x_adv[0] - x).abs().max() <= 0.05 + 1e-6
        with torch.no_grad():
            damage = per_sample_mse(tiny_stargan(x_adv.reshape(xs.shape), cs), clean).mean()
        assert damage > 2 * noise_damage  # one perturbation per image still disrupts every target
        results[variant] = x_adv[0]
    assert not torch.equal(results["joint"], results["iterative"])


def test_bf16_attack_precision_runs_the_steps_under_autocast_and_keeps_the_signs(tiny_stargan):
    from bench.toolkit.attacks import PGDSettings, attack_precision, per_target_pgd

    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    conditions = torch.randint(0, 2, (2, 4, 5)).float()
    seen = []

    def distortion(x_adv, c, y):
        out = tiny_stargan(x_adv, c)
        seen.append(out.dtype)
        return (out.float() - y).pow(2).flatten(1).mean(1)

    settings = PGDSettings(steps=3)
    fp32 = per_target_pgd(x, tiny_stargan, conditions, 0, settings, distortion)
    assert set(seen) == {torch.float32}
    seen.clear()
    with attack_precision("bf16"):
        bf16 = per_target_pgd(x, tiny_stargan, conditions, 0, settings, distortion)
    assert set(seen) == {torch.bfloat16}
    assert bf16.dtype == torch.float32 and (bf16 - x).abs().max() <= settings.eps + 1e-6
    assert (bf16.sign() == fp32.sign()).float().mean() > 0.99  # the same steps, nearly everywhere
    seen.clear()
    per_target_pgd(x, tiny_stargan, conditions, 0, settings, distortion)  # the context is gone
    assert set(seen) == {torch.float32}


def test_a_loss_given_as_terms_takes_the_steps_of_their_sum_one_graph_at_a_time(tiny_stargan):
    """RAW's expectation over transformations: terms back-propagated one by one give the
    very steps of the summed loss (same draws, same order), and run under the attack's
    precision like any loss."""
    from bench.toolkit.attacks import PGDSettings, attack_precision, joint_pgd, per_target_pgd

    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    conditions = torch.randint(0, 2, (2, 4, 5)).float()
    settings, draws, seen = PGDSettings(steps=3), 3, []

    def noisy_mse(x_adv, c, y, rng):
        out = tiny_stargan(x_adv + 0.05 * torch.randn(x_adv.shape, generator=rng), c)
        seen.append(out.dtype)
        return per_sample_mse(out, y) / draws

    def make(as_terms):
        rng = torch.Generator().manual_seed(1)
        if as_terms:
            return lambda xa, c, y: (noisy_mse(xa, c, y, rng) for _ in range(draws))
        return lambda xa, c, y: sum(noisy_mse(xa, c, y, rng) for _ in range(draws))

    for attack in (per_target_pgd, joint_pgd):
        summed = attack(x, tiny_stargan, conditions, 0, settings, make(as_terms=False))
        termwise = attack(x, tiny_stargan, conditions, 0, settings, make(as_terms=True))
        assert torch.equal(summed, termwise), attack.__name__
        assert (termwise - x.unsqueeze(0)).abs().max() > settings.step_size  # it moved
    seen.clear()
    with attack_precision("bf16"):
        per_target_pgd(x, tiny_stargan, conditions, 0, settings, make(as_terms=True))
    assert set(seen) == {torch.bfloat16}


def test_differentiable_jpeg_stays_float32_inside_a_bf16_attack():
    from bench.toolkit.attacks import attack_precision, sign_step_passes
    from bench.toolkit.codecs import differentiable_jpeg

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    quality = torch.tensor([75.0, 90.0])
    with attack_precision("bf16"), sign_step_passes(x.device):
        inside = differentiable_jpeg(x, quality)
    assert torch.allclose(inside, differentiable_jpeg(x, quality), atol=1e-6)
