"""The CLIP score of the paper's Table V (image-image): the cosine similarity of the CLIP
image embeddings of an output and of its intended target (raw cosine, about 0.78-0.96 in
the paper: not x100, not clamped). The paper does not name its CLIP model; this module uses
open_clip's `ViT-B-32` with OpenAI's weights (MODEL, PRETRAINED) and results record the
weights file's SHA-256. The weights are read from a local file: no download at run time.

Accepted files, in `$BENCH_WEIGHTS/clip/`, the first present in this order (ACCEPTED_FILES):
- `ViT-B-32-openai.safetensors` (the expected place): a plain state dict in open_clip's
  layout, e.g. `open_clip_model.safetensors` below, renamed;
- `open_clip_model.safetensors`, `open_clip_pytorch_model.bin`: open_clip's own copies of
  OpenAI's weights (Hugging Face `timm/vit_base_patch32_clip_224.openai`, what open_clip's
  `pretrained="openai"` tag fetches), plain state dicts in open_clip's layout; the .bin is
  read with `torch.load(weights_only=True)`, so no pickled code runs;
- `ViT-B-32.pt`: OpenAI's original TorchScript archive, accepted only when its SHA-256 is
  the one OpenAI publishes in its URL (OPENAI_PT_SHA256), then read by open_clip's own
  reader (`open_clip.factory.load_state_dict`, which hands TorchScript to `torch.jit.load`).

Every file is read with open_clip's reader (it unwraps a `state_dict` entry, strips a
`module.` prefix, drops the TorchScript's `input_resolution`/`context_length`/`vocab_size`),
then checked name by name and shape by shape against open_clip's CLIP ViT-B-32 and loaded
with `strict=True`; any mismatch is a one-line WeightsError. (open_clip's own
`create_model("ViT-B-32", pretrained=<file>)` also loads strictly, but first resizes a
positional embedding of another grid instead of refusing it, and with its default
`weights_only=True` it refuses a TorchScript archive with a RuntimeError.) Only the image
tower is kept, frozen, in eval mode, in float32.

QuickGELU: OpenAI trained CLIP with QuickGELU (x * sigmoid(1.702 x)). open_clip 3.x builds
`ViT-B-32` with nn.GELU and only warns about the mismatch for the "openai" tag; the network
here is built with `quick_gelu=True` (open_clip's `ViT-B-32-quickgelu`: the same state-dict
layout), as OpenAI's model and open_clip's `load_openai_model` are.

Preprocessing, in torch (batched, on any device), reproduces open_clip's eval transform for
this model (`image_transform`: Resize(224, bicubic) of the short side, CenterCrop(224),
ToTensor, Normalize with OpenAI's mean/std) applied to an 8-bit image file:
- images in [-1, 1] are first rounded to 8-bit steps (as written to PNG);
- PIL resizes an 8-bit image in two passes, horizontal then vertical, with a bicubic kernel
  (a = -0.5) widened by the scale when shrinking (antialias), saturating and rounding to
  8 bits after each pass. Here each pass is torchvision's tensor resize with
  `antialias=True` (the same kernel and support), followed by the same clamp and rounding.
  Measured against open_clip's PIL pipeline on 8-bit noise and smooth images of 64, 128,
  256, 48x40 and 300x200 px: at most 2/255 per pixel (PIL's fixed-point rounding ties),
  mean under 0.01/255. One tensor pass without the intermediate 8-bit rounding (what
  torchvision's Resize does to a float tensor) differs by mean 0.36/255, up to 21/255 on
  noise and 6/255 on smooth images; `F.interpolate`'s plain bicubic (a = -0.75, no
  antialias) by mean 1.4/255 to 11/255.

`classifier_cosine` is the offline stand-in: the same cosine on the project's attribute
classifier's features. It is not a CLIP score and not comparable with the paper's numbers.
"""

from __future__ import annotations

import functools
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256_once
from bench.contract.plugins import weights_root
from bench.toolkit.figures import eight_bit, to_unit

MODEL, PRETRAINED = "ViT-B-32", "openai"
FOLDER = "clip"
ACCEPTED_FILES = ("ViT-B-32-openai.safetensors", "open_clip_model.safetensors",
                  "open_clip_pytorch_model.bin", "ViT-B-32.pt")
OPENAI_PT_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
IMAGE_SIZE = 224
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip.constants.OPENAI_DATASET_MEAN
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)  # open_clip.constants.OPENAI_DATASET_STD


def expected_place() -> Path:
    return weights_root() / FOLDER / ACCEPTED_FILES[0]


def weights_path() -> Path:
    """The first accepted file present in `$BENCH_WEIGHTS/clip/`, else the expected place."""
    folder = weights_root() / FOLDER
    return next((folder / name for name in ACCEPTED_FILES if (folder / name).is_file()), expected_place())


def missing_line() -> str:
    return (f"CLIP weights (open_clip {MODEL}, OpenAI) not found at {expected_place()} "
            f"(or {', '.join(ACCEPTED_FILES[1:])} beside it); `bench download` lists it")


def missing() -> str | None:
    """A one-line reason when no accepted file is present, else None."""
    return None if weights_path().is_file() else missing_line()


def file_key(path: Path) -> tuple[str, int, int]:
    """What identifies a file's content for the in-process caches."""
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def weights_sha256(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(missing_line())
    return file_sha256_once(path)


def clip_network() -> nn.Module:
    """open_clip's CLIP ViT-B-32 with QuickGELU, on the meta device (no initialisation:
    weights are assigned when loaded)."""
    import open_clip
    from open_clip.model import CLIP

    with torch.device("meta"):
        return CLIP(**open_clip.get_model_config(MODEL), quick_gelu=True)


@functools.lru_cache(maxsize=1)
def clip_layout() -> dict[str, tuple[int, ...]]:
    """Names and shapes of open_clip's ViT-B-32 state dict."""
    return {k: tuple(v.shape) for k, v in clip_network().state_dict().items()}


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in an accepted file, read by open_clip's own reader, never unpickling code."""
    from open_clip.factory import load_state_dict

    scripted = path.suffix != ".safetensors" and is_torchscript(path)
    if scripted:
        digest = weights_sha256(path)
        if digest != OPENAI_PT_SHA256:
            raise WeightsError(f"{path} is a TorchScript archive but not OpenAI's {MODEL}.pt "
                               f"(SHA-256 {digest[:16]}..., expected {OPENAI_PT_SHA256[:16]}...); "
                               f"use a state dict such as {ACCEPTED_FILES[0]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.load's "dispatching to torch.jit.load"
            state = load_state_dict(str(path), device="cpu", weights_only=not scripted)
    except pickle.UnpicklingError:
        raise WeightsError(f"cannot read CLIP weights {path}: not a plain tensor file (torch.load with "
                           f"weights_only=True refused it); use a safetensors state dict") from None
    except Exception as err:  # a damaged or foreign file: say so in one line
        first = (str(err).strip().splitlines() or [""])[0]
        raise WeightsError(f"cannot read CLIP weights {path}: {type(err).__name__}: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return state


def check_layout(state: dict[str, torch.Tensor], path: Path) -> None:
    """A one-line WeightsError unless `state` has exactly open_clip's ViT-B-32 names and shapes."""
    layout = clip_layout()
    absent = [k for k in layout if k not in state]
    extra = [k for k in state if k not in layout]
    wrong = [k for k in layout if k in state and tuple(state[k].shape) != layout[k]]
    problems = []
    if absent:
        problems.append(f"{len(absent)} missing key(s), e.g. {absent[0]}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s), e.g. {extra[0]}")
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} "
                        f"instead of {layout[wrong[0]]}")
    if problems:
        raise WeightsError(f"{path} does not fit open_clip's {MODEL} layout: {'; '.join(problems)}")


@functools.lru_cache(maxsize=2)
def _load(key: tuple[str, int, int], device: str) -> nn.Module:
    path = Path(key[0])
    state = read_state(path)
    check_layout(state, path)
    net = clip_network()
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsError(f"{path} does not fit open_clip's {MODEL}: {str(err).strip().splitlines()[0]}") from None
    visual = net.visual
    if any(t.is_meta for t in [*visual.parameters(), *visual.buffers()]):
        raise WeightsError(f"{path} left part of the {MODEL} image tower unset")
    return visual.to(device=device, dtype=torch.float32).eval().requires_grad_(False)


def load_clip_model(path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """open_clip's ViT-B-32 image tower (QuickGELU) with the weights of `path` (default:
    weights_path()), frozen and in eval mode; maps preprocessed images to (N, 512)
    projected embeddings. Cached per file and device in this process."""
    path = Path(path) if path is not None else weights_path()
    if not path.is_file():
        raise WeightsError(missing_line() if path == expected_place() else f"CLIP weights not found at {path}")
    return _load(file_key(path), str(device))


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, 224, 224) normalised, as open_clip's eval transform
    does to the same images saved as 8-bit files (see the module docstring)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = eight_bit(to_unit(images.float()))
    h, w = x.shape[-2:]
    if h <= w:  # torchvision's Resize(224): the short side to 224, the long side truncated
        new_h, new_w = IMAGE_SIZE, int(IMAGE_SIZE * w / h)
    else:
        new_h, new_w = int(IMAGE_SIZE * h / w), IMAGE_SIZE
    if new_w != w:  # PIL: horizontal pass first, 8-bit in between
        x = eight_bit(TF.resize(x, [h, new_w], InterpolationMode.BICUBIC, antialias=True))
    if new_h != h:
        x = eight_bit(TF.resize(x, [new_h, new_w], InterpolationMode.BICUBIC, antialias=True))
    x = TF.center_crop(x, [IMAGE_SIZE, IMAGE_SIZE])
    mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def image_embeddings(images: torch.Tensor, model: nn.Module | None = None, device: torch.device | str = "cpu",
                     batch_size: int = 64) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 512) L2-normalised CLIP image embeddings (float32, on
    the images' device), computed on the model's device."""
    model = model if model is not None else load_clip_model(device=device)
    run_on = next(model.parameters()).device
    parts = [F.normalize(model(preprocess(images[i:i + batch_size].to(run_on))).float(), dim=-1)
             for i in range(0, images.size(0), batch_size)]
    if not parts:
        return torch.zeros(0, model.output_dim, device=images.device)
    return torch.cat(parts).to(images.device)


def clip_score(outputs: torch.Tensor, targets: torch.Tensor, model: nn.Module | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) cosine similarity of the CLIP image embeddings of each output and its target
    (on the outputs' device)."""
    if outputs.size(0) != targets.size(0):
        raise ValueError(f"{outputs.size(0)} outputs but {targets.size(0)} targets")
    model = model if model is not None else load_clip_model(device=device)
    a = image_embeddings(outputs, model)
    b = image_embeddings(targets, model).to(a.device)
    return (a * b).sum(dim=-1).to(outputs.device)


@functools.lru_cache(maxsize=2)
def classifier_feature_network(device: str) -> nn.Module:
    from bench.toolkit.features import load_extractor

    return load_extractor("classifier_features").to(device)


@torch.no_grad()
def classifier_cosine(outputs: torch.Tensor, targets: torch.Tensor, device: torch.device | str = "cpu",
                      batch_size: int = 64) -> torch.Tensor:
    """(N,) cosine similarity of the pooled penultimate features of the project's attribute
    classifier (`bench.toolkit.features` "classifier_features") of each output and its target, on
    the outputs' device.

    An offline stand-in for the CLIP score where OpenAI's CLIP weights are absent: a face
    network trained by this project, not CLIP, so its values are not comparable with the
    paper's CLIP scores (its features are non-negative, so unrelated images still score
    well above 0)."""
    if outputs.size(0) != targets.size(0):
        raise ValueError(f"{outputs.size(0)} outputs but {targets.size(0)} targets")
    net = classifier_feature_network(str(device))
    parts = []
    for i in range(0, outputs.size(0), batch_size):
        a = net(outputs[i:i + batch_size].to(device)).float()
        b = net(targets[i:i + batch_size].to(device)).float()
        parts.append(F.cosine_similarity(a, b, dim=-1))
    if not parts:
        return torch.zeros(0, device=outputs.device)
    return torch.cat(parts).to(outputs.device)
