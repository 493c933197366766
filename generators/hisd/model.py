"""HiSD (Li et al., CVPR 2021): hierarchical style disentanglement for face editing.

Architecture and checkpoint layout follow imlixinyang/HiSD (core/networks.py, `Gen`):
an encoder of residual down-blocks with HiSD's own instance norm, one translator per
tag (residual blocks with AdaIN whose parameters come from a style code, plus a
feature map and a soft mask that blends translated and original features), a decoder
of residual up-blocks, a style extractor (reference-guided) and mappers (latent-guided).
The official checkpoint holds the moving-average generator under 'gen_test'.

Edits, as in the paper's experiments: the HairColor tag guided by one reference image
per colour (black, blond, brown) -> 3 targets per image. A condition is the index of
the reference to use (the references are part of the generator, so defenses perturb
only the source image); index -1 uses the image itself as its reference (HiSD's
self-translation), which is the no-edit control.

Named choices where the official code leaves something open:
- the official decoder ends in a 1x1 conv without tanh; its outputs are clamped to
  [-1, 1], the range every image of the benchmark lives in (`output="clamp"`). The
  quick config ends in tanh instead (`output="tanh"`, no parameters), which bounds
  what the small generator can output while it trains;
- the three reference images are synthetic demo faces shipped with the project
  (`weights/hisd_references.png`, one per colour, chosen by the attribute classifier),
  resized to the input size; `references=<png>` in the config uses others (a strip
  of square faces side by side, in the order of the tag's attributes).

Training: `recipe.py` (core/trainer.py's recipe); its settings, `HiSD.TrainParams`, are
declared here, where `bench train-generator` and `recipe(**settings)` check them before
any training starts. The reference faces are picked by `python -m
generators.hisd.references` (`references.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError, WeightsError
from bench.contract.io import tensors_sha256
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

SHIPPED_REFERENCES = Path(__file__).parent / "weights" / "hisd_references.png"
HAIR_COLOUR = {"name": "HairColor", "attributes": ["black", "blond", "brown"]}
OFFICIAL_TAGS = [{"name": "Bangs", "attributes": ["with", "without"]},
                 {"name": "Eyeglasses", "attributes": ["with", "without"]},
                 HAIR_COLOUR]
# The CelebA attribute (and value) the attribute classifier checks for a tag's attribute.
CHECKED_ATTRIBUTE = {("HairColor", "black"): ("Black_Hair", 1), ("HairColor", "blond"): ("Blond_Hair", 1),
                     ("HairColor", "brown"): ("Brown_Hair", 1), ("Bangs", "with"): ("Bangs", 1),
                     ("Bangs", "without"): ("Bangs", 0), ("Eyeglasses", "with"): ("Eyeglasses", 1),
                     ("Eyeglasses", "without"): ("Eyeglasses", 0)}


# ---------------------------------------------------------------------- building blocks
def _instance_normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """(x - mean) / (unbiased std + eps) per sample and channel of (N, C, H, W), as HiSD does."""
    centred = x - x.mean((-2, -1), keepdim=True)
    # two passes rather than torch.std_mean: 1.5x faster here, forward and backward
    std = (centred.square().sum((-2, -1), keepdim=True) / (x.shape[-2] * x.shape[-1] - 1)).sqrt()
    return centred * (std + eps).reciprocal()  # one small reciprocal, then multiplications


class InstanceNorm(nn.Module):
    """HiSD's InstanceNorm2d: weight and bias of shape [1, C, 1]."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x):
        return _instance_normalise(x, self.eps) * self.weight.unsqueeze(-1) + self.bias.unsqueeze(-1)


def adain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance norm with per-sample (N, C) weight and bias (no stored parameters)."""
    return _instance_normalise(x, eps) * weight[..., None, None] + bias[..., None, None]


SQRT_HALF = 1 / math.sqrt(2)  # residual sums are scaled by it (multiplying beats dividing)


def _leaky(x):
    return F.leaky_relu(x, 0.2)


class DownBlock(nn.Module):
    """Residual block halving the size (average pooling), optionally with instance norms."""

    def __init__(self, n_in: int, n_out: int, normalise: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(n_in, n_out, 3, 1, 1)
        if normalise:
            self.in1, self.in2 = InstanceNorm(n_in), InstanceNorm(n_in)
        self.normalise = normalise
        self.sc = nn.Conv2d(n_in, n_out, 1, 1, 0, bias=False)

    def forward(self, x):
        norm1, norm2 = (self.in1, self.in2) if self.normalise else (nn.Identity(), nn.Identity())
        out = self.conv2(_leaky(norm2(F.avg_pool2d(self.conv1(_leaky(norm1(x))), 2))))
        return (F.avg_pool2d(self.sc(x), 2) + out) * SQRT_HALF


class UpBlock(nn.Module):
    """Residual block doubling the size (nearest upsampling) with instance norms."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(n_in, n_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, 1, 1)
        self.in1, self.in2 = InstanceNorm(n_in), InstanceNorm(n_out)
        self.sc = nn.Conv2d(n_in, n_out, 1, 1, 0, bias=False)

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        out = self.conv2(_leaky(self.in2(self.conv1(up(_leaky(self.in1(x)))))))
        return (up(self.sc(x)) + out) * SQRT_HALF


class MiddleBlock(nn.Module):
    """Residual block with two AdaIN layers fed by the style: params (N, 2*n_in + 2*n_out),
    laid out per AdaIN as bias then weight - 1 (the official assign_adain_params)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.conv1 = nn.Conv2d(n_in, n_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(n_out, n_out, 3, 1, 1)
        self.sc = nn.Conv2d(n_in, n_out, 1, 1, 0, bias=False)

    @property
    def num_adain_params(self) -> int:
        return 2 * (self.n_in + self.n_out)

    def forward(self, x, params):
        b1, w1, b2, w2 = params.split([self.n_in, self.n_in, self.n_out, self.n_out], dim=1)
        out = self.conv2(_leaky(adain(self.conv1(_leaky(adain(x, w1 + 1, b1))), w2 + 1, b2)))
        return (self.sc(x) + out) * SQRT_HALF


class LinearBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.linear(F.relu(x))


class Extractors(nn.Module):
    """Style extractor shared by all tags: one style_dim slice of its output per tag."""

    def __init__(self, channels: list[int], style_dim: int, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.model = nn.Sequential(
            nn.Conv2d(3, channels[0], 1, 1, 0),
            *[DownBlock(channels[i], channels[i + 1], normalise=False) for i in range(len(channels) - 1)],
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels[-1], style_dim * num_tags, 1, 1, 0))

    def forward(self, x, tag: int):
        return self.model(x).view(x.size(0), self.num_tags, -1)[:, tag]


class Translator(nn.Module):
    def __init__(self, channels: list[int], encoded: int, style_dim: int):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(encoded, channels[0], 1, 1, 0),
                                   *[MiddleBlock(channels[i], channels[i + 1]) for i in range(len(channels) - 1)])
        self.style_to_params = nn.Linear(style_dim, sum(b.num_adain_params for b in self.model[1:]))
        self.features = nn.Sequential(nn.Conv2d(channels[-1], encoded, 1, 1, 0))
        self.masks = nn.Sequential(nn.Conv2d(channels[-1], encoded, 1, 1, 0), nn.Sigmoid())

    def forward(self, e, s):
        params = self.style_to_params(s).split([b.num_adain_params for b in self.model[1:]], dim=1)
        mid = self.model[0](e)
        for block, p in zip(self.model[1:], params):
            mid = block(mid, p)
        m = self.masks(mid)
        return self.features(mid) * m + e * (1 - m)


class Mapper(nn.Module):
    def __init__(self, noise_dim: int, pre: list[int], post: list[int], style_dim: int, num_attributes: int):
        super().__init__()
        self.pre_model = nn.Sequential(nn.Linear(noise_dim, pre[0]),
                                       *[LinearBlock(pre[i], pre[i + 1]) for i in range(len(pre) - 1)])
        self.post_models = nn.ModuleList([
            nn.Sequential(*[LinearBlock(post[i], post[i + 1]) for i in range(len(post) - 1)],
                          nn.Linear(post[-1], style_dim))
            for _ in range(num_attributes)])

    def forward(self, z, attribute: int):
        return self.post_models[attribute](self.pre_model(z))


# ---------------------------------------------------------------------- the generator
def _read_reference_strip(path: Path, count: int) -> torch.Tensor:
    """A PNG of `count` square faces side by side -> (count, 3, S, S) in [-1, 1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise WeightsError(f"cannot read HiSD reference images {path}: {err}") from None
    strip = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 127.5 - 1
    size = strip.size(1)
    if strip.size(2) != size * count:
        raise WeightsError(f"{path} must hold {count} square faces side by side "
                           f"({size * count}x{size} px), got {strip.size(2)}x{size}")
    return torch.stack(strip.split(size, dim=2))


@torch.no_grad()
def pick_references(images: torch.Tensor, classifier, tag: dict = HAIR_COLOUR) -> torch.Tensor:
    """One face per attribute of `tag`: the one the attribute classifier is surest
    shows it (its probability minus the highest of the tag's other attributes)."""
    checked = [CHECKED_ATTRIBUTE[(tag["name"], a)] for a in tag["attributes"]]
    probs = classifier.predict(images)
    columns = [classifier.attribute_names.index(name) for name, _ in checked]
    scores = torch.stack([probs[:, c] if v else 1 - probs[:, c] for c, (_, v) in zip(columns, checked)], 1)
    chosen = []
    for t in range(len(checked)):
        others = torch.cat([scores[:, :t], scores[:, t + 1:]], 1).max(1).values
        chosen.append(int((scores[:, t] - others).argmax()))
    return images[chosen]


def save_reference_strip(references: torch.Tensor, path: Path) -> None:
    """(T, 3, S, S) in [-1, 1] -> one PNG with the faces side by side."""
    from PIL import Image

    from bench.contract.io import atomic_write
    from bench.toolkit.demo_faces import to_uint8

    strip = to_uint8(torch.cat(list(references), dim=2).unsqueeze(0))[0].numpy()
    atomic_write(path, lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))


class HiSD(Generator):
    name = "hisd"
    version = "1"
    paper = "Li et al., HiSD, CVPR 2021"
    licence = "architecture after imlixinyang/HiSD (CC BY-NC-SA 4.0); weights: see the weights file"
    configs = {
        # configs/celeba-hq_256.yaml: 19,043,939 parameters
        "official": dict(style_dim=256, noise_dim=32, encoder=[64, 128, 256], decoder=[256, 128, 64],
                         translators=[64] * 8, extractors=[32, 64, 128, 256, 512, 512, 512],
                         mappers_pre=[256, 256, 256], mappers_post=[256, 256, 256], tags=OFFICIAL_TAGS),
        # 64 px, one tag: 392,499 parameters (~0.4 s per training step on 2 CPU cores)
        "quick": dict(style_dim=64, noise_dim=16, encoder=[16, 32, 64], decoder=[64, 32, 16],
                      translators=[32] * 4, extractors=[16, 32, 64, 64, 64],
                      mappers_pre=[64, 64], mappers_post=[64, 64], tags=[HAIR_COLOUR], output="tanh"),
    }
    # the paper's code (and CMUA-Watermark's) loads the training snapshot gen_00600000.pt,
    # whose hash a hosted Git LFS pointer gives; HiSD's own release is named
    # checkpoint_256_celeba-hq.pt (same keys, no known hash: it loads, unverified)
    official_checkpoint = {"file": "gen_00600000.pt", "key": "gen_test", "resolution": 256,
                           "source": "imlixinyang/HiSD, configs/celeba-hq_256.yaml, the 600,000-iteration snapshot",
                           "bytes": 152_476_951,
                           "sha256": "39e7b8dcf4f8eb4fc3e1a07b1334b4eb7c83611c179574e7b9c4480c3bc36a8e",
                           "alternatives": ["checkpoint_256_celeba-hq.pt"]}

    def __init__(self, style_dim: int = 256, noise_dim: int = 32, encoder=(64, 128, 256),
                 decoder=(256, 128, 64), translators=(64,) * 8, extractors=(32, 64, 128, 256, 512, 512, 512),
                 mappers_pre=(256, 256, 256), mappers_post=(256, 256, 256), tags=OFFICIAL_TAGS,
                 edit_tag: str = "HairColor", references: str = "shipped", output: str = "clamp"):
        super().__init__(style_dim=style_dim, noise_dim=noise_dim, encoder=list(encoder), decoder=list(decoder),
                         translators=list(translators), extractors=list(extractors),
                         mappers_pre=list(mappers_pre), mappers_post=list(mappers_post),
                         tags=[dict(t) for t in tags], edit_tag=edit_tag, references=references, output=output)
        names = [t["name"] for t in tags]
        if edit_tag not in names:
            raise ConfigError(f"HiSD edit_tag {edit_tag!r} is not one of its tags {names}")
        if output not in ("clamp", "tanh"):
            raise ConfigError(f"HiSD output must be 'clamp' or 'tanh', got {output!r}")
        if encoder[-1] != decoder[0]:
            raise ConfigError("HiSD needs encoder[-1] == decoder[0] (the translators work in between)")
        self.style_dim, self.noise_dim, self.tags = style_dim, noise_dim, self.config["tags"]
        self.edit_index = names.index(edit_tag)
        self.encoder = nn.Sequential(nn.Conv2d(3, encoder[0], 1, 1, 0),
                                     *[DownBlock(encoder[i], encoder[i + 1], normalise=True)
                                       for i in range(len(encoder) - 1)])
        self.decoder = nn.Sequential(*[UpBlock(decoder[i], decoder[i + 1]) for i in range(len(decoder) - 1)],
                                     nn.Conv2d(decoder[-1], 3, 1, 1, 0))
        self.extractors = Extractors(list(extractors), style_dim, len(tags))
        self.translators = nn.ModuleList([Translator(list(translators), encoder[-1], style_dim) for _ in tags])
        self.mappers = nn.ModuleList([Mapper(noise_dim, list(mappers_pre), list(mappers_post), style_dim,
                                             len(t["attributes"])) for t in tags])
        # Read when first needed; not in the state dict (the official layout has no
        # buffers) but part of weight_hash, since the edits depend on them.
        self._references: torch.Tensor | None = None

    @property
    def references(self) -> torch.Tensor:
        """(T, 3, S, S) in [-1, 1]: one reference face per attribute of the edited tag."""
        if self._references is None:
            path = SHIPPED_REFERENCES if self.config["references"] == "shipped" else Path(self.config["references"])
            if not path.exists():
                raise WeightsError(f"HiSD reference images not found at {path}")
            self._references = _read_reference_strip(path, len(self.tags[self.edit_index]["attributes"]))
        return self._references

    def set_references(self, images: torch.Tensor) -> None:
        """Use other reference faces: (T, 3, S, S) in [-1, 1], one per attribute of the tag."""
        count = len(self.tags[self.edit_index]["attributes"])
        if images.dim() != 4 or images.shape[:2] != (count, 3):
            raise ConfigError(f"HiSD needs {count} RGB references (T, 3, S, S), got {tuple(images.shape)}")
        self._references = images.detach().float().cpu().clone()

    # --- the official interface
    def encode(self, x):
        return self.encoder(x)

    def decode(self, e):
        x = self.decoder(e)
        return torch.tanh(x) if self.config["output"] == "tanh" else x

    def extract(self, x, tag: int):
        return self.extractors(x, tag)

    def map(self, z, tag: int, attribute: int):
        return self.mappers[tag](z, attribute)

    def translate(self, e, s, tag: int):
        return self.translators[tag](e, s)

    # --- the benchmark's interface
    def reference_images(self, index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reference for each sample: references[index], or x itself where index is -1."""
        index = index.long().view(-1).to(x.device)
        refs = self.references.to(x.device, x.dtype)
        if refs.shape[-2:] != x.shape[-2:]:
            refs = F.interpolate(refs, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        chosen = refs[index.clamp(min=0)]
        return torch.where((index < 0).view(-1, 1, 1, 1), x, chosen)

    def feature_module(self) -> nn.Module:
        """The encoder (its output is what ID-Guard distorts for HiSD)."""
        return self.encoder

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # channels_last: its convolutions run about 1.5x faster on a CPU (`bench perf`)
        x = x.contiguous(memory_format=torch.channels_last)
        s = self.extract(self.reference_images(c, x), self.edit_index)
        out = self.decode(self.translate(self.encode(x), s, self.edit_index)).clamp(-1, 1)  # no-op after tanh
        return out.contiguous()

    def weight_hash(self) -> str:
        return tensors_sha256({**self.state_dict(), "__references__": self.references})

    @property
    def attribute_names(self) -> list[str]:
        return []  # the edits need no labels: each target is a reference image

    def _edit_attributes(self) -> list[tuple[str, int]]:
        tag = self.tags[self.edit_index]
        return [CHECKED_ATTRIBUTE.get((tag["name"], a), (f"{tag['name']}={a}", 1)) for a in tag["attributes"]]

    def target_names(self) -> list[str]:
        return [name for name, _ in self._edit_attributes()]

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """(T, N) reference indices: target t uses reference t for every image."""
        n = labels.size(0)
        return torch.arange(len(self._edit_attributes())).view(-1, 1).expand(-1, n).clone()

    def target_values(self, labels: torch.Tensor) -> torch.Tensor:
        values = torch.tensor([float(v) for _, v in self._edit_attributes()])
        return values.view(-1, 1).expand(-1, labels.size(0)).clone()

    def unedited_conditions(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full((1, labels.size(0)), -1, dtype=torch.long)

    # ------------------------------------------------------------------ training
    recipe_module = "generators.hisd.recipe"  # recipe_for and train: imported only to train or fine-tune

    @dataclass
    class TrainParams:
        """The HiSD recipe (core/trainer.py, celeba-hq_256.yaml: hinge loss with R1 on real
        images, adv/style/reconstruction weights 1, Adam betas (0, 0.99), gradient clipping
        at 100, moving average 0.99) sized for CPU. Deviations, all named: one tag
        (HairColor) in the quick config; learning rates 2e-4 for all parts (official
        1e-4, and 1e-6 for the mappers, meant for 600k iterations); `ali=False`: the
        styles of real images enter the discriminator detached, as in the paper (the
        public code's later "ALI" term lets the generator fool D through them; with the
        small quick config that term inflated the styles without bound and training
        diverged within 100 iterations, at either learning rate); no colour jitter (it
        shifts hue, which is the attribute being learned)."""
        resolution: Resolution = 64
        config: str = "quick"
        d_channels: list[Count] | None = None  # discriminator channels; None: the config's extractor channels
        output: Literal["tanh", "clamp"] | None = None  # "clamp" is the official; None: the config's
        batch_size: Count = 8
        iters: Count = 8000
        lr: Positive = 2e-4
        lr_mappers: Positive = 2e-4
        beta1: AdamBeta = 0.0
        beta2: AdamBeta = 0.99
        adv_w: NonNegative = 1.0
        sty_w: NonNegative = 1.0
        rec_w: NonNegative = 1.0
        ali: bool = False  # official code True: the generator also fools D through real images' styles
        ema_beta: Fraction = 0.99
        clip_grad: Positive = 100.0
        train_start: NonNegativeInt = 0
        train_stop: Count = 27000
        seed: Seed = 1234
        checkpoint_every: Count = 500

