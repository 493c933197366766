"""CMUA-Watermark (Huang et al., AAAI 2022, arXiv 2105.10872): one cross-model universal
adversarial perturbation, added unchanged to every image.

Fit, as the public code (VDIGPKU/CMUA-Watermark, universal_attack.py) does it: one pass
over the fitting images (128 there) in batches of 64; for each batch, each generator in
turn and each of its targets, 10 PGD steps of size 0.01 on the batch, whose per-image
updates are clamped to eps, averaged over the batch and folded into the universal
perturbation with momentum 0.5 (up = 0.5 * up + 0.5 * eta). An attack starts from a
uniform random point in the eps-ball while there is no perturbation yet, else from the
perturbation itself (the public code restarts from random noise for StarGAN and AttGAN
at every call; `restart="random"` does that). The loss is the Disrupting one,
MSE(G(x + up, c), G(x, c)).

`across_generators=True` (default) fits one perturbation for all generators of the run;
False fits one per generator. Protecting costs one addition per image.

Its steps run in float32 whatever `attack_precision` says: the batch mean of the
per-image sign steps counts every flipped sign alike, however small the gradient
component behind it, and under bf16 the quick profile's perturbation disrupted StarGAN
on held-out CelebA-HQ faces at DSR 0.81 instead of 0.96.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tqdm import tqdm

from bench.contract.params import Budget, Count, Fraction, Positive
from bench.contract.plugins import DEFAULT_EPS, Defense
from bench.toolkit.attacks import (
    check_fitted_size,
    for_every_target,
    per_sample_mse,
    project,
    random_start,
)


class CMUA(Defense):
    name = "cmua"
    version = "2"  # 2: float32 steps under any attack_precision
    paper = "Huang et al., CMUA-Watermark, AAAI 2022"
    smoke_params = {"steps": 2, "batch_size": 4}
    fit_length = "images"
    per_image_settings = {}  # one perturbation per image (or for all images)

    @dataclass
    class Params:
        eps: Budget = DEFAULT_EPS
        step_size: Positive = 0.01
        steps: Count = 10
        momentum: Fraction = 0.5
        batch_size: Count = 64
        images: Count = 128  # fitting images used (the paper's 128)
        epochs: Count = 1
        across_generators: bool = True
        # "random": a fresh random start per batch (the public code, for StarGAN and AttGAN)
        restart: Literal["perturbation", "random"] = "perturbation"

    def __init__(self, **params):
        super().__init__(**params)
        self.perturbation: torch.Tensor | None = None

    def fit_scope(self):
        return "generators" if self.params.across_generators else "generator"

    def fit(self, images, targets, seed, device):
        p = self.params
        images = images[:p.images]
        up = None
        rng = torch.Generator().manual_seed(seed)
        losses = []
        batches = range(0, images.size(0), p.batch_size)
        total = p.epochs * len(batches) * sum(t.conditions.size(0) for t in targets)
        bar = tqdm(total=total, desc="cmua: fit the universal perturbation", unit="update", leave=False)
        for _ in range(p.epochs):
            for start in batches:
                x = images[start:start + p.batch_size].to(device)
                for target in targets:
                    for c in target.conditions[:, start:start + p.batch_size]:
                        up, loss = self._attack_batch(x, c.to(device), target.generator, up, rng)
                        losses.append(loss)
                        bar.update()
        bar.close()
        self.perturbation = up.cpu()
        return {"perturbation": self.perturbation}, {"final_loss": losses[-1], "first_loss": losses[0],
                                                     "updates": len(losses), "images": images.size(0)}

    def _attack_batch(self, x, c, generator, up, rng):
        """p.steps PGD steps on one batch and target, each folded into `up` (1, 3, H, W)."""
        p = self.params
        with torch.no_grad():
            y = generator(x, c)
        if up is None or p.restart == "random":
            x_adv = random_start(x, p.eps, int(torch.randint(2**31, (1,), generator=rng)))
        else:
            x_adv = project(x + up, x, p.eps)
        for _ in range(p.steps):
            x_adv.requires_grad_(True)
            loss = per_sample_mse(generator(x_adv, c), y).mean()
            (grad,) = torch.autograd.grad(loss, x_adv)
            stepped = x_adv.detach() + p.step_size * grad.sign()
            eta = (stepped - x).clamp(-p.eps, p.eps).mean(0, keepdim=True)
            up = eta if up is None else p.momentum * up + (1 - p.momentum) * eta
            x_adv = project(x + up, x, p.eps)
        return up, float(loss.detach())

    def load_state(self, state, info):
        self.perturbation = state["perturbation"]

    def protect(self, x, generator, conditions, seed):
        check_fitted_size("cmua", self.perturbation, x)
        return for_every_target(project(x + self.perturbation.to(x.dtype), x, self.params.eps), conditions)
