"""ID-Guard (Qu et al., IEEE TPAMI 2025, arXiv 2409.13349): a universal perturbation
generator against several face-editing models at once.

As the public code (ZOMIN28/ID-Guard) does it:
- a ResNet generator (7x7 conv, two stride-2 convs, residual blocks, two transposed
  convs, 7x7 conv, tanh; BatchNorm, SELU outside the blocks, ReLU inside, reflection
  padding, weights N(0, 0.02)) reads the image with a learned universal prior as 3
  extra channels; its output, clamped to [-eps, eps], is the perturbation. The prior
  (clamped to eps) is trained with the generator and also used alone, x + prior, as a
  second branch of the loss;
- per generator and branch the loss to maximise is
  1.0 * MSE(G(x) * M, G(x_p) * M)                       masked output distortion
  + 0.1 * (1 - cos(F(G(x)), F(G(x_p))))                  identity-feature distance
  + 0.01 * MSE(f(x) * m, f(x_p) * m)                      masked mid-level features
  with f the generator's mid-level features (`Generator.feature_module`) and m the
  mask resized to them; one edit target per step, cycling through the targets;
- the generators' losses are weighted by MGDA (the min-norm combination of their
  gradients with respect to the perturbation generator's weights, found by projected
  gradient descent on the simplex) or KPI
  (w = -(1 - L)^tau * log L with L the generator's masked output loss clamped to
  [1e-13, 1], tau 1), times fixed per-generator weights (`generator_weights`);
- Adam lr 1e-4, betas (0.5, 0.999); eps 0.05.

Named option: `mgda_normalisation` divides each generator's gradient by its L2 norm
("l2"), its loss ("loss") or both ("loss+") before MGDA weighs them, as MGDA's authors
do (Sener & Koltun, NeurIPS 2018); the public ID-Guard code does not ("none", the
default). The objective still weighs the raw losses. The fit records the mean weights.

Stated substitutes (recorded in the parameters of every result):
- mask (`mask`): the public code multiplies CelebAMask-HQ part masks (brows, eyes, nose,
  mouth, lips) with a Grad-CAM++ map of VGGFace, neither available offline. "face" uses
  a fixed ellipse over the inner face of an aligned portrait (centre at 50% width and
  55% height, half-axes 30% and 32%); "none" weighs every pixel;
- identity features (`identity_model`): the public code uses ArcFace IR-SE50 (or
  VGGFace), not available offline. "attribute_classifier" uses the last convolutional
  stage of the project's attribute classifier (a face network trained by the project,
  not a face-recognition network); "none" switches the term off;
- the prior starts from uniform noise in [-eps, eps] drawn from the seed (the public
  code loads a pre-computed prior that it does not ship).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from bench.contract.errors import ConfigError
from bench.contract.params import Budget, Count, NonNegative, Positive
from bench.contract.plugins import DEFAULT_EPS, Defense
from bench.toolkit.attacks import (
    check_fitted_size,
    chunked,
    device_of,
    for_every_target,
)
from bench.toolkit.features import FeatureTap
from bench.toolkit.training import recent_mean

MASKS = ("face", "none")
IDENTITY_MODELS = ("attribute_classifier", "none")
WEIGHTINGS = ("mgda", "kpi", "equal")
# MGDA's gradient normalisations (Sener & Koltun, NeurIPS 2018, and their public code):
# each generator's gradient is divided by its L2 norm, its loss, or both before the
# min-norm weights are found; the objective then weighs the raw losses by them
MGDA_NORMALISATIONS = ("none", "l2", "loss", "loss+")


# ---------------------------------------------------------------------- the generator
class ResidualBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False), nn.BatchNorm2d(ch),
                                   nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=False),
                                   nn.BatchNorm2d(ch))

    def forward(self, x):
        return x + self.block(x)


class PerturbationResNet(nn.Module):
    """(image, prior) -> tanh output in [-1, 1], to be clamped to the budget."""

    def __init__(self, ngf: int = 64, blocks: int = 6):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(6, ngf, 7, bias=False), nn.BatchNorm2d(ngf), nn.SELU(True)]
        for i in range(2):
            n = ngf * 2 ** i
            layers += [nn.Conv2d(n, 2 * n, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * n), nn.SELU(True)]
        layers += [ResidualBlock(4 * ngf) for _ in range(blocks)]
        for i in range(2):
            n = ngf * 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(n, n // 2, 3, 2, 1, output_padding=1, bias=False),
                       nn.BatchNorm2d(n // 2), nn.SELU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x, prior):
        return self.model(torch.cat([x, prior.expand(x.size(0), -1, -1, -1)], 1))


# ---------------------------------------------------------------------- loss pieces
def face_mask(size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, H, W) 0/1: an ellipse over the inner face of an aligned portrait."""
    h, w = size
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    inside = ((xs.view(1, -1) - 0.5) / 0.30) ** 2 + ((ys.view(-1, 1) - 0.55) / 0.32) ** 2 <= 1
    return inside.float().view(1, 1, h, w)


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int((u - cumulative / k > 0).nonzero().max())
    return (v - cumulative[rho] / (rho + 1)).clamp(min=0)


def min_norm_weights(grads: list[torch.Tensor], iterations: int = 2000, tolerance: float = 1e-10) -> torch.Tensor:
    """MGDA: the convex combination of the (flattened) gradients with the smallest norm,
    by projected gradient descent on the simplex (as the public code's solver)."""
    g = torch.stack(grads).double()
    gram = g @ g.T
    step = 1.0 / (2 * float(torch.linalg.eigvalsh(gram).max()) + 1e-30)
    w = torch.full((len(grads),), 1.0 / len(grads), dtype=torch.float64)
    for _ in range(iterations):
        new = project_to_simplex(w - step * 2 * (gram @ w))
        if (new - w).abs().sum() < tolerance:
            return new.float()
        w = new
    return w.float()


def gradient_normaliser(grad: torch.Tensor, loss: float, kind: str) -> float:
    """What MGDA divides a task's gradient by before weighing: without it the min-norm
    combination follows the smallest gradient (here the generator the perturbation moves
    least), with "l2" every generator's direction counts alike."""
    tiny = 1e-12
    if kind == "l2":
        return max(float(grad.norm()), tiny)
    if kind == "loss":
        return max(loss, tiny)
    if kind == "loss+":
        return max(loss * float(grad.norm()), tiny)
    return 1.0


def kpi_weight(loss: float, tau: float) -> float:
    """KPI weighting: a generator whose masked output loss is still small weighs more."""
    k = min(max(loss, 1e-13), 1.0)
    return -((1 - k) ** tau) * math.log(k)


# ---------------------------------------------------------------------- the defense
class IDGuard(Defense):
    name = "idguard"
    version = "1"
    paper = "Qu et al., ID-Guard, IEEE TPAMI 2025"
    smoke_params = {"iterations": 2, "batch_size": 2, "ngf": 4, "blocks": 1, "identity_model": "none"}
    fit_length = "iterations"
    per_image_settings = {}  # one perturbation per image (or for all images)

    @dataclass
    class Params:
        eps: Budget = DEFAULT_EPS
        ngf: Count = 64
        blocks: Count = 6
        iterations: Count = 10000
        batch_size: Count = 3
        lr: Positive = 1e-4
        output_weight: NonNegative = 1.0
        identity_weight: NonNegative = 0.1
        feature_weight: NonNegative = 0.01
        mask: Literal[MASKS] = "face"
        identity_model: Literal[IDENTITY_MODELS] = "attribute_classifier"
        weighting: Literal[WEIGHTINGS] = "mgda"
        mgda_normalisation: Literal[MGDA_NORMALISATIONS] = "none"  # the public code's MGDA has none
        kpi_tau: Positive = 1.0
        generator_weights: dict[str, NonNegative] | None = None  # generator name -> fixed weight; None: all 1
        prior_branch: bool = True  # also train the prior alone, x + prior (public code)
        across_generators: bool = True
        protect_batch_size: Count = 64

    def __init__(self, **params):
        super().__init__(**params)
        self.net: PerturbationResNet | None = None
        self.prior: torch.Tensor | None = None

    def fit_scope(self):
        return "generators" if self.params.across_generators else "generator"

    # --- the perturbation --------------------------------------------------------------
    def perturbation(self, net, prior, x):
        return net(x, prior.clamp(-self.params.eps, self.params.eps)).clamp(-self.params.eps, self.params.eps)

    def protected(self, net, prior, x):
        return (x + self.perturbation(net, prior, x)).clamp(-1, 1)

    # --- fitting -----------------------------------------------------------------------
    def fit(self, images, targets, seed, device):
        p = self.params
        if not targets:
            raise ConfigError("idguard needs at least one generator to fit against")
        torch.manual_seed(seed)
        net = PerturbationResNet(p.ngf, p.blocks).to(device).train()
        prior = ((torch.rand(1, *images.shape[1:], generator=torch.Generator().manual_seed(seed)) * 2 - 1)
                 * p.eps).to(device).requires_grad_(True)
        optimiser = torch.optim.Adam(list(net.parameters()) + [prior], lr=p.lr, betas=(0.5, 0.999))
        identity = self._identity_features(device)
        mask = self._mask(images.shape[-2:]).to(device)
        fixed = self._fixed_weights(targets)
        rng = torch.Generator().manual_seed(seed)
        taps = [FeatureTap(t.generator) for t in targets]
        curve, weight_rows = [], []
        try:
            for it in tqdm(range(p.iterations), desc="idguard: train the perturbation generator", unit="it",
                           leave=False):
                idx = torch.randint(images.size(0), (p.batch_size,), generator=rng)
                x = images[idx].to(device)
                branches = [self.protected(net, prior, x)]
                if p.prior_branch:
                    branches.append((x + prior.clamp(-p.eps, p.eps)).clamp(-1, 1))
                losses, output_losses = [], []
                for target, tap in zip(targets, taps):
                    c = target.conditions[it % target.conditions.size(0)][idx].to(device)
                    total, output_part = self._generator_loss(target.generator, tap, identity, mask, x, c, branches)
                    losses.append(total)
                    output_losses.append(output_part)
                weights = self._dynamic_weights(losses, output_losses, net)
                objective = sum(f * w * loss for f, w, loss in zip(fixed, weights, losses))
                optimiser.zero_grad()
                (-objective).backward()
                optimiser.step()
                curve.append([float(loss.detach()) for loss in losses])
                weight_rows.append(weights)
        finally:
            for tap in taps:
                tap.close()
        self.net, self.prior = net.cpu().eval().requires_grad_(False), prior.detach().cpu().clamp(-p.eps, p.eps)
        names = [t.generator.name for t in targets]
        return self._state(), {
            "first_loss": dict(zip(names, curve[0])),
            "final_loss": {n: recent_mean([row[i] for row in curve]) for i, n in enumerate(names)},
            "mean_weight": {n: sum(row[i] for row in weight_rows) / len(weight_rows) for i, n in enumerate(names)},
            "mask": p.mask, "identity_model": p.identity_model, "weighting": p.weighting,
            "mgda_normalisation": p.mgda_normalisation,
            "feature_term": {n: t.generator.feature_module() is not None for n, t in zip(names, targets)}}

    def _generator_loss(self, generator, tap, identity, mask, x, c, branches):
        p = self.params
        with torch.no_grad():
            clean = generator(x, c)
            clean_features = tap.value
            clean_identity = identity(clean) if identity is not None else None
        total, output_part = 0.0, 0.0
        for x_p in branches:
            out = generator(x_p, c)
            output_loss = F.mse_loss(out * mask, clean * mask)
            total = total + p.output_weight * output_loss
            output_part = output_part + output_loss
            if identity is not None and p.identity_weight:
                cos = F.cosine_similarity(identity(out), clean_identity, dim=1).mean()
                total = total + p.identity_weight * (1 - cos)
            if tap.value is not None and clean_features is not None and p.feature_weight:
                m = F.interpolate(mask, size=tap.value.shape[-2:], mode="bilinear", align_corners=False)
                total = total + p.feature_weight * F.mse_loss(tap.value * m, clean_features * m)
        return total, output_part

    def _dynamic_weights(self, losses, output_losses, net) -> list[float]:
        p = self.params
        if len(losses) == 1 or p.weighting == "equal":
            return [1.0] * len(losses)
        if p.weighting == "kpi":
            return [kpi_weight(float(o.detach()), p.kpi_tau) for o in output_losses]
        params = [q for q in net.parameters() if q.requires_grad]
        grads = []
        for loss in losses:
            per_param = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            grads.append(torch.cat([(g if g is not None else torch.zeros_like(q)).flatten()
                                    for g, q in zip(per_param, params)]))
        normalised = [g / gradient_normaliser(g, float(loss.detach()), p.mgda_normalisation)
                      for g, loss in zip(grads, losses)]
        return min_norm_weights(normalised).tolist()

    def _fixed_weights(self, targets) -> list[float]:
        weights = self.params.generator_weights or {}
        unknown = set(weights) - {t.generator.name for t in targets}
        if unknown:
            raise ConfigError(f"idguard generator_weights names generators not in this fit: {sorted(unknown)}")
        return [float(weights.get(t.generator.name, 1.0)) for t in targets]

    def _mask(self, size) -> torch.Tensor:
        return face_mask(tuple(size)) if self.params.mask == "face" else torch.ones(1, 1, *size)

    def _identity_features(self, device):
        if self.params.identity_model == "none" or not self.params.identity_weight:
            return None
        from bench.toolkit.classifier import AttributeClassifier

        classifier = AttributeClassifier.load().to(device).eval().requires_grad_(False)
        size = classifier.config["resolution"]

        def features(y):
            y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            return classifier.features(y)

        return features

    # --- state ---------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()}, "prior": self.prior}

    def load_state(self, state, info):
        self.net = PerturbationResNet(self.params.ngf, self.params.blocks)
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net.eval().requires_grad_(False)
        self.prior = state["prior"]

    def protect(self, x, generator, conditions, seed):
        check_fitted_size("idguard", self.prior, x)
        device = device_of(generator)
        net, prior = self.net.to(device), self.prior.to(device)
        with torch.no_grad():
            protected = chunked(lambda xb: self.protected(net, prior, xb), x,
                                batch_size=self.params.protect_batch_size, device=device)
        return for_every_target(protected, conditions)
