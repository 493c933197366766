"""StarGAN (Choi et al., CVPR 2018): multi-domain face attribute editing.

Architecture and checkpoint layout follow yunjey/stargan (model.py): a conv-down,
residual, deconv-up generator fed with the image and the target label tiled
spatially. The official test code runs the generator in training mode, so its
InstanceNorms use per-image statistics; here they always do (see
:class:`InstanceNormInputStats`), which also keeps inference from touching buffers.

Targets (official `create_labels`): for a hair colour, that colour is set and the
other hair colours cleared; Male and Young are flipped -> 5 targets per image.

Training (`train_recipe`, `recipe`): solver.py's WGAN-GP with an auxiliary attribute
classifier and a cycle reconstruction, n_critic critic steps per generator step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.params import (
    AdamBeta,
    Count,
    Fraction,
    NonNegative,
    NonNegativeInt,
    Positive,
    Resolution,
    Seed,
    build_params,
)
from bench.contract.plugins import Generator

ATTRIBUTES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
HAIR_COLOURS = {"Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"}


class InstanceNormInputStats(nn.InstanceNorm2d):
    """InstanceNorm2d with the official layout (affine, running stats kept) that always
    normalises with the input's own statistics, as the official test code does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def norm(channels: int) -> nn.Module:
    return InstanceNormInputStats(channels, affine=True, track_running_stats=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), norm(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), norm(channels))

    def forward(self, x):
        return x + self.main(x)


class StarGAN(Generator):
    name = "stargan"
    version = "1"
    paper = "Choi et al., StarGAN, CVPR 2018"
    licence = "architecture after yunjey/stargan (MIT); weights: see the weights file"
    configs = {
        "official": dict(conv_dim=64, repeat_num=6, attributes=ATTRIBUTES),
        "quick": dict(conv_dim=32, repeat_num=3, attributes=ATTRIBUTES),
    }
    official_checkpoint = {"file": "200000-G.ckpt", "key": None, "resolution": 256,
                           "source": "yunjey/stargan download.sh pretrained-celeba-256x256"}
    # Checkpoints from PyTorch 0.4 predate this buffer; current PyTorch fills it in.
    optional_state_keys = ("num_batches_tracked",)

    def __init__(self, conv_dim: int = 64, repeat_num: int = 6, attributes=ATTRIBUTES):
        super().__init__(conv_dim=conv_dim, repeat_num=repeat_num, attributes=list(attributes))
        c_dim = len(attributes)
        layers = [nn.Conv2d(3 + c_dim, conv_dim, 7, 1, 3, bias=False), norm(conv_dim), nn.ReLU(inplace=True)]
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
        """After half of the residual blocks (the 3rd of 6 in the official model, as ID-Guard)."""
        return self.main[9 + max(1, self.config["repeat_num"] // 2) - 1]

    @property
    def attribute_names(self) -> list[str]:
        return self.config["attributes"]

    def target_names(self) -> list[str]:
        return list(self.attribute_names)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """N x A labels (0/1) -> (A, N, A) target labels, one per attribute."""
        names = self.attribute_names
        hair = [i for i, n in enumerate(names) if n in HAIR_COLOURS]
        out = []
        for i, attr in enumerate(names):
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

    # ------------------------------------------------------------------ training
    def recipe(self, resolution: int, **settings) -> "StarGANRecipe":
        """The recipe with a critic as wide as this generator (official 64/64, quick
        32/32) and at most the official 6 down-samplings (5 at 64 px, as trained)."""
        sized = {"resolution": resolution, "conv_dim": self.config["conv_dim"],
                 "repeat_num": self.config["repeat_num"], "d_conv_dim": self.config["conv_dim"],
                 "d_repeat_num": min(6, int(math.log2(resolution)) - 1)}
        params = build_params(self.TrainParams, {**sized, **settings}, f"{self.name} recipe")
        return StarGANRecipe(params, self.attribute_names)

    @dataclass
    class TrainParams:
        """The StarGAN recipe (solver.py defaults) with sizes for small CPU runs."""
        resolution: Resolution = 64
        conv_dim: Count = 32
        repeat_num: Count = 3
        d_conv_dim: Count = 32
        d_repeat_num: Count = 5  # final critic map of resolution / 2**5 = 2 px at 64 px
        batch_size: Count = 16
        iters: Count = 12000
        lr_g: Positive = 1e-4
        lr_d: Positive = 1e-4
        beta1: AdamBeta = 0.5
        beta2: AdamBeta = 0.999
        n_critic: Count = 5
        lambda_cls: NonNegative = 1.0
        lambda_rec: NonNegative = 10.0
        lambda_gp: NonNegative = 10.0
        decay_fraction: Fraction = 0.5  # linear lr decay over the last half (official: 100k of 200k)
        train_start: NonNegativeInt = 0
        train_stop: Count = 27000
        seed: Seed = 1234
        checkpoint_every: Count = 500

    @classmethod
    def train_recipe(cls, params: "StarGAN.TrainParams", faceset, out_dir: Path, device: torch.device,
              export: Path | None = None, command: str = "") -> "StarGAN":
        from bench.toolkit.figures import save_edit_grid
        from bench.toolkit.training import BatchSampler, TrainingRun, export_trained

        torch.manual_seed(params.seed)
        train_set = faceset.subset(params.train_start, params.train_stop)
        recipe = StarGANRecipe(params, ATTRIBUTES)
        G = cls(conv_dim=params.conv_dim, repeat_num=params.repeat_num).to(device)
        D = recipe.discriminator().to(device)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        g_opt, d_opt = recipe.optimisers(G, D)
        sampler = BatchSampler(train_set.load_uint8(progress=True), train_set.labels(ATTRIBUTES),
                               params.batch_size, params.seed)
        run = TrainingRun(out_dir, params.iters, params.checkpoint_every)
        fixed = faceset.subset(params.train_stop, params.train_stop + 8)
        fixed_x, fixed_labels = fixed.load(), fixed.labels(ATTRIBUTES)
        decay_start = params.iters * (1 - params.decay_fraction)

        def step(it: int) -> dict:
            frac = max(0.0, (it - decay_start) / max(1.0, params.iters - decay_start))
            for opt, lr in ((g_opt, params.lr_g), (d_opt, params.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * (1 - frac)
            x, c_org = next(sampler)
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            c_org = c_org.to(device)
            c_trg = c_org[torch.randperm(c_org.size(0))]
            return recipe.train_iteration(it, G, D, g_opt, d_opt, StarGANBatch(x, x, c_org, c_trg))

        def preview(iteration: int) -> None:
            save_edit_grid(G.eval(), fixed_x.to(device), fixed_labels.to(device),
                           run.out_dir / "samples" / f"{iteration:06d}.png")
            G.train()

        started = run.loop({"G": G, "D": D}, {"G": g_opt, "D": d_opt}, sampler, f"train {cls.name}", step, preview,
                           shown=("D/adv", "G/rec", "G/cls"))
        G = G.to(memory_format=torch.contiguous_format).cpu().eval()
        export_trained(G, export, params, train_set, command, started)
        return G


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
        from bench.toolkit.training import gradient_penalty

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
