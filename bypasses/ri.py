"""RI: defense against adversarial attacks by reconstructing images (Zhang, Gao & Rao,
IEEE TIP 2021, DOI 10.1109/TIP.2021.3092582), used as a purifier in front of the generator.

What is public (the abstract; no code was found): a residual-block reconstruction
network maps adversarial images to clean ones, trained with a perceptual (deep-feature)
loss, and randomisation layers at its end suppress what noise remains. The rest is a
re-implementation, with these choices:

- Reconstruction net R (SRResNet-like, as SPEC.md): 9x9 conv 3->C + PReLU (the head),
  `blocks` residual blocks (conv3x3-BN-PReLU-conv3x3-BN plus skip), conv3x3-BN with a
  long skip from the head, then a 3x3 tail conv to 3 channels. One PReLU slope per layer.
  Published sizes: 16 blocks of 64 channels.
- The tail predicts a residual: R(x) = clamp(x + tail(.), -1, 1), the tail starting at
  zero, so R starts as the identity and a short training only learns the correction (a
  tanh output would first have to learn to copy the image). The tail is 3x3, not
  SRResNet's 9x9: Adam's first steps move every tail weight by about lr, so a 9x9 tail
  over C channels jolts the identity hard (measured at lr 1e-3: the loss went from
  0.004 to 0.2-1.1 and had not recovered after 25 steps).
- Adam lr 1e-4 (SRResNet's; with lr 1e-3 a 40-step fit ended at a higher loss).
- Randomisation (after Xie et al., ICLR 2018, who resize 299 px to [299, 331) and pad
  to 331): each image is resized (bilinear) to r x r' with r drawn from [H, P), P =
  floor(H * (1 + pad_fraction)), r' = r * W / H, zero-padded (0 is mid grey in [-1, 1])
  at a random offset to P x P', then resized back to H x W so the generator gets the
  size it expects; 0 switches randomisation off. Default pad_fraction 0.035, not Xie's
  0.107 (331/299, a classifier's setting): the resize back shrinks and shifts the face,
  which by itself moves a generator's edit away from G(x). Measured on the quick StarGAN
  (32 held-out CelebA-HQ faces x 5 targets): with 0.107 the layer alone gives clean faces
  L2 0.089 / DSR 0.63, and RI against Disrupting 0.099 / 0.73, from geometry, not from
  residual perturbation; with 0.035, RI gives 0.031 / 0.11 against Disrupting (the
  paper's RI row: 0.031 / 0.124) and 0.028 / 0.11 on clean faces.
  purify(x) = randomise(R(x)). The draws come from a torch.Generator seeded with
  `seed` afresh at every call, image i of a call taking the i-th draw: purify is
  deterministic, and differentiable (interpolation and padding are).
- Training (fit against the generator being bypassed): for each batch and edit target
  (bench.toolkit.finetune.FinetuneLoop), PGD (eps 0.05, 10 steps of 0.01, random start) against
  the ORIGINAL generator G makes x_adv from y = G(x, c), as a defense would; then one Adam
  step on
      MSE(T(R(x_adv)), T(x)) + MSE(T(R(x)), T(x)) + feature_weight * L_feat
  with T one draw of the randomisation per step (seeded by the step), applied alike to
  every term, so R learns to be robust to it, as the method intends; comparing with T(x)
  rather than x leaves out the geometric change no reconstruction can undo.
- The deep-feature loss (`feature_loss`): the attacker's own target model G stands in for
  the paper's perceptual network. "generator_features" (default): MSE between G's
  mid-level features (`Generator.feature_module()`) of T(R(x_adv)) and of T(x) under
  target c; "generator_output": MSE(G(T(R(x_adv)), c), G(T(x), c)); "none": pixels only.
  feature_weight 0.1 (not published): the feature term then still outweighs the pixel
  terms (about 0.006 against 0.002 at the start). G stays untouched: the fit uses a
  frozen copy of it.
- R runs in training mode (batch statistics, clean and adversarial batch together)
  while fitted and in inference mode (running statistics) when purifying.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError
from bench.contract.params import Count, Fraction, NonNegative, Positive, Seed
from bench.contract.plugins import Bypass
from bench.toolkit.features import FeatureTap
from bench.toolkit.finetune import (
    AdversarialFinetuneSettings,
    FinetuneLoop,
    adversarial_example,
    count_trainable,
    step_seed,
)

FEATURE_LOSSES = ("generator_features", "generator_output", "none")


# ---------------------------------------------------------------------- reconstruction
class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class ReconstructionNet(nn.Module):
    """x -> clamp(x + residual, -1, 1); the identity at initialisation."""

    def __init__(self, channels: int = 64, blocks: int = 16):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)],
                                  nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        features = self.head(x)
        return (x + self.tail(features + self.body(features))).clamp(-1.0, 1.0)


# ---------------------------------------------------------------------- randomisation
def canvas_size(height: int, width: int, pad_fraction: float) -> tuple[int, int]:
    return int(height * (1 + pad_fraction)), int(width * (1 + pad_fraction))


def draw_layouts(n: int, height: int, width: int, pad_fraction: float, seed: int) -> list[list[int]]:
    """Per image (resized height, resized width, top, left) on the padded canvas."""
    canvas_h, canvas_w = canvas_size(height, width, pad_fraction)
    rng = torch.Generator().manual_seed(seed)
    sizes_h = torch.randint(height, canvas_h, (n,), generator=rng)
    sizes_w = (sizes_h * width / height).round().long().clamp(max=canvas_w)
    tops = (torch.rand(n, generator=rng) * (canvas_h - sizes_h + 1)).long()
    lefts = (torch.rand(n, generator=rng) * (canvas_w - sizes_w + 1)).long()
    return torch.stack([sizes_h, sizes_w, tops, lefts], 1).tolist()


def randomise(x: torch.Tensor, pad_fraction: float, seed: int, copies: int = 1) -> torch.Tensor:
    """Random resize, random zero padding, resize back to x's size (Xie et al. 2018).
    x may stack `copies` versions of the same images, which then share each image's draw."""
    height, width = x.shape[-2:]
    canvas_h, canvas_w = canvas_size(height, width, pad_fraction)
    if canvas_h <= height:  # too little room to pad: nothing to randomise
        return x
    layouts = draw_layouts(x.size(0) // copies, height, width, pad_fraction, seed) * copies
    padded = []
    for image, (h, w, top, left) in zip(x, layouts, strict=True):
        resized = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)
        padded.append(F.pad(resized, (left, canvas_w - w - left, top, canvas_h - h - top)))
    return F.interpolate(torch.cat(padded), size=(height, width), mode="bilinear", align_corners=False)


def generator_view(generator, tap: FeatureTap | None, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """What the deep-feature loss compares: the tapped mid-level features, else the output."""
    out = generator(x, c)
    return tap.value if tap is not None else out


# ---------------------------------------------------------------------- the bypass
class RI(Bypass):
    name = "ri"
    version = "1"
    paper = "Zhang, Gao & Rao, Defense against adversarial attacks by reconstructing images, IEEE TIP 2021"
    kind = "purifier"
    trainable = True
    fit_scope = "generator"
    differentiable = True
    smoke_params = {"blocks": 1, "channels": 4, "batch_size": 2, "pgd_steps": 1}

    @dataclass
    class Params(AdversarialFinetuneSettings):
        lr: Positive = 1e-4
        blocks: Count = 16
        channels: Count = 64
        pad_fraction: Fraction = 0.035  # Xie et al.: 0.107 (see the module docstring)
        seed: Seed = 0  # of the randomisation layer's draws when purifying
        feature_loss: Literal[FEATURE_LOSSES] = "generator_features"
        feature_weight: NonNegative = 0.1

    def __init__(self, **params):
        super().__init__(**params)
        self.net: ReconstructionNet | None = None

    def fresh_net(self, seed: int) -> ReconstructionNet:
        """A newly initialised R (drawn from `seed` without touching torch's global RNG)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ReconstructionNet(self.params.channels, self.params.blocks)

    # --- fitting ---------------------------------------------------------------------
    def fit(self, generator, images, conditions, seed, device):
        p = self.params
        frozen = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
        if p.feature_loss == "generator_features" and frozen.feature_module() is None:
            raise ConfigError(f"generator {generator.name!r} names no feature layer; "
                              "use ri feature_loss=generator_output or none")
        net = self.fresh_net(seed).to(device).train()
        opt = torch.optim.Adam(net.parameters(), p.lr, (p.beta1, p.beta2))
        loop = FinetuneLoop(images, conditions, p.batch_size, p.epochs, seed, device, "ri reconstruction")
        tap = FeatureTap(frozen) if p.feature_loss == "generator_features" else None
        try:
            for step, x, c in loop:
                loop.record(self._train_step(frozen, net, opt, tap, x, c, step_seed(seed, step)))
        finally:
            if tap is not None:
                tap.close()
        info = loop.info(count_trainable(net), feature_loss=p.feature_loss)
        self._use(net)
        return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, info

    def _train_step(self, generator, net, opt, tap, x, c, seed) -> float:
        p = self.params
        with torch.no_grad():
            y = generator(x, c)
        x_adv = adversarial_example(generator, x, c, y, p, seed)
        restored = net(torch.cat([x_adv, x]))
        seen = randomise(torch.cat([restored, x]), p.pad_fraction, seed, copies=3)  # one draw per image
        n = x.size(0)
        restored_adv, restored_clean, target = seen[:n], seen[n:2 * n], seen[2 * n:]
        loss = F.mse_loss(restored_adv, target) + F.mse_loss(restored_clean, target)
        if p.feature_loss != "none":
            with torch.no_grad():
                clean_view = generator_view(generator, tap, target, c)
            loss = loss + p.feature_weight * F.mse_loss(generator_view(generator, tap, restored_adv, c), clean_view)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    # --- restoring and purifying -----------------------------------------------------
    def load_state(self, state, info):
        net = self.fresh_net(0)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError:
            raise ConfigError(f"the RI state does not fit a net of {self.params.blocks} blocks of "
                              f"{self.params.channels} channels") from None
        self._use(net)

    def _use(self, net: ReconstructionNet) -> None:
        net.zero_grad(set_to_none=True)
        self.net = net.eval().requires_grad_(False)  # gradients still reach the input

    def purify(self, x):
        if self.net is None:
            raise ConfigError("ri has not been fitted or loaded")
        return randomise(self.net.to(x.device)(x), self.params.pad_fraction, self.params.seed)
