"""HiSD's training recipe: core/trainer.py's (the settings and the deviations from it:
`HiSD.TrainParams`). `train` trains a generator from scratch (`bench train-generator
hisd`); `HiSDRecipe` is also what fine-tuning of the whole generator (GAT) reuses. For
fine-tuning on images without labels, each image's own attribute of the edited tag is
the reference whose style code is nearest to its own, and the critic's tag-irrelevant
conditions (Male, Young) are 0, i.e. unknown.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError, DataError
from bench.contract.params import build_params
from bench.contract.plugins import Generator
from bench.toolkit.training import BatchSampler, TrainingSetup, train_generator, update_ema

from .model import DownBlock, HiSD

# Which faces show a tag's attribute (the official preprocessor for CelebA-HQ), as
# required CelebA attribute values.
ATTRIBUTE_RULES = {
    ("HairColor", "black"): {"Black_Hair": 1, "Blond_Hair": 0, "Brown_Hair": 0, "Gray_Hair": 0},
    ("HairColor", "blond"): {"Black_Hair": 0, "Blond_Hair": 1, "Brown_Hair": 0, "Gray_Hair": 0},
    ("HairColor", "brown"): {"Black_Hair": 0, "Blond_Hair": 0, "Brown_Hair": 1, "Gray_Hair": 0},
    ("Bangs", "with"): {"Bangs": 1}, ("Bangs", "without"): {"Bangs": 0},
    ("Eyeglasses", "with"): {"Eyeglasses": 1}, ("Eyeglasses", "without"): {"Eyeglasses": 0},
}
TAG_IRRELEVANT = ["Male", "Young"]  # the official preprocessor's conditions for the discriminator


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


def recipe_for(G: HiSD, resolution: int, settings: dict) -> HiSDRecipe:
    """The recipe with the critic of this generator's config (its extractor channels)."""
    params = build_params(G.TrainParams, {"resolution": resolution, **settings}, f"{G.name} recipe")
    return HiSDRecipe(params, G.config)


def train(cls: type[HiSD], params: HiSD.TrainParams, faceset, out_dir: Path, device: torch.device,
          export: Path | None, command: str) -> HiSD:
    """A HiSD trained from scratch on `faceset` (see `HiSD.train_recipe`); the exported
    generator is the moving average."""

    def set_up(train_set) -> TrainingSetup:
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
        sampler = TagSamplers(train_set, G.tags, params.batch_size, params.seed)
        step = training_step(recipe, G, D, G_ema, g_opt, d_opt, sampler, device)
        preview_x, preview_refs = preview_faces(faceset, params.train_stop, G.tags[G.edit_index])

        def preview(path: Path) -> None:
            save_reference_grid(G_ema, preview_x.to(device), preview_refs.to(device), path)

        return TrainingSetup({"G": G, "D": D, "G_ema": G_ema}, {"G": g_opt, "D": d_opt}, sampler, step, preview,
                             trained="G_ema")

    return train_generator(cls.name, params, faceset, out_dir, export, command, set_up)


def training_step(recipe: HiSDRecipe, G, D, G_ema, g_opt, d_opt, sampler: TagSamplers, device: torch.device):
    """One iteration from scratch: a tag, a source and a target attribute, a batch of
    faces with the source attribute, the recipe's updates, then the moving average."""

    def step(it: int) -> dict:
        tag, attribute, target = sampler.draw_tag_and_attributes()
        x, y = sampler.batch(tag, attribute)
        x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
        losses = recipe.train_iteration(it, G, D, g_opt, d_opt, HiSDBatch(x, x, y, tag, attribute, target))
        update_ema(G_ema, G, recipe.params.ema_beta)
        return losses

    return step
