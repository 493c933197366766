"""PG, the perturbation generator of Initiative Defense (Huang et al., AAAI 2021,
"Initiative Defense against Facial Manipulation").

A U-Net maps a face to its protected version in one forward pass:
x_p = x + eps * tanh(BN(conv1x1(U(x)))), so |x_p - x| <= eps by construction. It is
trained to maximise the class-weighted L1 distortion of the generator's outputs, for
every edit target and for the reconstruction (the generator asked for the image's own
attributes), while a WGAN-GP patch discriminator, trained to tell protected from clean
faces, keeps the perturbation inconspicuous.

Architecture (as described): double 3x3 convolutions with BatchNorm and ReLU, average
pooling down, bilinear up-sampling with skip connections; `base_channels` 64 and
`depth` 4 give the paper's 64..1024 channels. The quick profile uses a smaller one.

Named choices:
- the surrogate is the target generator itself (white-box, as every other defense of
  the benchmark); the original trains a surrogate model that imitates the target when
  its weights are unknown;
- loss weights: each edit target 1 (`target_weights` overrides them, in target order),
  reconstruction `reconstruction_weight` 1, adversarial `adversarial_weight` 0.1;
  Adam lr 1e-4, betas (0.5, 0.999) for both networks; gradient penalty 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.contract.errors import ConfigError
from bench.contract.params import Budget, Count, NonNegative, Positive
from bench.contract.plugins import DEFAULT_EPS, Defense
from bench.toolkit.attacks import chunked, device_of, for_every_target, project
from bench.toolkit.training import recent_mean


def double_conv(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 3, 1, 1), nn.BatchNorm2d(n_out), nn.ReLU(inplace=True),
                         nn.Conv2d(n_out, n_out, 3, 1, 1), nn.BatchNorm2d(n_out), nn.ReLU(inplace=True))


CLEAN_OUTPUTS_BYTES = 512 * 2**20


class PerturbationUNet(nn.Module):
    def __init__(self, base_channels: int = 64, depth: int = 4):
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.inc = double_conv(3, widths[0])
        self.downs = nn.ModuleList(double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.out = nn.Sequential(nn.Conv2d(widths[0], 3, 1), nn.BatchNorm2d(3), nn.Tanh())

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.avg_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.ups:
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.out(h)


class PatchCritic(nn.Module):
    """WGAN critic scoring overlapping patches (no normalisation: the gradient penalty
    is per sample)."""

    def __init__(self, base_channels: int = 32, layers: int = 3):
        super().__init__()
        blocks, n_in = [], 3
        for i in range(layers):
            blocks += [nn.Conv2d(n_in, base_channels * 2 ** i, 4, 2, 1), nn.LeakyReLU(0.2)]
            n_in = base_channels * 2 ** i
        self.model = nn.Sequential(*blocks, nn.Conv2d(n_in, 1, 3, 1, 1))

    def forward(self, x):
        return self.model(x)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    alpha = torch.rand(real.size(0), 1, 1, 1, generator=rng).to(real.device)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class PG(Defense):
    name = "pg"
    version = "1"
    paper = "Huang et al., Initiative Defense against Facial Manipulation, AAAI 2021"
    smoke_params = {"iterations": 2, "batch_size": 2, "base_channels": 4, "depth": 2, "critic_channels": 4}
    fit_length = "iterations"
    per_image_settings = {}  # one perturbation per image (or for all images)

    @dataclass
    class Params:
        eps: Budget = DEFAULT_EPS
        base_channels: Count = 64
        depth: Count = 4
        critic_channels: Count = 32
        iterations: Count = 2000
        batch_size: Count = 8
        lr: Positive = 1e-4
        target_weights: list[NonNegative] | None = None  # one per edit target; None: all 1
        reconstruction_weight: NonNegative = 1.0
        adversarial_weight: NonNegative = 0.1
        gp_weight: NonNegative = 10.0
        protect_batch_size: Count = 64

    def __init__(self, **params):
        super().__init__(**params)
        self.net: PerturbationUNet | None = None

    def fit_scope(self):
        return "generator"

    def perturb(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return project(x + self.params.eps * net(x), x, self.params.eps)

    def fit(self, images, targets, seed, device):
        if len(targets) != 1:
            raise ConfigError("pg fits against one generator at a time")
        p, target = self.params, targets[0]
        torch.manual_seed(seed)
        net = PerturbationUNet(p.base_channels, p.depth).to(device).train()
        critic = PatchCritic(p.critic_channels).to(device)
        opt_net = torch.optim.Adam(net.parameters(), lr=p.lr, betas=(0.5, 0.999))
        opt_critic = torch.optim.Adam(critic.parameters(), lr=p.lr, betas=(0.5, 0.999))
        rng = torch.Generator().manual_seed(seed)
        weights = self._loss_weights(target)
        clean_outputs = self._clean_outputs(images, target, device)
        curve = []
        for _ in tqdm(range(p.iterations), desc="pg: train the perturbation generator", unit="it", leave=False):
            idx = torch.randint(images.size(0), (p.batch_size,), generator=rng)
            x = images[idx].to(device)
            conditions = [c[idx].to(device) for c in self._conditions(target)]
            protected = self.perturb(net, x)
            # critic: clean faces are real, protected ones fake
            critic_loss = (critic(protected.detach()).mean() - critic(x).mean()
                           + p.gp_weight * gradient_penalty(critic, x, protected.detach(), rng))
            opt_critic.zero_grad()
            critic_loss.backward()
            opt_critic.step()
            # perturbation generator: distort every output, look clean to the critic
            if clean_outputs is not None:
                clean = [y[idx].to(device) for y in clean_outputs]
            else:
                with torch.no_grad():
                    clean = [target.generator(x, c) for c in conditions]
            distortion = sum(w * F.l1_loss(target.generator(protected, c), y)
                             for w, c, y in zip(weights, conditions, clean))
            loss = -distortion - p.adversarial_weight * critic(protected).mean()
            opt_net.zero_grad()
            loss.backward()
            opt_net.step()
            curve.append(float(distortion.detach()))
        self.net = net.cpu().eval().requires_grad_(False)
        return dict(self.net.state_dict()), {"final_weighted_l1": recent_mean(curve),
                                             "first_weighted_l1": curve[0], "iterations": p.iterations}

    def _clean_outputs(self, images, target, device) -> list[torch.Tensor] | None:
        """The generator's output for every fitting image and condition, made once where
        they fit in CLEAN_OUTPUTS_BYTES (the same outputs the loop would make again and
        again); None where they would not."""
        conditions = self._conditions(target)
        if images.numel() * images.element_size() * len(conditions) > CLEAN_OUTPUTS_BYTES:
            return None
        with torch.no_grad():
            return [chunked(target.generator, images, c, batch_size=32, device=device) for c in conditions]

    def _conditions(self, target) -> list[torch.Tensor]:
        """Per-image conditions, (N, ...) each: the edit targets, then the reconstruction."""
        edits = list(target.conditions.unbind(0))
        return edits + ([target.unedited[0]] if target.unedited is not None else [])

    def _loss_weights(self, target) -> list[float]:
        p, n_targets = self.params, target.conditions.size(0)
        weights = p.target_weights if p.target_weights is not None else [1.0] * n_targets
        if len(weights) != n_targets:
            raise ConfigError(f"pg target_weights has {len(weights)} values; the generator has {n_targets} targets")
        return list(weights) + ([p.reconstruction_weight] if target.unedited is not None else [])

    def load_state(self, state, info):
        self.net = PerturbationUNet(self.params.base_channels, self.params.depth)
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False)

    def protect(self, x, generator, conditions, seed):
        if self.net is None:
            raise ConfigError("pg has not been fitted")
        net = self.net.to(device_of(generator))
        with torch.no_grad():
            protected = chunked(lambda xb: self.perturb(net, xb), x, batch_size=self.params.protect_batch_size,
                                device=device_of(generator))
        return for_every_target(protected, conditions)
