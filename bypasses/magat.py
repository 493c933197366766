"""MaGAT: mask-guided adversarial training of the whole generator (Luo & Huang, IEEE SPL
2024, DOI 10.1109/LSP.2024.3380466). No public code; what is public (the abstract):
MaGAT trains a face-editing GAN "to still output original desirable images even if the
input images are adversarial examples", guided by a mask, and the effect holds on
images unseen during training. The LoRA-patching paper (Table III) fine-tunes all
8.431 M StarGAN parameters with it, in 5.370 h against LoRA's 0.251 h.

This re-implementation (every choice below is ours):
- objective: with y = G_orig(x, c) the desired output and M the edited region,
      MSE(G(x), y) + MSE(G(x_adv), y) + mask_weight * masked MSE(G(x_adv), y; M),
  the masked MSE normalised by 3 * sum(M), as CMUA's masked L2 (mask_weight 1);
- the mask M: where the desired edit changes the image, d = sum over channels of
  |y - x|: `mask=hard` (default) is d > mask_threshold (0.5 on [-1, 1], CMUA's masked
  metric); `mask=soft` is d / max(d) per image;
- x_adv: the shared PGD (bench.toolkit.finetune.adversarial_example: eps 0.05, 10 steps of 0.01,
  random start seeded by `step_seed`) against the CURRENT generator, maximising the
  distance to y, as LoRA patching does;
- the schedule of LoRA patching (FinetuneLoop: seeded shuffle, batches, one Adam step
  per batch and edit target); every generator parameter trainable, no discriminator
  (no public recipe with one); Adam lr 1e-4 (the generators' own recipes use 1e-4 to
  2e-4; LoRA's 1e-3 is for its small patch), betas 0.5/0.999;
- epochs 20: Table III's training time is about 21 times LoRA patching's one epoch,
  and a step costs about the same in both (measured on the quick StarGAN at 64 px: 0.75
  times a rank-8 LoRA step), hence about 20 passes (an inference: the letter's schedule
  is not public).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.contract.params import Count, Fraction, NonNegative, Positive
from bench.toolkit.finetune import (
    AdversarialFinetuneSettings,
    FinetuneLoop,
    adversarial_example,
    count_trainable,
    step_seed,
)
from bypasses.whole_generator import WholeGeneratorPatch

MASKS = ("hard", "soft")


def edit_mask(y: torch.Tensor, x: torch.Tensor, kind: str = "hard", threshold: float = 0.5) -> torch.Tensor:
    """(N, 1, H, W) weights of the edited region: where sum_c |y - x| exceeds `threshold`
    (hard), or that change relative to each image's largest (soft)."""
    change = (y - x).abs().sum(1, keepdim=True)
    if kind == "hard":
        return (change > threshold).to(y.dtype)
    return change / change.amax((2, 3), keepdim=True).clamp_min(1e-8)


def masked_mse(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Squared error weighted by `weights` (N, 1, H, W), over 3 * their sum (0 if empty)."""
    return ((a - b).pow(2) * weights).sum() / (3 * weights.sum()).clamp_min(1e-8)


class MaGAT(WholeGeneratorPatch):
    name = "magat"
    version = "1"
    paper = "Luo & Huang, MaGAT, IEEE SPL 2024 (DOI 10.1109/LSP.2024.3380466)"
    smoke_params = {"epochs": 1, "batch_size": 2, "pgd_steps": 2}

    @dataclass
    class Params(AdversarialFinetuneSettings):
        epochs: Count = 20
        lr: Positive = 1e-4
        mask: Literal[MASKS] = "hard"
        mask_threshold: Fraction = 0.5
        mask_weight: NonNegative = 1.0

    def fit(self, generator, images, conditions, seed, device):
        p = self.params
        original = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
        model = self.trainable_copy(generator, device)
        opt = torch.optim.Adam(model.parameters(), p.lr, (p.beta1, p.beta2))
        loop = FinetuneLoop(images, conditions, p.batch_size, p.epochs, seed, device, "magat")
        for step, x, c in loop:
            loop.record(self._train_step(original, model, opt, x, c, step_seed(seed, step)))
        return self.keep(model), loop.info(count_trainable(model))

    def _train_step(self, original, model, opt, x, c, seed) -> float:
        p = self.params
        with torch.no_grad():
            y = original(x, c)
            mask = edit_mask(y, x, p.mask, p.mask_threshold)
        x_adv = adversarial_example(model, x, c, y, p, seed)
        out_adv = model(x_adv, c)
        loss = F.mse_loss(model(x, c), y) + F.mse_loss(out_adv, y) + p.mask_weight * masked_mse(out_adv, y, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
