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

Training (`train_recipe`, `recipe`): core/trainer.py's recipe (see TrainParams). For
fine-tuning on images without labels (`recipe`, GAT), each image's own attribute of
the edited tag is the reference whose style code is nearest to its own, and the
critic's tag-irrelevant conditions (Male, Young) are 0, i.e. unknown.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError, DataError, WeightsError
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
    build_params,
)
from bench.contract.plugins import Generator

SHIPPED_REFERENCES = Path(__file__).parent / "weights" / "hisd_references.png"
HAIR_COLOUR = {"name": "HairColor", "attributes": ["black", "blond", "brown"]}
OFFICIAL_TAGS = [{"name": "Bangs", "attributes": ["with", "without"]},
                 {"name": "Eyeglasses", "attributes": ["with", "without"]},
                 HAIR_COLOUR]
# Which faces show a tag's attribute (the official preprocessor for CelebA-HQ), as
# required CelebA attribute values; and the attribute the classifier checks for it.
ATTRIBUTE_RULES = {
    ("HairColor", "black"): {"Black_Hair": 1, "Blond_Hair": 0, "Brown_Hair": 0, "Gray_Hair": 0},
    ("HairColor", "blond"): {"Black_Hair": 0, "Blond_Hair": 1, "Brown_Hair": 0, "Gray_Hair": 0},
    ("HairColor", "brown"): {"Black_Hair": 0, "Blond_Hair": 0, "Brown_Hair": 1, "Gray_Hair": 0},
    ("Bangs", "with"): {"Bangs": 1}, ("Bangs", "without"): {"Bangs": 0},
    ("Eyeglasses", "with"): {"Eyeglasses": 1}, ("Eyeglasses", "without"): {"Eyeglasses": 0},
}
CHECKED_ATTRIBUTE = {("HairColor", "black"): ("Black_Hair", 1), ("HairColor", "blond"): ("Blond_Hair", 1),
                     ("HairColor", "brown"): ("Brown_Hair", 1), ("Bangs", "with"): ("Bangs", 1),
                     ("Bangs", "without"): ("Bangs", 0), ("Eyeglasses", "with"): ("Eyeglasses", 1),
                     ("Eyeglasses", "without"): ("Eyeglasses", 0)}
TAG_IRRELEVANT = ["Male", "Young"]  # the official preprocessor's conditions for the discriminator


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
    official_checkpoint = {"file": "checkpoint_256_celeba-hq.pt", "key": "gen_test", "resolution": 256,
                           "source": "imlixinyang/HiSD release (configs/celeba-hq_256.yaml)"}

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
    def recipe(self, resolution: int, **settings) -> "HiSDRecipe":
        """The recipe with the critic of this generator's config (its extractor channels)."""
        params = build_params(self.TrainParams, {"resolution": resolution, **settings}, f"{self.name} recipe")
        return HiSDRecipe(params, self.config)

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

    @classmethod
    def train_recipe(cls, params: "HiSD.TrainParams", faceset, out_dir: Path, device: torch.device,
                     export: Path | None = None, command: str = "") -> "HiSD":
        from bench.toolkit.training import TrainingRun, export_trained, update_ema

        torch.manual_seed(params.seed)
        config = dict(cls.configs[params.config])
        if params.output is not None:
            config["output"] = params.output
        G = cls(**config)
        recipe = HiSDRecipe(params, G.config)
        D = recipe.discriminator(initialise=False)
        for module in (G, D):  # the official order of the random draws
            hisd_init(module)
        # channels_last: ~20% faster convolutions on CPU
        G, D = (m.to(device, memory_format=torch.channels_last) for m in (G, D))
        G_ema = copy.deepcopy(G).requires_grad_(False)
        g_opt, d_opt = recipe.optimisers(G, D)
        train_set = faceset.subset(params.train_start, params.train_stop)
        sampler = TagSamplers(train_set, G.tags, params.batch_size, params.seed)
        run = TrainingRun(out_dir, params.iters, params.checkpoint_every)
        preview_x, preview_refs = preview_faces(faceset, params.train_stop, G.tags[G.edit_index])

        def step(it: int) -> dict:
            tag, attribute, target = sampler.draw_tag_and_attributes()
            x, y = sampler.batch(tag, attribute)
            x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
            losses = recipe.train_iteration(it, G, D, g_opt, d_opt, HiSDBatch(x, x, y, tag, attribute, target))
            update_ema(G_ema, G, params.ema_beta)
            return losses

        def preview(iteration: int) -> None:
            save_reference_grid(G_ema, preview_x.to(device), preview_refs.to(device),
                                run.out_dir / "samples" / f"{iteration:06d}.png")

        started = run.loop({"G": G, "D": D, "G_ema": G_ema}, {"G": g_opt, "D": d_opt}, sampler, f"train {cls.name}",
                           step, preview)
        G_ema = G_ema.to("cpu", memory_format=torch.contiguous_format).eval()
        export_trained(G_ema, export, params, train_set, command, started)
        return G_ema


# ---------------------------------------------------------------------- training pieces
class Discriminator(nn.Module):
    """The official Dis: down-blocks to a pooled feature, then per tag a 1x1 conv on
    [feature, style, tag-irrelevant conditions] giving, per attribute, one logit for
    translated images and one for cycle-translated images."""

    def __init__(self, channels: list[int], style_dim: int, tags: list[dict], irrelevant_dim: int = 2):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, channels[0], 1, 1, 0),
                                  *[DownBlock(channels[i], channels[i + 1], normalise=False)
                                    for i in range(len(channels) - 1)],
                                  nn.AdaptiveAvgPool2d(1))
        self.fcs = nn.ModuleList([nn.Sequential(nn.Conv2d(channels[-1] + style_dim + irrelevant_dim,
                                                          2 * len(t["attributes"]), 1, 1, 0)) for t in tags])

    def forward(self, x, s, y, tag: int, attribute: int | torch.Tensor) -> torch.Tensor:
        """(N, 2): the translated-head and cycle-head logits of `attribute` (one for the
        batch, or (N,) one per image)."""
        f = self.conv(x)
        fsy = torch.cat([f, s.view(*s.shape, 1, 1), y.view(*y.shape, 1, 1)], dim=1)
        logits = self.fcs[tag](fsy).view(x.size(0), 2, -1)
        if isinstance(attribute, int):
            return logits[:, :, attribute]
        return logits[torch.arange(x.size(0), device=x.device), :, attribute]


def hisd_init(module: nn.Module) -> None:
    """The official 'kaiming' init: He-normal (fan in) convs and linears, biases 0.01."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.01)


def _r1(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@dataclass
class HiSDBatch:
    x: torch.Tensor  # clean images: what the reconstructions reproduce
    x_in: torch.Tensor  # what the generator translates and the critic sees as real
    y: torch.Tensor  # tag-irrelevant conditions (Male, Young in {-1, 1}; 0: unknown)
    tag: int
    attribute: int | torch.Tensor  # the images' own attribute of the tag (one, or one each)
    target: int  # the attribute to translate to


@torch.no_grad()
def nearest_reference(G: HiSD, x: torch.Tensor) -> torch.Tensor:
    """(N,) each image's attribute of the edited tag, read as the reference face whose
    style code is nearest to its own."""
    tag = G.edit_index
    references = G.reference_images(torch.arange(len(G.tags[tag]["attributes"])), x[:1])
    return torch.cdist(G.extract(x, tag), G.extract(references, tag)).argmin(1)


class HiSDRecipe(Generator.Recipe):
    """core/trainer.py's recipe: each iteration one generator update (reconstruction,
    self-, latent-guided and cycle translation) then one critic update (hinge, R1),
    both with gradient clipping."""

    def __init__(self, params: HiSD.TrainParams, config: dict):
        self.params, self.config = params, config

    def discriminator(self, initialise: bool = True) -> Discriminator:
        """A new critic; `initialise` applies HiSD's init (train_recipe initialises the
        generator and the critic together, in the official order)."""
        c = self.config
        D = Discriminator(self.params.d_channels or c["extractors"], c["style_dim"], c["tags"])
        if initialise:
            hisd_init(D)
        return D

    def optimisers(self, G, D):
        p = self.params
        g_opt = torch.optim.Adam([
            {"params": [q for n, q in G.named_parameters() if not n.startswith("mappers.")]},
            {"params": G.mappers.parameters(), "lr": p.lr_mappers}],
            lr=p.lr, betas=(p.beta1, p.beta2))
        return g_opt, torch.optim.Adam(D.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))

    def unedited(self, conditions):
        """-1: each image is its own reference (its attribute is estimated in `batch`)."""
        return torch.full((1, conditions.size(1)), -1, dtype=torch.long)

    def batch(self, G, x, x_in, c_org, c_trg) -> HiSDBatch:
        """Fine-tuning images come without labels: their own attribute is the nearest
        reference's, their tag-irrelevant conditions unknown (0)."""
        targets = c_trg.unique()
        if targets.numel() != 1 or int(targets) < 0:
            raise ConfigError(f"the HiSD recipe translates a batch toward one reference, got {targets.tolist()}")
        y = torch.zeros(x.size(0), len(TAG_IRRELEVANT), device=x.device)
        return HiSDBatch(x, x_in, y, G.edit_index, nearest_reference(G, x), int(targets))

    def train_iteration(self, iteration, G, D, g_opt, d_opt, batch) -> dict:
        p = self.params
        D.requires_grad_(False)
        out = self.translations(G, batch)
        loss, logs = self.generator_loss(D, batch, out)
        logs["G/loss"] = self.update(g_opt, loss, clip=(G, p.clip_grad))
        D.requires_grad_(True)
        d_loss = self.update(d_opt, self.discriminator_loss(D, batch, out), clip=(D, p.clip_grad))
        return {**logs, "D/adv": d_loss, "D/loss": d_loss}

    def train_discriminator(self, G, D, d_opt, batch) -> dict:
        with torch.no_grad():
            out = self.translations(G, batch)
        return {"D/loss": self.update(d_opt, self.discriminator_loss(D, batch, out), clip=(D, self.params.clip_grad))}

    @staticmethod
    def translations(G, b: HiSDBatch) -> dict:
        """Reconstruction, self-translation, latent-guided translation and cycle back."""
        e = G.encode(b.x_in)
        x_rec = G.decode(e)
        s = G.extract(b.x_in, b.tag)
        x_slf = G.decode(G.translate(e, s, b.tag))
        s_trg = G.map(torch.randn(b.x.size(0), G.noise_dim, device=b.x.device), b.tag, b.target)
        x_trg = G.decode(G.translate(e, s_trg, b.tag))
        s_trg_rec = G.extract(x_trg, b.tag)
        x_cyc = G.decode(G.translate(G.encode(x_trg), s, b.tag))
        return {"x_rec": x_rec, "s": s, "x_slf": x_slf, "s_trg": s_trg, "x_trg": x_trg, "s_trg_rec": s_trg_rec,
                "x_cyc": x_cyc}

    def generator_loss(self, D, b: HiSDBatch, out: dict):
        p = self.params
        s_real = out["s"] if p.ali else out["s"].detach()
        adv = (D(b.x_in, s_real, b.y, b.tag, b.attribute).mean(0).sum()
               - D(out["x_trg"], out["s_trg"].detach(), b.y, b.tag, b.target)[:, 0].mean()
               - D(out["x_cyc"], out["s"].detach(), b.y, b.tag, b.attribute)[:, 1].mean())
        sty = F.l1_loss(out["s_trg_rec"], out["s_trg"])
        rec = F.l1_loss(out["x_rec"], b.x) + F.l1_loss(out["x_slf"], b.x) + F.l1_loss(out["x_cyc"], b.x)
        loss = p.adv_w * adv + p.sty_w * sty + p.rec_w * rec
        return loss, {"G/adv": adv.item(), "G/sty": sty.item(), "G/rec": rec.item()}

    @staticmethod
    def discriminator_loss(D, b: HiSDBatch, out: dict) -> torch.Tensor:
        """Hinge loss, R1 penalty on both heads for real images."""
        x_real = b.x_in.detach().requires_grad_(True)
        real = D(x_real, out["s"].detach(), b.y, b.tag, b.attribute)
        return (F.relu(1 - real).mean(0).sum() + _r1(real[:, 0], x_real) + _r1(real[:, 1], x_real)
                + F.relu(1 + D(out["x_trg"].detach(), out["s_trg"].detach(), b.y, b.tag, b.target)[:, 0]).mean()
                + F.relu(1 + D(out["x_cyc"].detach(), out["s"].detach(), b.y, b.tag, b.attribute)[:, 1]).mean())


def faces_with(labels: dict[str, torch.Tensor], rule: dict[str, int]) -> torch.Tensor:
    """Indices of faces whose attributes match `rule` (missing attributes are ignored)."""
    keep = None
    for name, value in rule.items():
        if name in labels:
            match = labels[name] == value
            keep = match if keep is None else keep & match
    if keep is None:
        raise DataError(f"no attribute of {sorted(rule)} in the data set's labels")
    return keep.nonzero().view(-1)


def _labels_by_name(faceset, names: list[str]) -> dict[str, torch.Tensor]:
    present = [n for n in names if n in faceset.attribute_names]
    return dict(zip(present, faceset.labels(present).T)) if present else {}


class TagSamplers:
    """One random batch source per (tag, attribute), with the tag-irrelevant conditions
    (Male, Young in {-1, 1}) as labels; resumable like bench.toolkit.training.BatchSampler."""

    def __init__(self, faceset, tags: list[dict], batch_size: int, seed: int):
        from bench.toolkit.training import BatchSampler

        rule_names = sorted({n for rule in ATTRIBUTE_RULES.values() for n in rule})
        labels = _labels_by_name(faceset, rule_names + TAG_IRRELEVANT)
        missing = [n for n in TAG_IRRELEVANT if n not in labels]
        if missing:
            raise DataError(f"HiSD training needs the attributes {missing} in the data set's labels")
        images = faceset.load_uint8(progress=True)
        conditions = torch.stack([labels[n] for n in TAG_IRRELEVANT], 1) * 2 - 1
        self.tags = tags
        self.rng = torch.Generator().manual_seed(seed)
        self.samplers = []
        for t, tag in enumerate(tags):
            row = []
            for a, attribute in enumerate(tag["attributes"]):
                idx = faces_with(labels, ATTRIBUTE_RULES[(tag["name"], attribute)])
                if len(idx) == 0:
                    raise DataError(f"no training faces with {tag['name']}={attribute}")
                row.append(BatchSampler(images[idx.numpy()], conditions[idx], batch_size, seed + 101 * t + a))
            self.samplers.append(row)

    def draw_tag_and_attributes(self) -> tuple[int, int, int]:
        """A tag, a source attribute and a different target attribute, uniformly."""
        tag = int(torch.randint(len(self.tags), (1,), generator=self.rng))
        n = len(self.tags[tag]["attributes"])
        source, target = torch.randperm(n, generator=self.rng)[:2].tolist()
        return tag, source, target

    def batch(self, tag: int, attribute: int):
        return next(self.samplers[tag][attribute])

    def state(self) -> dict:
        return {"rng": self.rng.get_state(),
                **{f"{t}.{a}": s.state() for t, row in enumerate(self.samplers) for a, s in enumerate(row)}}

    def restore(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
        for t, row in enumerate(self.samplers):
            for a, s in enumerate(row):
                s.restore(state[f"{t}.{a}"])


def preview_faces(faceset, start: int, tag: dict, count: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces just after the training split for progress grids: `count` sources and one
    reference per attribute of the tag (the first face showing it)."""
    window = faceset.subset(start, start + 400)
    labels = _labels_by_name(window, sorted({n for r in ATTRIBUTE_RULES.values() for n in r}))
    refs = []
    for attribute in tag["attributes"]:
        idx = faces_with(labels, ATTRIBUTE_RULES[(tag["name"], attribute)])
        if len(idx) == 0:
            raise DataError(f"no face with {tag['name']}={attribute} among images {start}-{start + 400}")
        refs.append(int(idx[0]))
    images = window.load()
    return images[:count], images[refs]


@torch.no_grad()
def save_reference_grid(G: HiSD, x: torch.Tensor, references: torch.Tensor, path: Path) -> None:
    """Rows: sources; columns: the source, then its translation toward each reference
    (the references themselves in the first row)."""
    from bench.toolkit.figures import save_image_grid

    was_training = G.training
    G.eval()
    e = G.encode(x)
    columns = [torch.cat([torch.full_like(x[:1], 1.0), x])]
    for ref in references:
        s = G.extract(ref.unsqueeze(0), G.edit_index).expand(x.size(0), -1)
        out = G.decode(G.translate(e, s, G.edit_index)).clamp(-1, 1)
        columns.append(torch.cat([ref.unsqueeze(0), out]))
    save_image_grid(columns, path)
    G.train(was_training)
