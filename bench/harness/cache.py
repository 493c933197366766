"""Content-addressed cache of computed tensors (clean outputs, perturbations, patches,
fitted states, scored cells), shared by every process and worker that runs steps.

Key = SHA-256 of a canonical JSON of everything that determines the value (generator
name, version, config and weight hash; plugin name, version and params; image ids and
content hash; seed; ...). An entry is a folder holding `tensors.safetensors` and
`manifest.json` (key parts, file hash, info), written under a temporary name and
renamed into place, so a reader never sees half an entry. Reads verify the file hash;
a damaged entry is reported, removed and recomputed.

Processes that share a cache (two `bench run`s, Dask workers) claim a step before
computing it (`claim`: an exclusive lock file per entry), so each entry is computed
once: whoever waits on a claim finds the entry made when the lock is released.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from bench.contract.errors import BenchError
from bench.contract.io import file_sha256, load_tensors, save_tensors, tensor_digest  # noqa: F401 (re-exported)

MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"


def default_cache_dir() -> Path:
    if "BENCH_CACHE" in os.environ:
        return Path(os.environ["BENCH_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("deepfake-defense-bench"))


def make_key(parts: dict) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    """Entries under `root`. `released`: a read-only store of the same layout (the fits
    that come with bench) read where `root` lacks an entry; a read-only store serves only
    its `kinds`, and only an entry whose manifest hashes to the key asked for."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True, released: Cache | None = None,
                 read_only: bool = False, kinds: tuple[str, ...] | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled, self.released, self.read_only, self.kinds = enabled, released, read_only, kinds

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def serves(self, kind: str) -> bool:
        return self.enabled and (self.kinds is None or kind in self.kinds)

    def manifest(self, kind: str, key: str) -> dict | None:
        """An entry's manifest (parts, info) without reading its tensors; None if absent."""
        if not self.serves(kind):
            return None
        try:
            manifest = json.loads((self.path(kind, key) / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            return self.released.manifest(kind, key) if self.released is not None else None
        return manifest if not self.read_only or self.names(manifest, key) else None

    @staticmethod
    def names(manifest: dict, key: str) -> bool:
        """Whether a manifest is the entry of `key` (a read-only store's is checked: it was
        copied, not written by `put`)."""
        return manifest.get("key") == key and make_key(manifest.get("parts", {})) == key

    @contextlib.contextmanager
    def claim(self, kind: str, key: str):
        """Hold the exclusive right to compute entry (kind, key) while the block runs; a
        second claimant waits until the first is done (then finds the entry made)."""
        lock = self.root / ".claims" / kind / f"{key}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, kind: str, parts: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, info) of a verified entry, or None."""
        return self.load(kind, make_key(parts))

    def load(self, kind: str, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """(tensors, info) of the verified entry (kind, key), or None."""
        if not self.serves(kind):
            return None
        entry = self.path(kind, key)
        manifest_path = entry / MANIFEST
        if not manifest_path.exists():
            return self.released.load(kind, key) if self.released is not None else None
        try:
            manifest = json.loads(manifest_path.read_text())
            if self.read_only and not self.names(manifest, key):
                raise ValueError("its manifest is not that of its key")
            if file_sha256(entry / TENSORS) != manifest["sha256"]:
                raise ValueError("tensor file hash does not match its manifest")
            tensors, _ = load_tensors(entry / TENSORS)
        except Exception as err:  # any damage: report, drop (unless read-only), recompute
            warnings.warn(f"{'released fit' if self.read_only else 'cache entry'} {entry} is damaged ({err}); "
                          "recomputing", stacklevel=3 if self.read_only else 2)
            if not self.read_only:
                shutil.rmtree(entry, ignore_errors=True)
            return None
        return tensors, manifest.get("info", {})

    def put(self, kind: str, parts: dict, tensors: dict[str, torch.Tensor], info: dict | None = None) -> None:
        if not self.enabled or self.read_only:
            return
        key = make_key(parts)
        entry = self.path(kind, key)
        try:
            self._write(kind, key, parts, tensors, info)
        except OSError as err:  # a full disk, a read-only folder: nothing half-written stays
            raise BenchError(f"cannot store cache entry {entry}: {err.strerror or err} "
                             f"(free space there or set BENCH_CACHE to another folder)") from None

    def _write(self, kind: str, key: str, parts: dict, tensors: dict[str, torch.Tensor], info: dict | None) -> None:
        entry = self.path(kind, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key[:8]}."))
        try:
            save_tensors(tmp / TENSORS, tensors)
            manifest = {"key": key, "kind": kind, "parts": parts, "sha256": file_sha256(tmp / TENSORS),
                        "info": info or {}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            if entry.exists() and self.get(kind, parts) is not None:
                return  # another writer stored the same value first
            try:
                os.replace(tmp, entry)
            except OSError:
                if not entry.exists():
                    raise  # a real failure, not a concurrent writer
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def images_identity(ids: list[str], images: torch.Tensor) -> dict:
    """Image ids plus a hash of the exact pixels fed to the models."""
    return {"ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16], "n": len(ids),
            "pixels_sha256": tensor_digest(images)}
