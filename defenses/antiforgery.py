"""Anti-Forgery (Wang et al., "Anti-Forgery: Towards a Stealthy and Robust DeepFake
Disruption Attack via Adversarial Perceptual-aware Perturbations", IJCAI 2022, arXiv
2206.00477): a perturbation of the a and b channels of the CIE Lab colour space, which
the authors find both less visible and more robust to input transforms than an RGB one.

The recipe, as the public code does it (AbstractTeen/AntiForgery at e66f0be,
`utils.py: lab_attack`, `main.py`, `color_space.py`):
- one perturbation per image, of shape (2, H, W) on a and b only (L untouched),
  starting at zero (no random start);
- the image goes [-1, 1] -> [0, 1] -> Lab (sRGB, D65 white) with L normalised to
  (L - 50) / 100 and a, b to a / 110, b / 110; the perturbation, clamped to ±`ab_eps`
  (0.05, in those normalised units: 5.5 Lab units) in the forward pass, is added to
  a, b, and the image goes back to RGB and to [-1, 1];
- Adam (lr 1e-4, betas 0.9 / 0.999) on the perturbation itself, 100 iterations, the loss
  -MSE(G(x_adv, c), G(x, c)) with G(x, c) on the unperturbed image: untargeted, pushing
  the fake away from the clean fake;
- iteration i attacks one edit target, c = target i mod T (the public code cycles over
  StarGAN's five; here over the generator's T targets);
- no input transforms during the optimisation (the code's `random_transform` is
  commented out), no sign of the gradient, no projection of the perturbation itself;
- the public code attacks StarGAN at 256 px, batch size 1; Adam's steps are per element,
  so optimising a batch of images at once gives each image the same steps.

Where this implementation differs, each difference is a parameter or a fact of the
harness, recorded in every result:
- the colour conversion is kornia's `rgb_to_lab` / `lab_to_rgb`: the same sRGB and D65
  formulas and constants as the public `color_space.py`; kornia clamps the RGB result
  to [0, 1] where the public code clamps only below 0 (an a, b shift of 0.05 gives values up to 1.05 on [0, 1] there),
  and every protected image of this harness lies in [-1, 1];
- `eps` (default the protocol's 0.05 on [-1, 1]) bounds the RGB change as every
  defense's is bounded. At the public settings Adam's small steps keep a and b within
  about 0.018 (2 Lab units) of the clean image, far inside `ab_eps`, yet near the gamut's
  edges a small a, b change is a large RGB one: on 16 held-out CelebA-HQ faces against
  StarGAN 0.05% of the values moved more than 0.05 (at most 0.17; 99th percentile
  0.028), and the bound clips those (tests/test_antiforgery.py); `eps=2` lifts it;
- the public code returns the image made before its last Adam step (99 updates of 100);
  here the protected image has all `steps` updates;
- the generators are this harness's (StarGAN, AttGAN, HiSD), each with its own edit
  targets; the public code evaluates StarGAN only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.contract.params import AdamBeta, Budget, Count, Positive
from bench.contract.plugins import Defense
from bench.contract.results import DEFAULT_EPS
from bench.toolkit.attacks import chunked, device_of, for_every_target, per_sample_mse

L_SHIFT, L_SCALE, AB_SCALE = 50.0, 100.0, 110.0  # the public code's normalisation of Lab


def to_lab(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] RGB -> Lab normalised as the public code does (L - 50) / 100, a / 110, b / 110."""
    from kornia.color import rgb_to_lab

    lab = rgb_to_lab(((x + 1) / 2).clamp(0, 1))
    return torch.cat([(lab[:, :1] - L_SHIFT) / L_SCALE, lab[:, 1:] / AB_SCALE], dim=1)


def from_lab(lab: torch.Tensor) -> torch.Tensor:
    """Normalised Lab -> [-1, 1] RGB (clamped to the sRGB range)."""
    from kornia.color import lab_to_rgb

    raw = torch.cat([lab[:, :1] * L_SCALE + L_SHIFT, lab[:, 1:] * AB_SCALE], dim=1)
    return lab_to_rgb(raw, clip=True) * 2 - 1


def with_ab_change(lab: torch.Tensor, change: torch.Tensor, ab_eps: float) -> torch.Tensor:
    """The image with `change` (N, 2, H, W), clamped to ±ab_eps, added to its a and b."""
    return from_lab(torch.cat([lab[:, :1], lab[:, 1:] + change.clamp(-ab_eps, ab_eps)], dim=1))


class AntiForgery(Defense):
    name = "antiforgery"
    version = "1"
    paper = "Wang et al., Anti-Forgery, IJCAI 2022 (public code: AbstractTeen/AntiForgery)"
    randomised = False  # starts at zero, no sampling
    smoke_params = {"steps": 3}
    per_image_settings = {}  # one perturbation per image, for every target

    @dataclass
    class Params:
        steps: Count = 100
        lr: Positive = 1e-4
        beta1: AdamBeta = 0.9
        beta2: AdamBeta = 0.999
        ab_eps: Positive = 0.05  # on a / 110 and b / 110
        eps: Budget = DEFAULT_EPS  # the RGB change on [-1, 1], as every defense's
        batch_size: Count = 32  # images per forward pass

    def protect(self, x, generator, conditions, seed):
        p = self.params
        protected = chunked(lambda xb, *cb: self.within_budget(xb, self.perturbed(xb, torch.stack(cb), generator)),
                            x, *conditions.unbind(0), batch_size=p.batch_size, device=device_of(generator))
        return for_every_target(protected, conditions)

    def within_budget(self, x: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
        return (x + (perturbed - x).clamp(-self.params.eps, self.params.eps)).clamp(-1, 1)

    def perturbed(self, x: torch.Tensor, conditions: torch.Tensor, generator) -> torch.Tensor:
        """x (n, 3, H, W) and conditions (T, n, ...) on one device -> x with its a and b
        perturbed (before the RGB bound)."""
        p = self.params
        with torch.no_grad():
            clean_fakes = [generator(x, c) for c in conditions]
            lab = to_lab(x)
        change = torch.zeros(x.size(0), 2, *x.shape[2:], device=x.device, requires_grad=True)
        optimiser = torch.optim.Adam([change], lr=p.lr, betas=(p.beta1, p.beta2))
        for step in range(p.steps):
            target = step % len(conditions)
            fake = generator(with_ab_change(lab, change, p.ab_eps), conditions[target])
            loss = -per_sample_mse(fake, clean_fakes[target]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            return with_ab_change(lab, change, p.ab_eps)
