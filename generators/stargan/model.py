"""StarGAN (Choi et al., CVPR 2018): multi-domain face attribute editing.

Architecture and checkpoint layout follow yunjey/stargan (model.py): a conv-down,
residual, deconv-up generator fed with the image and the target label tiled
spatially. The official test code runs the generator in training mode, so its
InstanceNorms use per-image statistics; here they always do (see
:class:`InstanceNormInputStats`), which also keeps inference from touching buffers.

Targets (official `create_labels`): for a hair colour, that colour is set and the
other hair colours cleared; Male and Young are flipped -> 5 targets per image.

Training: `recipe.py` (solver.py's WGAN-GP with an auxiliary attribute classifier and a
cycle reconstruction); its settings, `StarGAN.TrainParams`, are declared here, where
`bench train-generator` and `recipe(**settings)` check them before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # download.sh's two CelebA releases share name and size: the hash tells them apart
    official_checkpoint = {"file": "200000-G.ckpt", "key": None, "resolution": 256,
                           "source": "yunjey/stargan download.sh pretrained-celeba-256x256",
                           "bytes": 33_764_594,
                           "sha256": "399a26023ec159fd3a9ddd04603bcb0fb34b647588a9e4e8acc9bf7da3774d44",
                           "others": {"5d8ee48fa2f5232f4bc0919a9ec795409041181688a1e0f596adec754b3ddd5c":
                                      "the 128 px release (download.sh pretrained-celeba-128x128)"}}
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
    recipe_module = "generators.stargan.recipe"  # recipe_for and train: imported only to train or fine-tune

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

