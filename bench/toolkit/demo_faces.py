"""The demo faces: synthetic faces the default profile runs on, so the repository
ships no photograph of a real person.

A small DCGAN (Radford et al., ICLR 2016) is trained by the project on the CelebA-HQ
training images (64 px); its samples, labelled by the project's attribute classifier,
become a plain image folder with a CelebA-style attribute file that `bench.toolkit.data`'s
`folder` loader reads like any other data set.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import BenchError, ConfigError, DataError, WeightsError
from bench.contract.io import file_sha256, load_tensors, save_tensors
from bench.contract.params import AdamBeta, Count, Fraction, NonNegativeInt, Positive, Resolution, Seed

MODEL = "demo_face_generator"
ATTRIBUTE_FILE = "list_attr_demo.txt"
README_TITLE = "# Demo faces (synthetic)"


def _check_resolution(resolution: int) -> int:
    if resolution < 16 or resolution & (resolution - 1):
        raise ConfigError(f"demo face resolution must be a power of two >= 16, got {resolution}")
    return int(math.log2(resolution)) - 2  # doublings between the 4x4 seed map and the image


class FaceGenerator(nn.Module):
    """DCGAN generator: a latent vector -> 4x4 map -> transposed convs doubling the size,
    BatchNorm and ReLU between them, tanh output in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, width: int = 48, resolution: int = 64):
        super().__init__()
        self.config = {"latent_dim": latent_dim, "width": width, "resolution": resolution}
        doublings = _check_resolution(resolution)
        ch = width * 2 ** (doublings - 1)
        layers = [nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
        for _ in range(doublings - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.size(0), -1, 1, 1))


class FaceDiscriminator(nn.Module):
    """DCGAN discriminator: strided convs halving the size down to 4x4, LeakyReLU(0.2),
    BatchNorm (or spectral norm) after the first; one logit per image."""

    def __init__(self, width: int = 48, resolution: int = 64, norm: str = "batch"):
        super().__init__()
        if norm not in ("batch", "spectral"):
            raise ConfigError(f"discriminator norm must be 'batch' or 'spectral', got {norm!r}")
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        layers, ch = [sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2, True)], width
        for _ in range(_check_resolution(resolution) - 1):
            if norm == "batch":
                layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2)]
            else:
                layers += [sn(nn.Conv2d(ch, ch * 2, 4, 2, 1))]
            layers += [nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [sn(nn.Conv2d(ch, 1, 4, 1, 0))]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            spectral = nn.utils.parametrize.is_parametrized(m, "weight")
            nn.init.normal_(m.parametrizations.weight.original if spectral else m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- sampling
@torch.no_grad()
def recalibrate_batchnorm(G: FaceGenerator, samples: int = 1024, batch_size: int = 64,
                          seed: int = 0) -> FaceGenerator:
    """Recompute BatchNorm statistics as exact averages over fresh samples: the running
    averages training leaves behind belong to the live weights, not to their moving
    average, and eval-mode samples would be off without this."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    G.train()
    device = next(G.parameters()).device
    for start in range(0, samples, batch_size):
        G(torch.randn(min(batch_size, samples - start), G.latent_dim, generator=gen).to(device))
    for m in norms:
        m.momentum = 0.1
    return G.eval()


@torch.no_grad()
def sample(G: FaceGenerator, n: int, seed: int, batch_size: int = 64) -> torch.Tensor:
    """n faces (n, 3, R, R) in [-1, 1] from latents drawn with `seed`; eval mode makes each
    face independent of the batch it is drawn in."""
    G.eval()
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    device = next(G.parameters()).device
    out = [G(z[i:i + batch_size].to(device)).cpu() for i in range(0, n, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 3, G.config["resolution"], G.config["resolution"])


def save_sample_grid(G: FaceGenerator, path: Path, n: int = 64, seed: int = 0) -> None:
    from bench.toolkit.figures import save_image_grid

    x = sample(G, n, seed)
    columns = max(1, int(math.sqrt(n)))
    save_image_grid([x[i::columns] for i in range(columns)], path)


# ---------------------------------------------------------------------- weights file
def export_generator(G: FaceGenerator, path: Path, meta: dict) -> None:
    """Float16 tensors (half the size; samples are computed in float32 after loading)."""
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in G.state_dict().items()}
    save_tensors(path, tensors, {"model": MODEL, "config": G.config, "dtype": "float16", **meta})


def load_generator(path: str | Path) -> FaceGenerator:
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"demo face generator weights not found at {path}; "
                           "train them with `bench train-demo-faces`")
    tensors, meta = load_tensors(path)
    if meta.get("model") != MODEL:
        raise WeightsError(f"{path} does not hold demo face generator weights")
    G = FaceGenerator(**meta["config"])
    try:
        G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    except RuntimeError as err:
        raise WeightsError(f"{path} does not fit the demo face generator: {str(err).splitlines()[0]}") from None
    G.metadata = meta
    return G.eval().requires_grad_(False)


# ---------------------------------------------------------------------- training
@dataclass
class TrainParams:
    """DCGAN's recipe (Adam 2e-4, betas (0.5, 0.999), non-saturating loss) with an
    exponential moving average of G, which gives cleaner faces early in training."""
    resolution: Resolution = 64
    latent_dim: Count = 100
    width: Count = 48
    d_width: Count = 32  # a narrower D halves the step time; G's width sets the faces' quality
    d_norm: str = "batch"
    batch_size: Count = 64
    iters: Count = 3500  # ~20-25 min on 2 CPU cores
    lr_g: Positive = 2e-4
    lr_d: Positive = 2e-4
    beta1: AdamBeta = 0.5
    beta2: AdamBeta = 0.999
    ema_decay: Fraction = 0.999
    bn_samples: Count = 1024  # samples that re-estimate G's BatchNorm statistics for previews and export
    train_start: NonNegativeInt = 0
    train_stop: Count = 27000
    seed: Seed = 1234
    checkpoint_every: Count = 250


def _train_step(G, D, g_opt, d_opt, x: torch.Tensor, latent_dim: int) -> dict:
    fake = G(torch.randn(x.size(0), latent_dim, device=x.device))
    loss_d = F.softplus(-D(x)).mean() + F.softplus(D(fake.detach())).mean()
    d_opt.zero_grad(set_to_none=True)
    loss_d.backward()
    d_opt.step()
    loss_g = F.softplus(-D(fake)).mean()
    g_opt.zero_grad(set_to_none=True)
    loss_g.backward()
    g_opt.step()
    return {"D": loss_d.item(), "G": loss_g.item()}


def train(params: TrainParams, faceset, out_dir: Path, device: torch.device, export: Path | None = None,
          command: str = "") -> FaceGenerator:
    """Train, resuming from `out_dir/checkpoint.pt` if present; return (and export) the
    moving-average generator with recalibrated BatchNorm statistics."""
    from bench.toolkit.training import BatchSampler, TrainingRun, update_ema

    if faceset.resolution != params.resolution:
        raise ConfigError(f"faces loaded at {faceset.resolution} px, training asks for {params.resolution} px")
    train_set = faceset.subset(params.train_start, params.train_stop)
    if len(train_set) == 0:
        raise DataError(f"no training images in {faceset.root} between {params.train_start} and {params.train_stop}")
    torch.manual_seed(params.seed)
    G = FaceGenerator(params.latent_dim, params.width, params.resolution)
    D = FaceDiscriminator(params.d_width, params.resolution, params.d_norm)
    dcgan_init(G)
    dcgan_init(D)
    # channels_last: ~15% faster convolutions on CPU
    G, D = (m.to(device, memory_format=torch.channels_last) for m in (G, D))
    G_ema = copy.deepcopy(G).requires_grad_(False)
    g_opt = torch.optim.Adam(G.parameters(), params.lr_g, (params.beta1, params.beta2))
    d_opt = torch.optim.Adam(D.parameters(), params.lr_d, (params.beta1, params.beta2))
    sampler = BatchSampler(train_set.load_uint8(progress=True), torch.zeros(len(train_set), 0),
                           params.batch_size, params.seed)
    run = TrainingRun(out_dir, params.iters, params.checkpoint_every)
    modules, optimisers = {"G": G, "D": D, "G_ema": G_ema}, {"G": g_opt, "D": d_opt}
    start = run.resume(modules, optimisers, sampler)
    started = time.time()
    bar = run.progress(start, "train demo faces")
    for it in bar:
        x, _ = next(sampler)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        losses = _train_step(G.train(), D.train(), g_opt, d_opt, x, params.latent_dim)
        # warm-up as in TF's ExponentialMovingAverage: the average forgets the random init
        # (decay (1 + it) / (10 + it) stays below 0.999 for 9,000 iterations: ~0.997 at 3,500)
        update_ema(G_ema, G, min(params.ema_decay, (1 + it) / (10 + it)))
        if (it + 1) % run.log_every == 0 or it + 1 == params.iters:
            run.log(it + 1, losses, started)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        if (it + 1) % params.checkpoint_every == 0 or it + 1 == params.iters:
            run.save(it + 1, modules, optimisers, sampler)
            preview = recalibrate_batchnorm(copy.deepcopy(G_ema), params.bn_samples, seed=params.seed)
            save_sample_grid(preview, run.out_dir / "samples" / f"{it + 1:06d}.png", seed=params.seed + 1)
    final = recalibrate_batchnorm(copy.deepcopy(G_ema), params.bn_samples, seed=params.seed)
    final = final.to("cpu", memory_format=torch.contiguous_format)
    if export is not None:
        export_generator(final, export, {"training": {
            **asdict(params), "data": train_set.identity(), "command": command,
            "seconds_this_session": round(time.time() - started)}})
    return final


# ---------------------------------------------------------------------- the demo set
def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (N, 3, H, W) -> uint8 (N, H, W, 3), the inverse of bench.toolkit.data.to_tensor."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _predict(labeller, images: torch.Tensor) -> torch.Tensor:
    names = list(labeller.attribute_names)
    if any(not n or any(c.isspace() for c in n) for n in names):
        raise BenchError(f"labeller attribute names must be single words, got {names}")
    probs = torch.as_tensor(labeller.predict(images)).float().cpu()
    if probs.shape != (images.size(0), len(names)):
        raise BenchError(f"labeller returned {tuple(probs.shape)} for {images.size(0)} images "
                         f"and {len(names)} attributes")
    return probs


def select(confidence: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` most confident candidates, in sampling order (ties: earlier first)."""
    order = torch.argsort(-confidence, stable=True)[:count]
    return order.sort().values


def _attribute_text(files: list[str], names: list[str], labels: torch.Tensor) -> str:
    rows = [f + " " + " ".join("1" if v else "-1" for v in row) for f, row in zip(files, labels.tolist())]
    return "\n".join([str(len(files)), " ".join(names), *rows]) + "\n"


def _readme(count: int, candidates: int, seed: int, weights: Path, meta: dict, labeller, command: str) -> str:
    training = meta.get("training", {})
    data = training.get("data", {})
    labeller_training = getattr(labeller, "metadata", {}).get("training", {})
    source = {"celebahq": "CelebA-HQ", "celeba": "CelebA"}.get(data.get("name"), data.get("name", "unknown"))
    images = (f"{data.get('n', '?')} {source} training images ({''.join(data.get('first', []))} to "
              f"{''.join(data.get('last', []))})")
    lines = [
        README_TITLE, "",
        f"{count} synthetic {meta.get('config', {}).get('resolution', '?')} px faces, `000001.png` to "
        f"`{count:06d}.png`. None is a photograph: each is a sample of a small DCGAN generator "
        f"(`bench/demo_faces.py`) that the project trained on {images} for {training.get('iters', '?')} "
        "iterations.",
    ]
    if source in ("CelebA-HQ", "CelebA"):
        lines += [f"The generator learned from {source}, whose terms allow non-commercial research use "
                  "only; treat these images under the same terms."]
    lines += [""]
    if labeller is not None:
        lines += [f"`{ATTRIBUTE_FILE}` (CelebA format) holds attributes predicted by the project's attribute "
                  f"classifier ({type(labeller).__name__}), thresholded at 0.5: predictions, not human "
                  f"labels. The {count} faces are those of {candidates} samples whose attributes the "
                  "classifier was most confident about (mean |2p - 1|), kept in sampling order.", ""]
    else:
        lines += ["No attribute labels (made without a labeller).", ""]
    lines += [
        f"- generator weights: `{weights.name}` (sha256 {file_sha256(weights)})",
        f"- generator training command: `{training.get('command') or 'unknown'}`",
        f"- sampling: seed {seed}, {candidates} candidates, CPU, float32",
        *([f"- attribute classifier training command: `{labeller_training['command']}`"]
          if labeller_training.get("command") else []),
        f"- made by: `{command or 'bench.toolkit.demo_faces.make_demo_set'}`", "",
        "The same command with the same software on the same kind of CPU reproduces these files "
        "byte for byte.", "",
    ]
    return "\n".join(lines)


def _is_demo_set(folder: Path) -> bool:
    readme = folder / "README.md"
    return readme.is_file() and readme.read_text().startswith(README_TITLE)


def _replace_folder(new: Path, out_dir: Path) -> None:
    """Move the finished `new` folder to `out_dir`, replacing an older demo set (never
    another folder), so a reader sees the old set or the new one, never a mixture."""
    if not out_dir.exists():
        os.replace(new, out_dir)
        return
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not _is_demo_set(out_dir)):
        raise BenchError(f"{out_dir} exists and is not a demo face set; choose another output folder")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    os.replace(out_dir, old)
    os.replace(new, out_dir)
    shutil.rmtree(old)


def make_demo_set(generator_weights_path: str | Path, out_dir: str | Path, count: int, seed: int,
                  labeller=None, candidates_factor: int = 2, command: str = "") -> Path:
    """Write `count` sampled faces `000001.png ...`, their predicted attributes (with a
    labeller) and a README into `out_dir`; deterministic for a given seed (CPU)."""
    from PIL import Image

    if count < 1 or candidates_factor < 1:
        raise ConfigError(f"count and candidates_factor must be >= 1, got {count} and {candidates_factor}")
    weights, out_dir = Path(generator_weights_path), Path(out_dir)
    G = load_generator(weights).cpu()
    candidates = count * candidates_factor if labeller is not None else count
    images = sample(G, candidates, seed)
    pixels = to_uint8(images)
    files = [f"{i:06d}.png" for i in range(1, count + 1)]
    probs = None
    if labeller is not None:
        # label what the benchmark will read: the 8-bit images, not the float samples
        from bench.toolkit.data import to_tensor

        probs = _predict(labeller, to_tensor(pixels.numpy()))
        keep = select((2 * probs - 1).abs().mean(1), count)
        pixels, probs = pixels[keep], probs[keep]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the set is meant to be shared
        for name, img in zip(files, pixels.numpy()):
            Image.fromarray(img).save(tmp / name, format="PNG")
        if probs is not None:
            (tmp / ATTRIBUTE_FILE).write_text(_attribute_text(files, list(labeller.attribute_names), probs > 0.5))
        (tmp / "README.md").write_text(_readme(count, candidates, seed, weights, getattr(G, "metadata", {}),
                                               labeller, command))
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
