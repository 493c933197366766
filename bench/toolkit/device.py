"""Device selection: `auto` takes CUDA where present (with mixed precision), else CPU."""

from __future__ import annotations

import contextlib
import functools

import torch

from bench.contract.errors import ConfigError


def parse_device(name: str) -> torch.device | None:
    """The device `name` stands for (None for "auto"), whether or not this machine has it
    (a cluster's workers may); an unknown name is a ConfigError."""
    if name == "auto":
        return None
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}: {err}") from None


def resolve_device(name: str = "auto") -> torch.device:
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return device


def autocast(device: torch.device, enabled: bool = True):
    """float16 autocast on CUDA for inference; a no-op on CPU (results stay float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@functools.cache
def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA with bf16 support; a CPU with
    AVX-512 BF16 or AMX), where bf16 autocast is faster than float32, not slower."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
