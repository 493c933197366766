"""A tiny randomly initialised generator to check plugins against in seconds (`bench
validate`), independent of the built-in generators.

It has StarGAN's layout and edits: a conv-down, residual, deconv-up network fed with the
image and the target labels tiled spatially, instance norms on each image's own
statistics; 5 attributes, where a hair-colour target sets its colour and clears the
others and Male and Young are flipped. It also names a feature layer (for defenses and
purifiers that read mid-level features) and has a small training recipe (for bypasses
that fine-tune the whole generator through `Generator.recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.params import AdamBeta, NonNegative, Positive, build_params
from bench.contract.plugins import Generator

ATTRIBUTES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
HAIR_COLOURS = {"Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"}


def tiny_generator(seed: int = 0) -> "TinyGenerator":
    """The tiny generator, initialised from `seed`, frozen, in inference mode."""
    torch.manual_seed(seed)
    return TinyGenerator().eval().requires_grad_(False)


def norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), norm(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), norm(channels))

    def forward(self, x):
        return x + self.main(x)


class TinyGenerator(Generator):
    name = "tiny"
    version = "1"
    paper = "a StarGAN-like generator for contract checks"
    configs = {"tiny": dict(conv_dim=8, repeat_num=1, attributes=ATTRIBUTES)}

    def __init__(self, conv_dim: int = 8, repeat_num: int = 1, attributes=ATTRIBUTES):
        super().__init__(conv_dim=conv_dim, repeat_num=repeat_num, attributes=list(attributes))
        layers = [nn.Conv2d(3 + len(attributes), conv_dim, 7, 1, 3, bias=False), norm(conv_dim), nn.ReLU(inplace=True)]
        ch = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), norm(ch * 2), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), norm(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.Conv2d(ch, 3, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype).view(c.size(0), c.size(1), 1, 1).expand(-1, -1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))

    def feature_module(self) -> nn.Module:
        """The middle residual block (the 9 layers before it: the input conv and 2 downs)."""
        return self.main[9 + max(1, self.config["repeat_num"] // 2) - 1]

    @property
    def attribute_names(self) -> list[str]:
        return self.config["attributes"]

    def target_names(self) -> list[str]:
        return list(self.attribute_names)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """N x A labels (0/1) -> (A, N, A) target labels, one per attribute."""
        hair = [i for i, n in enumerate(self.attribute_names) if n in HAIR_COLOURS]
        out = []
        for i, attr in enumerate(self.attribute_names):
            c = labels.clone().float()
            if attr in HAIR_COLOURS:
                c[:, hair] = 0
                c[:, i] = 1
            else:
                c[:, i] = 1 - c[:, i]
            out.append(c)
        return torch.stack(out)

    def target_values(self, labels: torch.Tensor) -> torch.Tensor:
        targets = self.targets(labels)
        return torch.stack([targets[t, :, t] for t in range(targets.size(0))])

    def unedited_conditions(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.float().unsqueeze(0)

    @dataclass
    class TrainParams:
        """The tiny recipe's settings (`recipe(**settings)` overrides them)."""
        lr: Positive = 1e-4
        beta1: AdamBeta = 0.5
        beta2: AdamBeta = 0.999
        lambda_cls: NonNegative = 1.0
        lambda_rec: NonNegative = 10.0

    def recipe(self, resolution: int, **settings) -> TinyRecipe:
        return TinyRecipe(build_params(self.TrainParams, settings, f"{self.name} recipe"), self.attribute_names)


class TinyCritic(nn.Module):
    """Two stride-2 convs, then a realness map and attribute logits (any input size)."""

    def __init__(self, c_dim: int, width: int = 8):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.01),
                                  nn.Conv2d(width, width * 2, 4, 2, 1), nn.LeakyReLU(0.01))
        self.src = nn.Conv2d(width * 2, 1, 3, 1, 1)
        self.cls = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width * 2, c_dim, 1))

    def forward(self, x):
        h = self.main(x)
        return self.src(h), self.cls(h).flatten(1)


@dataclass
class TinyBatch:
    x: torch.Tensor  # clean images: what the cycle reconstructs
    x_in: torch.Tensor  # what the generator translates and the critic sees as real
    c_org: torch.Tensor  # the images' own labels
    c_trg: torch.Tensor  # the labels to translate to


class TinyRecipe(Generator.Recipe):
    """A small non-saturating GAN with an attribute classifier and a cycle
    reconstruction: one critic and one generator update per iteration; Adam."""

    def __init__(self, params: TinyGenerator.TrainParams, attributes: list[str]):
        self.params, self.attributes = params, list(attributes)

    def discriminator(self) -> TinyCritic:
        return TinyCritic(len(self.attributes))

    def optimisers(self, G, D):
        p = self.params
        return (torch.optim.Adam(G.parameters(), p.lr, (p.beta1, p.beta2)),
                torch.optim.Adam(D.parameters(), p.lr, (p.beta1, p.beta2)))

    def unedited(self, conditions):
        """A hair-colour target may change every hair colour, any other only its own."""
        hair = {i for i, name in enumerate(self.attributes) if name in HAIR_COLOURS}
        changed = [hair if t in hair else {t} for t in range(len(self.attributes))]
        return self.unedited_from_targets(conditions, changed)

    def batch(self, G, x, x_in, c_org, c_trg) -> TinyBatch:
        return TinyBatch(x, x_in, c_org, c_trg)

    def train_iteration(self, iteration, G, D, g_opt, d_opt, batch) -> dict:
        logs = self.train_discriminator(G, D, d_opt, batch)
        return {**logs, "G/loss": self.update(g_opt, self.generator_loss(G, D, batch))}

    def train_discriminator(self, G, D, d_opt, b: TinyBatch) -> dict:
        with torch.no_grad():
            fake = G(b.x_in, b.c_trg)
        real_src, real_cls = D(b.x_in)
        loss = (F.softplus(-real_src).mean() + F.softplus(D(fake)[0]).mean()
                + self.params.lambda_cls * F.binary_cross_entropy_with_logits(real_cls, b.c_org))
        return {"D/loss": self.update(d_opt, loss)}

    def generator_loss(self, G, D, b: TinyBatch) -> torch.Tensor:
        p = self.params
        fake = G(b.x_in, b.c_trg)
        src, cls = D(fake)
        rec = (b.x - G(fake, b.c_org)).abs().mean()
        return (F.softplus(-src).mean() + p.lambda_cls * F.binary_cross_entropy_with_logits(cls, b.c_trg)
                + p.lambda_rec * rec)
