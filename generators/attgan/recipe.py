"""AttGAN's training recipe: train.py's WGAN-GP with an attribute classifier and a
reconstruction from the same encoding, n_d critic iterations per generator iteration
(the settings: `AttGAN.TrainParams`). `train` trains a generator from scratch (`bench
train-generator attgan`); `AttGANRecipe` is also what fine-tuning of the whole generator
(GAT) reuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.params import build_params
from bench.contract.plugins import Generator
from bench.toolkit.training import BatchSampler, TrainingSetup, edit_grid_preview, gradient_penalty, train_generator

from .model import ATTRIBUTES, CONFLICTS, EDITED, AttGAN, Block


class Discriminators(nn.Module):
    """The official critic + attribute classifier: conv blocks (InstanceNorm, LeakyReLU)
    then two fully connected heads, `fc_adv` (1 output) and `fc_cls` (one per attribute)."""

    def __init__(self, image_size: int, dim: int = 64, layers: int = 5, n_attrs: int = 13,
                 fc_dim: int = 1024, max_dim: int = 1024):
        super().__init__()
        blocks, n_in = [], 3
        for i in range(layers):
            n_out = min(dim * 2 ** i, max_dim)
            blocks.append(Block(n_in, n_out, "instancenorm", "lrelu"))
            n_in = n_out
        self.conv = nn.Sequential(*blocks)
        flat = n_in * (image_size // 2 ** layers) ** 2
        self.fc_adv = nn.Sequential(nn.Linear(flat, fc_dim), nn.LeakyReLU(), nn.Linear(fc_dim, 1))
        self.fc_cls = nn.Sequential(nn.Linear(flat, fc_dim), nn.LeakyReLU(), nn.Linear(fc_dim, n_attrs))

    def forward(self, x):
        h = self.conv(x).flatten(1)
        return self.fc_adv(h), self.fc_cls(h)


def _gradient_penalty(D, real, fake):
    alpha = torch.rand(real.size(0), 1, 1, 1, device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    return gradient_penalty(D(x_hat)[0], x_hat)


@dataclass
class AttGANBatch:
    x: torch.Tensor  # clean images: what the reconstruction reproduces
    x_in: torch.Tensor  # what the generator encodes and the critic sees as real
    a: torch.Tensor  # the images' own attributes (0/1)
    a_in: torch.Tensor  # ... as the generator's input
    b: torch.Tensor  # the attributes to translate to (0/1)
    b_in: torch.Tensor  # ... as the generator's input


class AttGANRecipe(Generator.Recipe):
    """train.py's recipe: n_d critic iterations, then one generator iteration; Adam."""

    def __init__(self, params: AttGAN.TrainParams, attributes: list[str], edited: list[str]):
        self.params, self.attributes, self.edited = params, list(attributes), list(edited)

    def discriminator(self) -> Discriminators:
        p = self.params
        return Discriminators(p.resolution, p.d_dim, p.layers, len(self.attributes), p.d_fc_dim)

    def optimisers(self, G, D):
        p = self.params
        return (torch.optim.Adam(G.parameters(), p.lr, (p.beta1, p.beta2)),
                torch.optim.Adam(D.parameters(), p.lr, (p.beta1, p.beta2)))

    def unedited(self, conditions):
        """A target flips its attribute and may clear the ones it conflicts with."""
        names = self.attributes
        changed = [{names.index(t)} | {names.index(o) for o in CONFLICTS.get(t, []) if o in names}
                   for t in self.edited]
        return self.unedited_from_targets(conditions, changed)

    def batch(self, G, x, x_in, c_org, c_trg) -> AttGANBatch:
        """Attribute inputs are (2a - 1) * intensity, so a = 1 where the input is positive."""
        return AttGANBatch(x, x_in, (c_org > 0).float(), c_org, (c_trg > 0).float(), c_trg)

    def train_iteration(self, iteration, G, D, g_opt, d_opt, batch) -> dict:
        if (iteration + 1) % (self.params.n_d + 1) != 0:
            return self.train_discriminator(G, D, d_opt, batch)
        loss, logs = self.generator_loss(G, D, batch)
        return {**logs, "G/loss": self.update(g_opt, loss)}

    def train_discriminator(self, G, D, d_opt, batch) -> dict:
        loss, logs = self.discriminator_loss(G, D, batch)
        return {**logs, "D/loss": self.update(d_opt, loss)}

    def discriminator_loss(self, G, D, b: AttGANBatch):
        p = self.params
        with torch.no_grad():
            fake = G(b.x_in, b.b_in)
        d_real, dc_real = D(b.x_in)
        d_fake, _ = D(fake)
        adv = d_fake.mean() - d_real.mean()
        gp = _gradient_penalty(D, b.x_in, fake)
        cls = F.binary_cross_entropy_with_logits(dc_real, b.a)
        loss = adv + p.lambda_gp * gp + p.lambda_dcls * cls
        return loss, {"D/adv": adv.item(), "D/gp": gp.item(), "D/cls": cls.item()}

    def generator_loss(self, G, D, b: AttGANBatch):
        p = self.params
        features = G.encode(b.x_in)
        fake = G.decode(features, b.b_in)
        rec = G.decode(features, b.a_in)
        d_fake, dc_fake = D(fake)
        adv = -d_fake.mean()
        cls = F.binary_cross_entropy_with_logits(dc_fake, b.b)
        rec_loss = (rec - b.x).abs().mean()
        loss = adv + p.lambda_gcls * cls + p.lambda_rec * rec_loss
        return loss, {"G/adv": adv.item(), "G/cls": cls.item(), "G/rec": rec_loss.item()}


def recipe_for(G: AttGAN, resolution: int, settings: dict) -> AttGANRecipe:
    """The recipe with a critic of as many layers as the encoder: the official one
    (64 channels, fc 1024) for a generator of the official width, else the quick
    recipe's (32, fc 256: the shipped weights' critic)."""
    official_width = {"d_dim": 64, "d_fc_dim": 1024} if G.config["dim"] >= 64 else {}
    sized = {"resolution": resolution, "layers": G.config["layers"], "thres_int": G.config["thres_int"],
             **official_width}
    params = build_params(G.TrainParams, {**sized, **settings}, f"{G.name} recipe")
    return AttGANRecipe(params, G.attribute_names, G.target_names())


def train(cls: type[AttGAN], params: AttGAN.TrainParams, faceset, out_dir: Path, device: torch.device,
          export: Path | None, command: str) -> AttGAN:
    """An AttGAN trained from scratch on `faceset` (see `AttGAN.train_recipe`)."""

    def set_up(train_set) -> TrainingSetup:
        architecture = {k: v for k, v in asdict(params).items() if k in cls.configs["quick"]}
        recipe = AttGANRecipe(params, ATTRIBUTES, EDITED)
        G = cls(**architecture).to(device)
        D = recipe.discriminator().to(device)
        g_opt, d_opt = recipe.optimisers(G, D)
        sampler = BatchSampler.of_faces(train_set, ATTRIBUTES, params.batch_size, params.seed)
        step = training_step(recipe, G, D, g_opt, d_opt, sampler, device)
        preview = edit_grid_preview(G, faceset, params.train_stop, ATTRIBUTES, device)
        return TrainingSetup({"G": G, "D": D}, {"G": g_opt, "D": d_opt}, sampler, step, preview,
                             shown=("D/adv", "G/rec", "G/cls"))

    return train_generator(cls.name, params, faceset, out_dir, export, command, set_up)


def training_step(recipe: AttGANRecipe, G, D, g_opt, d_opt, sampler: BatchSampler, device: torch.device):
    """One iteration from scratch: the learning rate (a tenth for the last
    `decay_fraction`), a batch, its attributes shuffled across the batch as the targets
    (both fed as (2a - 1) * thres_int), the recipe's updates."""
    p = recipe.params

    def step(it: int) -> dict:
        lr = p.lr * (0.1 if it >= p.iters * (1 - p.decay_fraction) else 1.0)
        for opt in (g_opt, d_opt):
            for group in opt.param_groups:
                group["lr"] = lr
        x, a = next(sampler)
        x, a = x.to(device), a.to(device)
        b = a[torch.randperm(a.size(0), device=device)]
        a_in, b_in = (a * 2 - 1) * p.thres_int, (b * 2 - 1) * p.thres_int
        return recipe.train_iteration(it, G, D, g_opt, d_opt, AttGANBatch(x, x, a, a_in, b, b_in))

    return step
