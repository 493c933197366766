"""StarGAN's training recipe: solver.py's WGAN-GP with an auxiliary attribute classifier
and a cycle reconstruction, n_critic critic steps per generator step (the settings:
`StarGAN.TrainParams`). `train` trains a generator from scratch (`bench
train-generator stargan`); `StarGANRecipe` is also what fine-tuning of the whole
generator (GAT) reuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.params import build_params
from bench.contract.plugins import Generator
from bench.toolkit.training import BatchSampler, TrainingSetup, edit_grid_preview, gradient_penalty, train_generator

from .model import ATTRIBUTES, HAIR_COLOURS, StarGAN


class Discriminator(nn.Module):
    """PatchGAN critic with an auxiliary attribute classifier (official layout)."""

    def __init__(self, image_size: int = 128, conv_dim: int = 64, c_dim: int = 5, repeat_num: int = 6):
        super().__init__()
        layers = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        ch = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            ch *= 2
        self.main = nn.Sequential(*layers)
        kernel = image_size // 2 ** repeat_num
        if kernel < 1:
            raise ValueError(f"image_size {image_size} too small for {repeat_num} down-samplings")
        self.conv1 = nn.Conv2d(ch, 1, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(ch, c_dim, kernel, bias=False)

    def forward(self, x):
        h = self.main(x)
        return self.conv1(h), self.conv2(h).view(x.size(0), -1)


def _classification_loss(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.size(0)


@dataclass
class StarGANBatch:
    x: torch.Tensor  # clean images: what the cycle reconstructs
    x_in: torch.Tensor  # what the generator translates and the critic sees as real
    c_org: torch.Tensor  # the images' own labels
    c_trg: torch.Tensor  # the labels to translate to


class StarGANRecipe(Generator.Recipe):
    """solver.py's recipe: a critic step every iteration, a generator step every
    n_critic-th; Adam for both."""

    def __init__(self, params: StarGAN.TrainParams, attributes: list[str]):
        self.params, self.attributes = params, list(attributes)

    def discriminator(self) -> Discriminator:
        p = self.params
        return Discriminator(p.resolution, p.d_conv_dim, len(self.attributes), p.d_repeat_num)

    def optimisers(self, G, D):
        p = self.params
        return (torch.optim.Adam(G.parameters(), p.lr_g, (p.beta1, p.beta2)),
                torch.optim.Adam(D.parameters(), p.lr_d, (p.beta1, p.beta2)))

    def unedited(self, conditions):
        """Targets are label vectors: a hair-colour target may change every hair colour,
        any other target only its own attribute."""
        hair = {i for i, name in enumerate(self.attributes) if name in HAIR_COLOURS}
        changed = [hair if t in hair else {t} for t in range(len(self.attributes))]
        return self.unedited_from_targets(conditions, changed)

    def batch(self, G, x, x_in, c_org, c_trg) -> StarGANBatch:
        return StarGANBatch(x, x_in, c_org, c_trg)

    def train_iteration(self, iteration, G, D, g_opt, d_opt, batch) -> dict:
        logs = self.train_discriminator(G, D, d_opt, batch)
        if (iteration + 1) % self.params.n_critic == 0:
            loss, g_logs = self.generator_loss(G, D, batch)
            logs.update(g_logs, **{"G/loss": self.update(g_opt, loss)})
        return logs

    def train_discriminator(self, G, D, d_opt, batch) -> dict:
        loss, logs = self.discriminator_loss(G, D, batch)
        return {**logs, "D/loss": self.update(d_opt, loss)}

    def discriminator_loss(self, G, D, b: StarGANBatch):
        p = self.params
        out_src, out_cls = D(b.x_in)
        loss_real = -out_src.mean()
        loss_cls = _classification_loss(out_cls, b.c_org)
        with torch.no_grad():
            fake = G(b.x_in, b.c_trg)
        loss_fake = D(fake)[0].mean()
        alpha = torch.rand(b.x.size(0), 1, 1, 1, device=b.x.device)
        x_hat = (alpha * b.x_in + (1 - alpha) * fake).requires_grad_(True)
        loss_gp = gradient_penalty(D(x_hat)[0], x_hat)
        loss = loss_real + loss_fake + p.lambda_cls * loss_cls + p.lambda_gp * loss_gp
        return loss, {"D/adv": (loss_real + loss_fake).item(), "D/cls": loss_cls.item(), "D/gp": loss_gp.item()}

    def generator_loss(self, G, D, b: StarGANBatch):
        p = self.params
        fake = G(b.x_in, b.c_trg)
        out_src, out_cls = D(fake)
        loss_adv = -out_src.mean()
        loss_cls = _classification_loss(out_cls, b.c_trg)
        loss_rec = (b.x - G(fake, b.c_org)).abs().mean()
        loss = loss_adv + p.lambda_rec * loss_rec + p.lambda_cls * loss_cls
        return loss, {"G/adv": loss_adv.item(), "G/cls": loss_cls.item(), "G/rec": loss_rec.item()}


def recipe_for(G: StarGAN, resolution: int, settings: dict) -> StarGANRecipe:
    """The recipe with a critic as wide as this generator (official 64/64, quick
    32/32) and at most the official 6 down-samplings (5 at 64 px, as trained)."""
    sized = {"resolution": resolution, "conv_dim": G.config["conv_dim"],
             "repeat_num": G.config["repeat_num"], "d_conv_dim": G.config["conv_dim"],
             "d_repeat_num": min(6, int(math.log2(resolution)) - 1)}
    params = build_params(G.TrainParams, {**sized, **settings}, f"{G.name} recipe")
    return StarGANRecipe(params, G.attribute_names)


def train(cls: type[StarGAN], params: StarGAN.TrainParams, faceset, out_dir: Path, device: torch.device,
          export: Path | None, command: str) -> StarGAN:
    """A StarGAN trained from scratch on `faceset` (see `StarGAN.train_recipe`)."""

    def set_up(train_set) -> TrainingSetup:
        recipe = StarGANRecipe(params, ATTRIBUTES)
        G = cls(conv_dim=params.conv_dim, repeat_num=params.repeat_num).to(device)
        D = recipe.discriminator().to(device)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        g_opt, d_opt = recipe.optimisers(G, D)
        sampler = BatchSampler.of_faces(train_set, ATTRIBUTES, params.batch_size, params.seed)
        step = training_step(recipe, G, D, g_opt, d_opt, sampler, device)
        preview = edit_grid_preview(G, faceset, params.train_stop, ATTRIBUTES, device)
        return TrainingSetup({"G": G, "D": D}, {"G": g_opt, "D": d_opt}, sampler, step, preview,
                             shown=("D/adv", "G/rec", "G/cls"))

    return train_generator(cls.name, params, faceset, out_dir, export, command, set_up)


def training_step(recipe: StarGANRecipe, G, D, g_opt, d_opt, sampler: BatchSampler, device: torch.device):
    """One iteration from scratch: the learning rates of the linear decay, a batch, its
    labels shuffled across the batch as the targets, the recipe's updates."""
    p = recipe.params
    decay_start = p.iters * (1 - p.decay_fraction)

    def step(it: int) -> dict:
        frac = max(0.0, (it - decay_start) / max(1.0, p.iters - decay_start))
        for opt, lr in ((g_opt, p.lr_g), (d_opt, p.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * (1 - frac)
        x, c_org = next(sampler)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        c_org = c_org.to(device)
        c_trg = c_org[torch.randperm(c_org.size(0))]
        return recipe.train_iteration(it, G, D, g_opt, d_opt, StarGANBatch(x, x, c_org, c_trg))

    return step
