"""R+FGSM as a proactive defense: one random signed step, then one signed-gradient step.

Tramèr et al. (ICLR 2018) start FGSM with a random sign step of size alpha because the
loss is flat where it starts. Here the loss is the distance between the generator's
output on the perturbed image and its output on the clean image (the disruption loss
of Ruiz et al.'s Disrupting Deepfakes), maximised once per edit target, with
|x_protected - x| <= eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bench.contract import DEFAULT_EPS, Defense
from bench.contract.params import Budget, Count, Positive


class RFGSM(Defense):
    name = "rfgsm"
    version = "1"
    paper = "Tramèr et al., Ensemble Adversarial Training, ICLR 2018 (R+FGSM)"
    url = "https://arxiv.org/abs/1705.07204"
    licence = "MIT"
    randomised = True

    @dataclass
    class Params:
        eps: Budget = DEFAULT_EPS  # L-inf budget on [-1, 1]: the protocol's
        alpha: Positive = 0.025  # size of the random step
        batch_size: Count = 32

    def protect(self, x: torch.Tensor, generator, conditions: torch.Tensor, seed: int) -> torch.Tensor:
        """x (N, 3, H, W) and conditions (T, N, ...) on the CPU -> (T, N, 3, H, W) on the CPU."""
        device = next(generator.parameters()).device
        draws = torch.Generator().manual_seed(seed)
        noise = torch.randn((conditions.size(0), *x.shape), generator=draws).sign()
        out = torch.empty_like(noise)
        size = self.params.batch_size
        for t in range(conditions.size(0)):
            for start in range(0, x.size(0), size):
                part = slice(start, start + size)
                out[t, part] = self.perturb(x[part].to(device), conditions[t, part].to(device),
                                            noise[t, part].to(device), generator).cpu()
        return out

    def perturb(self, x: torch.Tensor, c: torch.Tensor, noise: torch.Tensor, generator) -> torch.Tensor:
        eps, alpha = self.params.eps, self.params.alpha
        with torch.no_grad():
            fake = generator(x, c)
        start = (x + alpha * noise).clamp(-1, 1).requires_grad_(True)
        loss = F.mse_loss(generator(start, c), fake)
        (grad,) = torch.autograd.grad(loss, start)
        stepped = start.detach() + (eps - alpha) * grad.sign()
        return torch.minimum(torch.maximum(stepped, x - eps), x + eps).clamp(-1, 1)
