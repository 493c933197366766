"""Atomic file writes and safe tensor files. Writing text and JSON needs no torch (it is
imported by the tensor functions only, so that reading and reporting runs stays light)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bench.contract.errors import BenchError, WeightsError

if TYPE_CHECKING:
    import torch


def writable_folder(path: str | Path, what: str) -> Path:
    """`path` as a folder this process can write into (made if missing), else one
    BenchError line naming `what` (e.g. "--output") and the reason."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BenchError(f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise BenchError(f"{what} {path} is not writable: {err.strerror or err}") from None
    return path


def atomic_write(path: str | Path, write) -> None:
    """Call write(tmp_path) and rename the result to `path` only once it is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj) -> None:
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors as safetensors; metadata values are stored as JSON strings."""
    from safetensors.torch import save_file

    meta = {k: json.dumps(v, default=str) for k, v in (metadata or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load a safetensors file and its JSON metadata."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read tensor file {path}: {err}") from None
    return tensors, {k: json.loads(v) for k, v in raw.items()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256_once(path: str | Path) -> str:
    """A file's SHA-256, computed once per process for its (path, size, time): weights
    files run to hundreds of MB and are checked more than once."""
    stat = Path(path).stat()
    return _hashed(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """A content hash of named tensors (names, dtypes, shapes and values)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """A short hash of a tensor's values (as float32)."""
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:32]


def installed_file(distribution: str, path: str) -> Path | None:
    """A file shipped by an installed package (`path` inside its distribution), found
    without importing the package (its module may import what this project does not need)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import distribution as find

    try:
        found = Path(str(find(distribution).locate_file(path)))
    except PackageNotFoundError:
        return None
    return found if found.exists() else None
