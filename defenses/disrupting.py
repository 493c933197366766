"""Disrupting Deepfakes (Ruiz, Bargal & Sclaroff, ECCV-W 2020, arXiv 2003.01279).

L-inf PGD on the input that maximises MSE(G(x + d, c), G(x, c)): 10 iterations of
step 0.01 from a uniform random start in [-eps, eps], eps 0.05 on [-1, 1].

Variants:
- `per_target` (default, as the LoRA-patching evaluation does): one perturbation per
  (image, target), all pairs optimised in one batched pass.
- `joint`: one perturbation per image maximising the sum of the losses over all targets.
- `iterative`: one perturbation per image; PGD step k uses target k mod T (the
  paper's iterative class-transferable disruption).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from bench.contract.plugins import Defense
from bench.toolkit.attacks import (
    PGDSettings,
    chunked,
    device_of,
    for_every_target,
    per_sample_mse,
    per_target_pgd,
    pgd,
    random_start,
)

VARIANTS = ("per_target", "joint", "iterative")


class Disrupting(Defense):
    name = "disrupting"
    version = "1"
    paper = "Ruiz et al., Disrupting Deepfakes, ECCV-W 2020"
    per_image_settings = {"variant": "joint"}

    @dataclass
    class Params(PGDSettings):
        variant: Literal[VARIANTS] = "per_target"

    def protect(self, x, generator, conditions, seed):
        p = self.params
        t, device = conditions.size(0), device_of(generator)
        if p.variant == "per_target":
            return per_target_pgd(x, generator, conditions, seed, p)
        x_init = random_start(x, p.eps, seed) if p.rand_init else x
        per_image = chunked(lambda xb, ib, *cb: self._attack_all_targets(xb, ib, torch.stack(cb, 1), generator),
                            x, x_init, *conditions.unbind(0), batch_size=max(1, p.batch_size // t),
                            device=device)
        return for_every_target(per_image, conditions)

    def _attack_all_targets(self, x, x_init, conditions, generator):
        """conditions: (n, T, ...) for the n images of this chunk."""
        p = self.params
        conds = conditions.transpose(0, 1)  # T x n x ...
        with torch.no_grad():
            ys = [generator(x, c) for c in conds]
        x = x.detach()
        x_adv = x_init.detach().clone()
        for step in range(p.steps):
            targets = range(len(conds)) if p.variant == "joint" else [step % len(conds)]

            def loss_fn(xa, targets=targets):
                return sum(per_sample_mse(generator(xa, conds[k]), ys[k]) for k in targets)

            x_adv = pgd(x, loss_fn, p.eps, p.step_size, 1, x_adv)
        return x_adv
