"""ComDefend (Jia et al., ComDefend: An Efficient Image Compression Model to Defend
Adversarial Examples, CVPR 2019; official code jiaxiaojunQAQ/Comdefend, TensorFlow/canton).

The purifier compresses the image to a binary code and reconstructs it:

- ComCNN: x - 0.5 (x in [0, 1], the official input shift), nine 3x3 convs (padding 1)
  3->16->32->64->128->256->128->64->32->12 with ELU after all but the last: a linear code.
- Test path (compression_imagenet.py): subtract Gaussian noise of std `code_noise` (1.0,
  the official variable's value, never fed at test), sigmoid, binarise at 0.5.
- RecCNN: nine 3x3 convs 12->32->64->128->256->128->64->32->16->3, ELU after all but the
  last, sigmoid.

Purifying maps [-1, 1] to [0, 1] (clipped, as the official code clips), runs the test
path and maps back to [-1, 1]. The noise comes from a torch.Generator seeded with
`noise_seed` at every call, so `purify` is deterministic. The binarisation is
straight-through (forward: exact 0/1; backward: the sigmoid's gradient), hence
`differentiable = True`: the leakage scenario optimises through `purify`.

Weights (`weights`):
- "train" (default): fit on the fine-tuning faces with the official recipe
  (Train_comdefend_TF.py): loss = MSE(RecCNN(c), x) + 1e-4 * mean(c^2), where c is the
  SOFT code sigmoid(ComCNN(x) - noise) with training noise std `train_code_noise` (20,
  the value its main passes, also in the weight file names "enc20_0.0001"); no
  binarisation while training; Adam. The fit depends on the images only
  (`fit_scope = "images"`): fitted once, cached for every generator.
- "official": the official ImageNet weights (checkpoints/enc20_0.0001.npy and
  dec20_0.0001.npy, TF HWIO kernels W1, b1, ..., W9, b9, see the reference layout) from
  `official_dir` (default `$BENCH_WEIGHTS/comdefend/`). `fit` then loads instead of
  training and says so (`source: official`); `trainable` stays True so the runner caches
  the loaded tensors like a fit.

Re-implementation choices (named options where they change results):
- Training sizes are sized for the quick profile on a CPU: `epochs` 16 of `batch_size` 16
  (256 steps on 256 faces at 32 px patches: 0.66 s a step on 2 idle cores, about 3 min;
  5 min measured on a busy machine); the official run is 1 epoch over
  CIFAR-10 (2,500 steps of 20 images). Adam with TF's defaults (lr 1e-3, betas 0.9/0.999),
  as the official run; lr 3e-3 diverged. Convs start as canton's (truncated normal of std
  sqrt(2 / fan_in), zero biases). Measured at 64 px, fitted on CelebA-HQ 27001-27256 and
  purifying 29001-29064: PSNR 21.7 dB (min 17.6) with these defaults; 22.6 dB with
  `train_code_noise` 1 (no better with 384 steps of 8); the official ImageNet weights give
  31.2 dB (min 26.3).
- Training runs on random `crop` x `crop` patches (seeded per step): the official model
  trains on 32x32 CIFAR images and purifies 32x32 patches; `crop = 0` uses whole images.
- Purifying runs on the whole image at once (the network is fully convolutional) rather
  than the official 49 tiles of 32x32 of the top-left 224x224 region.
- RGB channel order: the official weights were trained on CIFAR-10 in RGB (the test script
  reads BGR with cv2); on the faces above RGB gives 31.2 dB, BGR 29.7 dB.
- Weight files are read with numpy's `allow_pickle` only after checking that the archive
  holds the single member `w.npy` that canton writes.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError, WeightsError
from bench.contract.params import AdamBeta, Count, NonNegative, NonNegativeInt, Positive, Seed
from bench.contract.plugins import Bypass, weights_root
from bench.contract.results import PRETRAINED_PURIFIER
from bench.toolkit.finetune import FinetuneLoop, count_trainable, step_seed

COM_CHANNELS = (3, 16, 32, 64, 128, 256, 128, 64, 32, 12)
REC_CHANNELS = (12, 32, 64, 128, 256, 128, 64, 32, 16, 3)
OFFICIAL_FILES = {"com": "enc20_0.0001.npy", "rec": "dec20_0.0001.npy"}
WEIGHT_SOURCES = ("train", "official")


def canton_conv(cin: int, cout: int) -> nn.Conv2d:
    """A 3x3 conv (padding 1) initialised as canton's Conv2D: kernels from a normal of std
    sqrt(2 / fan_in) truncated at two std, zero biases."""
    conv = nn.Conv2d(cin, cout, 3, padding=1)
    std = (2.0 / (cin * 9)) ** 0.5
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)
    return conv


def conv_stack(channels: tuple[int, ...]) -> nn.Sequential:
    """3x3 convs along `channels`, ELU between them, nothing after the last."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        if i:
            layers.append(nn.ELU())
        layers.append(canton_conv(cin, cout))
    return nn.Sequential(*layers)


class ComCNN(nn.Module):
    """[0, 1] image -> 12-channel linear code."""

    def __init__(self):
        super().__init__()
        self.convs = conv_stack(COM_CHANNELS)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.convs(x01 - 0.5)


class RecCNN(nn.Module):
    """12-channel code -> [0, 1] image."""

    def __init__(self):
        super().__init__()
        self.convs = conv_stack(REC_CHANNELS)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.convs(code))


class ComDefendNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.com = ComCNN()
        self.rec = RecCNN()

    def soft_code(self, x01: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
        """sigmoid(linear code - Gaussian noise): noise pushes the code towards 0/1."""
        linear = self.com(x01)
        noise = torch.randn(linear.shape, generator=generator).to(linear.device)
        return torch.sigmoid(linear - noise_std * noise)


def binarise(soft: torch.Tensor) -> torch.Tensor:
    """Threshold at 0.5; straight-through: exact 0/1 forward, the soft code's gradient back."""
    return (soft > 0.5).to(soft.dtype) + (soft - soft.detach())


def read_canton_arrays(path: Path, expected_shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The float32 arrays of a canton weight file (a zip holding one object array `w`)."""
    if not path.is_file():
        raise WeightsError(f"official ComDefend weights not found at {path}; place "
                           f"{' and '.join(OFFICIAL_FILES.values())} (jiaxiaojunQAQ/Comdefend checkpoints/) in "
                           "that folder, set BENCH_WEIGHTS or official_dir (see `bench download`)")
    try:
        if not zipfile.is_zipfile(path):
            raise WeightsError(f"{path} is not a ComDefend weight file (not a zip archive)")
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
        if members != ["w.npy"]:
            raise WeightsError(f"{path} is not a ComDefend weight file (members {members}, expected ['w.npy'])")
        with np.load(path, allow_pickle=True) as archive:  # the members were checked above
            arrays = list(archive["w"])
    except WeightsError:
        raise
    except Exception as err:  # damaged zip, pickle or array data alike
        raise WeightsError(f"cannot read ComDefend weights {path}: {err}".splitlines()[0]) from None
    shapes = [tuple(getattr(a, "shape", ())) for a in arrays]
    if (len(arrays) != len(expected_shapes) or shapes != expected_shapes
            or not all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)):
        raise WeightsError(f"{path} does not hold the ComDefend layout: {len(arrays)} arrays of shapes "
                           f"{shapes[:3]}..., expected {len(expected_shapes)} float32 arrays {expected_shapes[:3]}...")
    return arrays


def hwio_shapes(channels: tuple[int, ...]) -> list[tuple[int, ...]]:
    """W1, b1, ..., Wk, bk as TF stores them: kernels [3, 3, in, out], biases [out]."""
    return [shape for cin, cout in zip(channels, channels[1:]) for shape in ((3, 3, cin, cout), (cout,))]


def load_canton_weights(module: nn.Module, path: Path, channels: tuple[int, ...]) -> None:
    """Copy a canton weight file into a ComCNN / RecCNN (HWIO -> OIHW)."""
    arrays = read_canton_arrays(path, hwio_shapes(channels))
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, kernel, bias in zip(convs, arrays[0::2], arrays[1::2]):
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.from_numpy(bias))


def load_official(folder: Path) -> ComDefendNet:
    net = ComDefendNet()
    load_canton_weights(net.com, folder / OFFICIAL_FILES["com"], COM_CHANNELS)
    load_canton_weights(net.rec, folder / OFFICIAL_FILES["rec"], REC_CHANNELS)
    return net


def random_crops(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One seeded size x size patch per image (the whole image when size is 0 or too large)."""
    h, w = x.shape[-2:]
    if size <= 0 or size >= min(h, w):
        return x
    tops = torch.randint(0, h - size + 1, (x.size(0),), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (x.size(0),), generator=generator).tolist()
    return torch.stack([img[:, t:t + size, l:l + size] for img, t, l in zip(x, tops, lefts)])


class ComDefend(Bypass):
    name = "comdefend"
    version = "1"
    paper = "Jia et al., ComDefend: An Efficient Image Compression Model to Defend Adversarial Examples, CVPR 2019"
    kind = "purifier"
    trainable = True
    fit_scope = "images"
    differentiable = True
    # an attacker downloads it (or trains it on any faces): it never needs the generator
    rung = PRETRAINED_PURIFIER
    smoke_params = {"epochs": 1, "batch_size": 2, "crop": 8}

    @dataclass
    class Params:
        # "train" (on the fine-tuning faces) or "official" (ImageNet .npy files)
        weights: Literal[WEIGHT_SOURCES] = "train"
        official_dir: str = ""        # folder of the official files; "" = $BENCH_WEIGHTS/comdefend
        code_noise: NonNegative = 1.0       # std of the code noise when purifying (official test value)
        noise_seed: Seed = 0      # seeds that noise at every purify call
        train_code_noise: NonNegative = 20.0  # std of the code noise while training (official)
        code_weight: NonNegative = 1e-4     # weight of mean(code^2) in the training loss (official)
        epochs: Count = 16
        batch_size: Count = 16
        lr: Positive = 1e-3                 # Adam (official: TF defaults, lr 1e-3, betas 0.9/0.999)
        beta1: AdamBeta = 0.9
        beta2: AdamBeta = 0.999
        crop: NonNegativeInt = 32           # training patch size (official: 32x32 images); 0 = whole images

    def __init__(self, **params):
        super().__init__(**params)
        self.net: ComDefendNet | None = None

    def check_ready(self):
        if self.params.weights == "official":
            load_official(self.official_folder())

    def official_folder(self) -> Path:
        return Path(self.params.official_dir).expanduser() if self.params.official_dir else weights_root() / "comdefend"

    def fit(self, generator, images, conditions, seed, device):
        """Train ComCNN + RecCNN on `images` (the generator and conditions play no part),
        or load the official weights when `weights = "official"`."""
        if self.params.weights == "official":
            return self._load_official_as_fit()
        p = self.params
        torch.manual_seed(seed)
        net = ComDefendNet().to(device)
        trainable = count_trainable(net)
        opt = torch.optim.Adam(net.parameters(), p.lr, (p.beta1, p.beta2))
        one_target = torch.zeros(1, images.size(0), 1)  # FinetuneLoop steps once per batch and target
        loop = FinetuneLoop(images, one_target, p.batch_size, p.epochs, seed, device, "comdefend")
        for step, x, _ in loop:
            loop.record(self._train_step(net, opt, x, step_seed(seed, step)))
        self._use(net)
        return self._tensors(), loop.info(trainable, source="trained")

    def _train_step(self, net: ComDefendNet, opt, x: torch.Tensor, seed: int) -> float:
        p = self.params
        rng = torch.Generator().manual_seed(seed)
        x01 = random_crops((x + 1) / 2, p.crop, rng)
        code = net.soft_code(x01, p.train_code_noise, rng)
        loss = F.mse_loss(net.rec(code), x01) + p.code_weight * code.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def _load_official_as_fit(self):
        net = load_official(self.official_folder())
        info = {"train_seconds": 0.0, "trainable_params": count_trainable(net), "steps": 0, "loss_curve": [],
                "faces": 0, "source": "official", "path": str(self.official_folder())}
        self._use(net)
        return self._tensors(), info

    def _use(self, net: ComDefendNet) -> None:
        """Keep `net` frozen: purify differentiates with respect to its input only."""
        self.net = net.cpu().eval().requires_grad_(False)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state(self, state, info):
        net = ComDefendNet()
        net.load_state_dict(state, strict=True)
        self._use(net)

    def purify(self, x):
        if self.net is None:
            raise ConfigError("comdefend has not been fitted or loaded")
        p = self.params
        net = self.net.to(x.device)
        rng = torch.Generator().manual_seed(p.noise_seed)
        code = binarise(net.soft_code(((x + 1) / 2).clamp(0, 1), p.code_noise, rng))
        return net.rec(code) * 2 - 1
