"""What every trained bypass shares: the fine-tuning data order, the PGD that makes its
adversarial examples, and the bookkeeping (progress bar, loss curve, time, parameters).

LoRA patching, GAT, MaGAT and RI all follow the paper's schedule: a seeded shuffle of
the fine-tuning images, batches of `batch_size`, and one optimiser step per batch and
edit target, for `epochs` passes. Their adversarial examples come from the same L-inf
PGD (eps 0.05, 10 steps of 0.01, random start) against the model being trained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from bench.contract.params import AdamBeta, Budget, Count, Positive
from bench.contract.plugins import DEFAULT_EPS
from bench.toolkit.attacks import per_sample_mse, pgd, random_start


@dataclass
class AdversarialFinetuneSettings:
    """The schedule and inner PGD of the paper's fine-tuning (a bypass's `Params`
    extends it with its own settings)."""
    epochs: Count = 1
    # the fine-tuning budget: the first `faces` of the run's fine-tuning images (None: all;
    # at most the run's, and the fit records how many it used)
    faces: Count | None = None
    batch_size: Count = 4
    lr: Positive = 1e-3
    beta1: AdamBeta = 0.5
    beta2: AdamBeta = 0.999
    eps: Budget = DEFAULT_EPS  # the defenses' budget: the attacker trains against what they may do
    pgd_steps: Count = 10
    pgd_step_size: Positive = 0.01


def adversarial_example(model: nn.Module, x: torch.Tensor, c: torch.Tensor, reference: torch.Tensor,
                        settings: AdversarialFinetuneSettings, seed: int) -> torch.Tensor:
    """PGD from a seeded random start maximising MSE(model(x_adv, c), reference)."""
    s = settings
    return pgd(x, lambda xa: per_sample_mse(model(xa, c), reference), s.eps, s.pgd_step_size, s.pgd_steps,
               random_start(x, s.eps, seed))


def step_seed(seed: int, step: int) -> int:
    """A distinct, reproducible seed for the PGD start of each training step."""
    return seed * 1_000_003 + step


class FinetuneLoop:
    """Iterates (step, x, c) over a seeded shuffle of `images`, in batches, and every
    target of `conditions` (T, N, ...) per batch, for `epochs` passes; x and c arrive on
    `device`. `record(loss)` logs each step's loss (shown on the progress bar)."""

    def __init__(self, images: torch.Tensor, conditions: torch.Tensor, batch_size: int, epochs: int,
                 seed: int, device: torch.device, desc: str):
        self.images, self.conditions = images, conditions
        self.batch_size, self.epochs = batch_size, epochs
        self.seed, self.device, self.desc = seed, device, desc
        self.losses: list[float] = []
        self.started = time.time()

    @property
    def total_steps(self) -> int:
        return self.epochs * math.ceil(self.images.size(0) / self.batch_size) * self.conditions.size(0)

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        order_rng = torch.Generator().manual_seed(self.seed)
        n, step = self.images.size(0), 0
        self.started = time.time()
        self.bar = tqdm(total=self.total_steps, desc=self.desc, unit="step", dynamic_ncols=True, mininterval=2.0,
                        leave=False)
        try:
            for epoch in range(self.epochs):
                self.bar.set_description(f"{self.desc}, epoch {epoch + 1}/{self.epochs}")
                order = torch.randperm(n, generator=order_rng)
                for start in range(0, n, self.batch_size):
                    idx = order[start:start + self.batch_size]
                    x = self.images[idx].to(self.device)
                    for t in range(self.conditions.size(0)):
                        yield step, x, self.conditions[t, idx].to(self.device)
                        step += 1
                        self.bar.update()
        finally:
            self.bar.close()

    def record(self, loss: float) -> None:
        self.losses.append(float(loss))
        if len(self.losses) % 10 == 0:
            self.bar.set_postfix(loss=f"{sum(self.losses[-10:]) / 10:.4f}")

    def info(self, trainable_params: int, **extra) -> dict:
        """What the runner reports of a fit: rows `train_seconds` and `trainable_params`,
        the loss curve (one value per step) and anything the bypass adds."""
        return {"train_seconds": time.time() - self.started, "trainable_params": int(trainable_params),
                "steps": len(self.losses), "faces": self.images.size(0), "epochs": self.epochs,
                "loss_curve": self.losses, **extra}


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
