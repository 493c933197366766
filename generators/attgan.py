"""AttGAN (He et al., TIP 2019): face attribute editing with an encoder-decoder.

Architecture and checkpoint layout follow elvisyjlin/AttGAN-PyTorch (attgan.py, nn.py):
4x4 stride-2 conv blocks (BatchNorm, LeakyReLU 0.01) down, transposed-conv blocks
(BatchNorm, ReLU) up, the attribute vector tiled onto the innermost feature map,
`shortcut_layers` U-Net skips and `inject_layers` re-injections of the attributes.
The official checkpoint is a dict holding the generator under 'G'. BatchNorm layers
run in eval mode at test time (the official test.py calls `eval()`).

Targets (official test.py): each of Bangs, Black_Hair, Blond_Hair, Brown_Hair, Male is
flipped in turn (turning a hair colour on clears the other hair colours, as
`check_attribute_conflict` does); the attribute vector is fed as (a*2-1)*thres_int,
with the flipped attribute at +-test_int.

Training (`train_recipe`, `recipe`): train.py's WGAN-GP with an attribute classifier and
a reconstruction from the same encoding, n_d critic iterations per generator iteration.

Named choice for the quick profile: `enc_norm` / `dec_norm` (options of the official
code: batchnorm, instancenorm, none) are InstanceNorm in the small 64 px config, while
the official checkpoint uses BatchNorm. With BatchNorm the small generator was nearly
immune to an eps 0.05 Disrupting attack (output L2 0.012-0.019, DSR 0, at 3k and 20k
iterations), unlike the official 256 px model (the paper: L2 0.243, DSR 0.952); with
InstanceNorm it reacts like the official one (L2 0.16, DSR 1.00 after 20k iterations,
at the same edit success), so the quick profile can show what a bypass does. `bench run`
records the config it used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError
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

ATTRIBUTES = ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses",
              "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young"]
EDITED = ["Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
HAIR_COLOURS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
# Turning the key attribute on turns these off (official check_attribute_conflict).
CONFLICTS = {"Bald": ["Bangs"], "Receding_Hairline": ["Bangs"], "Bangs": ["Bald", "Receding_Hairline"],
             "Mustache": ["No_Beard"], "No_Beard": ["Mustache"],
             "Straight_Hair": ["Wavy_Hair"], "Wavy_Hair": ["Straight_Hair"],
             **{h: [o for o in HAIR_COLOURS if o != h] for h in HAIR_COLOURS}}


class Block(nn.Module):
    """The official Conv2dBlock / ConvTranspose2dBlock: conv (bias only without a norm),
    optional norm, activation, held in a `layers` Sequential as in the checkpoints."""

    def __init__(self, n_in: int, n_out: int, norm: str, act: str, transposed: bool = False):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers = [conv(n_in, n_out, 4, 2, 1, bias=norm == "none")]
        if norm == "batchnorm":
            layers.append(nn.BatchNorm2d(n_out))
        elif norm == "instancenorm":
            layers.append(nn.InstanceNorm2d(n_out, affine=True))
        elif norm != "none":
            raise ConfigError(f"AttGAN norm must be batchnorm, instancenorm or none, got {norm!r}")
        layers.append({"relu": nn.ReLU(), "lrelu": nn.LeakyReLU(), "tanh": nn.Tanh()}[act])
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class AttGAN(Generator):
    name = "attgan"
    version = "1"
    paper = "He et al., AttGAN, IEEE TIP 2019"
    licence = "architecture after elvisyjlin/AttGAN-PyTorch (MIT); weights: see the weights file"
    configs = {
        # 256_shortcut1_inject0_none_hq (CMUA-Watermark's setting.txt): 43,352,707 parameters
        "official": dict(dim=64, layers=5, max_dim=1024, shortcut_layers=1, inject_layers=0,
                         attributes=ATTRIBUTES, thres_int=0.5, test_int=1.0),
        "quick": dict(dim=24, layers=4, max_dim=1024, shortcut_layers=1, inject_layers=0,
                      attributes=ATTRIBUTES, thres_int=0.5, test_int=1.0,
                      enc_norm="instancenorm", dec_norm="instancenorm"),
    }
    official_checkpoint = {"file": "weights.199.pth", "key": "G", "resolution": 256,
                           "source": "elvisyjlin/AttGAN-PyTorch, experiment 256_shortcut1_inject0_none_hq"}

    def __init__(self, dim: int = 64, layers: int = 5, max_dim: int = 1024, shortcut_layers: int = 1,
                 inject_layers: int = 0, attributes=ATTRIBUTES, thres_int: float = 0.5, test_int: float = 1.0,
                 enc_norm: str = "batchnorm", dec_norm: str = "batchnorm"):
        super().__init__(dim=dim, layers=layers, max_dim=max_dim, shortcut_layers=shortcut_layers,
                         inject_layers=inject_layers, attributes=list(attributes), thres_int=thres_int,
                         test_int=test_int, enc_norm=enc_norm, dec_norm=dec_norm)
        n_attrs = len(attributes)
        self.shortcut_layers = min(shortcut_layers, layers - 1)
        self.inject_layers = min(inject_layers, layers - 1)
        enc, n_in = [], 3
        for i in range(layers):
            n_out = min(dim * 2 ** i, max_dim)
            enc.append(Block(n_in, n_out, enc_norm, "lrelu"))
            n_in = n_out
        self.enc_layers = nn.ModuleList(enc)
        dec, n_in = [], n_in + n_attrs
        for i in range(layers - 1):
            n_out = min(dim * 2 ** (layers - i - 1), max_dim)
            dec.append(Block(n_in, n_out, dec_norm, "relu", transposed=True))
            n_in = n_out + (n_out // 2 if i < self.shortcut_layers else 0) + (n_attrs if i < self.inject_layers else 0)
        dec.append(Block(n_in, 3, "none", "tanh", transposed=True))
        self.dec_layers = nn.ModuleList(dec)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.enc_layers:
            x = layer(x)
            features.append(x)
        return features

    def decode(self, features: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
        def tiled(z):
            return a.to(z.dtype).view(a.size(0), -1, 1, 1).expand(-1, -1, z.size(2), z.size(3))

        z = torch.cat([features[-1], tiled(features[-1])], dim=1)
        for i, layer in enumerate(self.dec_layers):
            z = layer(z)
            if i < self.shortcut_layers:
                z = torch.cat([z, features[len(self.dec_layers) - 2 - i]], dim=1)
            if i < self.inject_layers:
                z = torch.cat([z, tiled(z)], dim=1)
        return z

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), a)

    def feature_module(self) -> nn.Module:
        """The encoder's last layer: the bottleneck the attributes are injected into."""
        return self.enc_layers[-1]

    # ------------------------------------------------------------------ editing contract
    @property
    def attribute_names(self) -> list[str]:
        return self.config["attributes"]

    def target_names(self) -> list[str]:
        return [n for n in EDITED if n in self.attribute_names]

    def flipped_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """N x A labels (0/1) -> (T, N, A) labels with each edited attribute flipped."""
        names = self.attribute_names
        out = []
        for target in self.target_names():
            i = names.index(target)
            c = labels.clone().float()
            c[:, i] = 1 - c[:, i]
            for other in CONFLICTS.get(target, []):
                if other in names:  # only where the flip turned the attribute on
                    c[:, names.index(other)] = torch.where(c[:, i] == 1, 0.0, c[:, names.index(other)])
            out.append(c)
        return torch.stack(out)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(T, N, A) attribute inputs: (a*2-1)*thres_int, the flipped one at +-test_int."""
        flipped = self.flipped_labels(labels)
        scaled = (flipped * 2 - 1) * self.config["thres_int"]
        for t, target in enumerate(self.target_names()):
            i = self.attribute_names.index(target)
            scaled[t, :, i] = (flipped[t, :, i] * 2 - 1) * self.config["test_int"]
        return scaled

    def target_values(self, labels: torch.Tensor) -> torch.Tensor:
        flipped = self.flipped_labels(labels)
        cols = [self.attribute_names.index(t) for t in self.target_names()]
        return torch.stack([flipped[t, :, i] for t, i in enumerate(cols)])

    def unedited_conditions(self, labels: torch.Tensor) -> torch.Tensor:
        return ((labels.float() * 2 - 1) * self.config["thres_int"]).unsqueeze(0)

    # ------------------------------------------------------------------ training
    def recipe(self, resolution: int, **settings) -> "AttGANRecipe":
        """The recipe with a critic of as many layers as the encoder: the official one
        (64 channels, fc 1024) for a generator of the official width, else the quick
        recipe's (32, fc 256: the shipped weights' critic)."""
        official_width = {"d_dim": 64, "d_fc_dim": 1024} if self.config["dim"] >= 64 else {}
        sized = {"resolution": resolution, "layers": self.config["layers"], "thres_int": self.config["thres_int"],
                 **official_width}
        params = build_params(self.TrainParams, {**sized, **settings}, f"{self.name} recipe")
        return AttGANRecipe(params, self.attribute_names, self.target_names())

    @dataclass
    class TrainParams:
        """The AttGAN recipe (train.py defaults: WGAN-GP, n_d 5, lambda 100/10/1) sized for CPU."""
        resolution: Resolution = 64
        dim: Count = 24
        layers: Count = 4
        max_dim: Count = 1024
        shortcut_layers: NonNegativeInt = 1
        inject_layers: NonNegativeInt = 0
        enc_norm: str = "instancenorm"  # official: batchnorm (see the module docstring)
        dec_norm: str = "instancenorm"
        d_dim: Count = 32
        d_fc_dim: Count = 256
        batch_size: Count = 16
        iters: Count = 12000
        lr: Positive = 2e-4
        beta1: AdamBeta = 0.5
        beta2: AdamBeta = 0.999
        n_d: Count = 5              # discriminator steps per generator step
        lambda_rec: NonNegative = 100.0  # lambda_1
        lambda_gcls: NonNegative = 10.0  # lambda_2
        lambda_dcls: NonNegative = 1.0   # lambda_3
        lambda_gp: NonNegative = 10.0
        thres_int: Fraction = 0.5
        decay_fraction: Fraction = 0.25  # lr / 10 for the last part (official: the last 100 of 200 epochs)
        train_start: NonNegativeInt = 0
        train_stop: Count = 27000
        seed: Seed = 1234
        checkpoint_every: Count = 500

    @classmethod
    def train_recipe(cls, params: "AttGAN.TrainParams", faceset, out_dir: Path, device: torch.device,
                     export: Path | None = None, command: str = "") -> "AttGAN":
        from bench.toolkit.figures import save_edit_grid
        from bench.toolkit.training import BatchSampler, TrainingRun, export_trained

        torch.manual_seed(params.seed)
        train_set = faceset.subset(params.train_start, params.train_stop)
        architecture = {k: v for k, v in asdict(params).items() if k in cls.configs["quick"]}
        recipe = AttGANRecipe(params, ATTRIBUTES, EDITED)
        G = cls(**architecture).to(device)
        D = recipe.discriminator().to(device)
        g_opt, d_opt = recipe.optimisers(G, D)
        sampler = BatchSampler(train_set.load_uint8(progress=True), train_set.labels(ATTRIBUTES),
                               params.batch_size, params.seed)
        run = TrainingRun(out_dir, params.iters, params.checkpoint_every)
        fixed = faceset.subset(params.train_stop, params.train_stop + 8)
        fixed_x, fixed_labels = fixed.load(), fixed.labels(ATTRIBUTES)

        def step(it: int) -> dict:
            lr = params.lr * (0.1 if it >= params.iters * (1 - params.decay_fraction) else 1.0)
            for opt in (g_opt, d_opt):
                for group in opt.param_groups:
                    group["lr"] = lr
            x, a = next(sampler)
            x, a = x.to(device), a.to(device)
            b = a[torch.randperm(a.size(0), device=device)]
            a_in, b_in = (a * 2 - 1) * params.thres_int, (b * 2 - 1) * params.thres_int
            G.train()
            return recipe.train_iteration(it, G, D, g_opt, d_opt, AttGANBatch(x, x, a, a_in, b, b_in))

        def preview(iteration: int) -> None:
            save_edit_grid(G.eval(), fixed_x.to(device), fixed_labels.to(device),
                           run.out_dir / "samples" / f"{iteration:06d}.png")

        started = run.loop({"G": G, "D": D}, {"G": g_opt, "D": d_opt}, sampler, f"train {cls.name}", step, preview,
                           shown=("D/adv", "G/rec", "G/cls"))
        G = G.cpu().eval()
        export_trained(G, export, params, train_set, command, started)
        return G


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
    from bench.toolkit.training import gradient_penalty

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
