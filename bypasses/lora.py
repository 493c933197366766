"""LoRA patching (the paper; public code ZOMIN28/LoRA-Patching).

A gated LoRA block is inserted into every Conv2d, ConvTranspose2d and Linear layer of
the frozen generator (norm layers frozen too):

    z = l(z_prev) + scale * sigmoid(g) * B(A * z_prev)

- Conv2d: A is a (rank, in, kh, kw) convolution with the layer's stride, padding and
  dilation; B a 1x1 channel mix (out, rank).
- ConvTranspose2d: A is an (in, rank, kh, kw) transposed convolution with the layer's
  stride, padding and output padding; B a 1x1 mix.
- Linear: A (rank, in), B (out, rank), scaled by plain alpha as in the public code
  (`linear_scaling=alpha`) or by alpha/rank, the standard LoRA the paper cites (`rank`).
- Each patched layer runs as one layer with weight W + scale * sigmoid(g) * B A, the
  same function as the two branches with half the convolutions.
- One learnable scalar gate g per layer (init -1). `scaling` chooses the conv scale:
  alpha/sqrt(rank) (public code, default), alpha/rank (its README) or alpha (the
  paper's formula). A and B are both Kaiming-uniform initialised (public code), so the
  patched model differs from the original at step 0; `b_init=zeros` is the usual LoRA.

Training (Eq. 2): for each batch and each target, PGD (eps 0.05, 10 steps of 0.01, random
start) against the CURRENT patched model, then one Adam step (lr 1e-3, betas 0.5/0.999)
on L(Mp(x), y) + L(Mp(x_adv), y) with y = M_orig(x). The PGD maximises the pixel
distance to y (the paper's Eq. 2, default) or to Mp(x) (`pgd_reference=patched`, the
public code).

Loss (`loss`): "mmfa" (the paper's Eq. 6) L = Lpix + 0.1 Limg + 0.1 Lsem, each term the
MSE of the output and of the target, in pixels, in `image_features` and in
`semantic_features` (see bench.toolkit.features: the paper's ResNet-50 and BLIP vision encoder,
or the project's offline substitutes); the feature terms carry gradient to the patch
(the public code computes its BLIP term without gradient and has both switched off).
"pixel" keeps only Lpix (the MMFA ablation).

Defensive patching (`warning=True`): the target becomes y_w = clamp(y + 2 w) with w the
project's warning mark (bench.toolkit.marks: a red triangle with `warning_text`, about
`warning_area` of the pixels, bottom-left), so the patched model marks both benign and
protected outputs; the public recipe uses rank 16 and 5 epochs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Interval, MinLen
from torch import nn

from bench.contract.errors import ConfigError
from bench.contract.params import Count, NonNegative, Positive
from bench.contract.plugins import Bypass
from bench.toolkit.features import EXTRACTORS, load_extractor
from bench.toolkit.finetune import (
    AdversarialFinetuneSettings,
    FinetuneLoop,
    adversarial_example,
    count_trainable,
    step_seed,
)
from bench.toolkit.marks import apply_mark, mark_region, warning_mark

LORA_KEYS = ("lora_A", "lora_B", "gate")
SCALINGS = {"sqrt_rank": lambda a, r: a / math.sqrt(r), "rank": lambda a, r: a / r, "none": lambda a, r: a}


class _LoRABase(nn.Module):
    def _init_lora(self, a_shape, out_features, rank, scale, gated, gate_init, b_init):
        self.lora_B = nn.Parameter(torch.empty(out_features, rank))
        self.lora_A = nn.Parameter(torch.empty(*a_shape))
        self.gate = nn.Parameter(torch.tensor(float(gate_init))) if gated else None
        self.scale = scale
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if b_init == "zeros":
            nn.init.zeros_(self.lora_B)
        else:
            nn.init.kaiming_uniform_(self.lora_B, a=math.sqrt(5))

    def _gain(self):
        return self.scale * torch.sigmoid(self.gate) if self.gate is not None else self.scale


class LoRAConv2d(_LoRABase):
    def __init__(self, conv: nn.Conv2d, rank, scale, gated, gate_init, b_init):
        super().__init__()
        self._init_lora((rank, conv.in_channels, *conv.kernel_size), conv.out_channels,
                        rank, scale, gated, gate_init, b_init)
        self.orig_conv = conv

    def merged_weight(self) -> torch.Tensor:
        """W + gain * B A: the layer and its patch as one convolution, since
        conv(x, W) + gain * B conv(x, A) = conv(x, W + gain * B A) (half the work of two)."""
        delta = (self.lora_B @ self.lora_A.flatten(1)).view_as(self.orig_conv.weight)
        return self.orig_conv.weight + self._gain() * delta

    def forward(self, x):
        return self.orig_conv._conv_forward(x, self.merged_weight(), self.orig_conv.bias)


class LoRAConvTranspose2d(_LoRABase):
    def __init__(self, conv: nn.ConvTranspose2d, rank, scale, gated, gate_init, b_init):
        super().__init__()
        self._init_lora((conv.in_channels, rank, *conv.kernel_size), conv.out_channels,
                        rank, scale, gated, gate_init, b_init)
        self.orig_conv = conv

    def merged_weight(self) -> torch.Tensor:
        """W + gain * (A mixed by B): the transposed convolution by A followed by the 1x1
        mix B is one transposed convolution with weight sum_r A[:, r] B[:, r]."""
        delta = torch.einsum("irhw,or->iohw", self.lora_A, self.lora_B)
        return self.orig_conv.weight + self._gain() * delta

    def forward(self, x):
        c = self.orig_conv
        return F.conv_transpose2d(x, self.merged_weight(), c.bias, c.stride, c.padding, c.output_padding,
                                  c.groups, c.dilation)


class LoRALinear(_LoRABase):
    def __init__(self, linear: nn.Linear, rank, scale, gated, gate_init, b_init):
        super().__init__()
        self._init_lora((rank, linear.in_features), linear.out_features, rank, scale, gated,
                        gate_init, b_init)
        self.orig_linear = linear

    def merged_weight(self) -> torch.Tensor:
        return self.orig_linear.weight + self._gain() * (self.lora_B @ self.lora_A)

    def forward(self, x):
        return F.linear(x, self.merged_weight(), self.orig_linear.bias)


def inject_lora(model: nn.Module, rank: int = 8, alpha: float = 2.0, scaling: str = "sqrt_rank",
                gated: bool = True, gate_init: float = -1.0, b_init: str = "kaiming",
                linear_scaling: str = "alpha") -> list[str]:
    """Wrap every Conv2d / ConvTranspose2d / Linear of `model` in place; freeze all else.

    Returns the names of the wrapped layers. Initialisation draws from torch's global RNG.
    """
    conv_scale = SCALINGS[scaling](alpha, rank)
    linear_scale = alpha if linear_scaling == "alpha" else SCALINGS[linear_scaling](alpha, rank)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)) and child.groups != 1:
                raise ConfigError(f"LoRA patching supports ungrouped convolutions only; {name}.{child_name} "
                                  f"has groups={child.groups}")
            if isinstance(child, nn.ConvTranspose2d):
                new = LoRAConvTranspose2d(child, rank, conv_scale, gated, gate_init, b_init)
            elif isinstance(child, nn.Conv2d):
                new = LoRAConv2d(child, rank, conv_scale, gated, gate_init, b_init)
            elif isinstance(child, nn.Linear):
                new = LoRALinear(child, rank, linear_scale, gated, gate_init, b_init)
            else:
                continue
            setattr(module, child_name, new)
            wrapped.append(f"{name}.{child_name}" if name else child_name)
    for pname, param in model.named_parameters():
        param.requires_grad_(pname.rsplit(".", 1)[-1] in LORA_KEYS)
    return wrapped


def patch_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA and gate tensors: what a patch file holds."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k.rsplit(".", 1)[-1] in LORA_KEYS}


class LoRAPatching(Bypass):
    name = "lora"
    version = "1"
    paper = "LoRA patching (IEEE SPL 2026, arXiv 2510.03747)"
    kind = "patch"
    trainable = True
    smoke_params = {"image_features": "classifier_features", "semantic_features": "classifier_attributes"}

    @dataclass
    class Params(AdversarialFinetuneSettings):
        rank: Count = 8
        alpha: Positive = 2.0
        scaling: Literal[tuple(SCALINGS)] = "sqrt_rank"
        linear_scaling: Literal["alpha", "rank"] = "alpha"
        gated: bool = True
        gate_init: float = -1.0
        b_init: Literal["kaiming", "zeros"] = "kaiming"
        pgd_reference: Literal["original", "patched"] = "original"
        loss: Literal["mmfa", "pixel"] = "mmfa"
        image_features: Literal[EXTRACTORS] = "resnet50"
        semantic_features: Literal[EXTRACTORS] = "blip"
        image_weight: NonNegative = 0.1
        semantic_weight: NonNegative = 0.1
        warning: bool = False
        warning_text: Annotated[str, MinLen(1)] = "AI"
        warning_area: Annotated[float, Interval(gt=0, le=1)] = 0.05
        warning_strength: Positive = 2.0

    def __init__(self, **params):
        super().__init__(**params)
        self.state: dict[str, torch.Tensor] | None = None

    def _inject(self, model: nn.Module) -> nn.Module:
        p = self.params
        inject_lora(model, p.rank, p.alpha, p.scaling, p.gated, p.gate_init, p.b_init, p.linear_scaling)
        return model

    def fresh_patched(self, generator, seed: int):
        """A copy of `generator` with a newly initialised patch (the original is untouched)."""
        torch.manual_seed(seed)
        return self._inject(copy.deepcopy(generator)).train(False)

    def fit(self, generator, images, conditions, seed, device):
        p = self.params
        original = generator.eval().requires_grad_(False)
        patched = self.fresh_patched(generator, seed).to(device)
        trainable = [q for q in patched.parameters() if q.requires_grad]
        opt = torch.optim.Adam(trainable, p.lr, (p.beta1, p.beta2))
        extractors = [(w, load_extractor(name).to(device)) for w, name in self.feature_terms()]
        loop = FinetuneLoop(images, conditions, p.batch_size, p.epochs, seed, device,
                            "defensive lora patch" if p.warning else "lora patch")
        for step, x, c in loop:
            loop.record(self._train_step(original, patched, opt, x, c, extractors, step_seed(seed, step)))
        self.state = patch_tensors(patched)
        return self.state, loop.info(count_trainable(patched), feature_terms=self.feature_terms())

    def check_ready(self):
        for _, name in self.feature_terms():
            load_extractor(name)

    def feature_terms(self) -> list[tuple[float, str]]:
        """(weight, extractor name) of each MMFA feature term in use."""
        p = self.params
        if p.loss == "pixel":
            return []
        return [(w, name) for w, name in ((p.image_weight, p.image_features), (p.semantic_weight, p.semantic_features))
                if w > 0]

    def _train_step(self, original, patched, opt, x, c, extractors, seed) -> float:
        p = self.params
        with torch.no_grad():
            y = self.intended(original(x, c))
            reference = y if p.pgd_reference == "original" else patched(x, c)
            target_features = [f(y) for _, f in extractors]
        x_adv = adversarial_example(patched, x, c, reference, p, seed)
        loss = 0.0
        for out in (patched(x, c), patched(x_adv, c)):
            loss = loss + F.mse_loss(out, y)
            for (weight, f), target in zip(extractors, target_features):
                loss = loss + weight * F.mse_loss(f(out), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    # --- defensive patching: the outputs it means to produce ----------------------------
    @property
    def defensive(self) -> bool:
        return self.params.warning

    def mark(self, size: int) -> torch.Tensor:
        p = self.params
        return warning_mark(size, p.warning_text, p.warning_area)

    def intended(self, clean: torch.Tensor) -> torch.Tensor:
        if not self.params.warning:
            return clean
        return apply_mark(clean, self.mark(clean.size(-1)), self.params.warning_strength)

    def mark_region(self, size: int) -> torch.Tensor | None:
        return mark_region(self.mark(size)) if self.params.warning else None

    def load_state(self, state, info):
        self.state = state

    def patch(self, generator):
        """A patched copy of `generator` carrying the fitted (or loaded) LoRA tensors."""
        if self.state is None:
            raise ConfigError("lora patch has not been fitted or loaded")
        patched = self._inject(copy.deepcopy(generator))
        expected = patch_tensors(patched)
        mismatched = sorted(k for k in set(expected) | set(self.state)
                            if k not in expected or k not in self.state or expected[k].shape != self.state[k].shape)
        if mismatched:
            raise ConfigError(f"the LoRA patch does not fit this generator with rank {self.params.rank}: "
                              f"{len(mismatched)} mismatching tensors, e.g. {mismatched[0]}")
        patched.load_state_dict(self.state, strict=False)
        return patched.eval().requires_grad_(False)
