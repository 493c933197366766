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

Training: `recipe.py` (train.py's WGAN-GP with an attribute classifier and a
reconstruction from the same encoding); its settings, `AttGAN.TrainParams`, are declared
here, where `bench train-generator` and `recipe(**settings)` check them before any
training starts.

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

from dataclasses import dataclass

import torch
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
        # 256_shortcut1_inject0_none (and _hq; CMUA-Watermark's setting.txt): 43,352,707 parameters
        "official": dict(dim=64, layers=5, max_dim=1024, shortcut_layers=1, inject_layers=0,
                         attributes=ATTRIBUTES, thres_int=0.5, test_int=1.0),
        "quick": dict(dim=24, layers=4, max_dim=1024, shortcut_layers=1, inject_layers=0,
                      attributes=ATTRIBUTES, thres_int=0.5, test_int=1.0,
                      enc_norm="instancenorm", dec_norm="instancenorm"),
    }
    # the paper's code loads a bare weights.199.pth; the defenses' code it builds on
    # (CMUA-Watermark) names the experiment 256_shortcut1_inject0_none (CelebA), whose file
    # public repositories host (Git LFS pointer: size, SHA-256). The _hq experiment has the
    # same layout, other training data and no known hash: it loads, unverified
    official_checkpoint = {"file": "weights.199.pth", "key": "G", "resolution": 256,
                           "source": "elvisyjlin/AttGAN-PyTorch, experiment 256_shortcut1_inject0_none",
                           "bytes": 173_452_774,
                           "sha256": "05e1d4cb7fa928f2b8cbeaedd727bdc56c9fe7746b520074e018754c0b37ca33"}

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
    recipe_module = "generators.attgan.recipe"  # recipe_for and train: imported only to train or fine-tune

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

