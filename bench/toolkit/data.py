"""Face data sets: the project's demo faces, the CelebA and CelebA-HQ layouts and a
plain folder of images.

Every loader yields the same :class:`FaceSet`: an ordered list of image files with
optional CelebA-style binary attributes. Images are read lazily, cropped to their
central square (what the usual 178-pixel crop does for CelebA's 178x218), resized
to the requested resolution and returned as float tensors in [-1, 1].
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from bench.contract.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# Faces sampled from the project's own face generator (see its README): no photographs.
DEMO_FACES = Path(__file__).parents[1] / "demo"


def natural_key(name: str):
    """Sort '2.jpg' before '10.jpg'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_image(path: Path, resolution: int) -> np.ndarray:
    """Read one image as uint8 HxWx3 at `resolution`, centre-cropped to a square."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
            if side != resolution:
                img = img.resize((resolution, resolution), Image.Resampling.BICUBIC)
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def read_attribute_file(path: Path) -> tuple[list[str], dict[str, list[int]]]:
    """Parse the CelebA attribute format: count, names, then `file v1 v2 ...` (-1/1)."""
    try:
        lines = path.read_text().splitlines()
        names = lines[1].split()
        rows = {}
        for line_no, line in enumerate(lines[2:], start=3):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(names) + 1:
                raise ValueError(f"line {line_no} has {len(parts) - 1} values, expected {len(names)}")
            rows[parts[0]] = [1 if v == "1" else 0 for v in parts[1:]]
    except (OSError, IndexError, ValueError) as err:
        raise DataError(f"cannot read attribute file {path}: {err}") from None
    return names, rows


@dataclass
class FaceSet:
    """An ordered set of face images with optional binary attributes."""

    name: str
    root: Path
    files: list[Path]
    resolution: int
    attribute_names: list[str] = field(default_factory=list)
    attributes: torch.Tensor | None = None  # N x A, values 0/1
    labels_inferred_by: dict | None = None  # the classifier that labelled an unlabelled set, if one did

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ids(self) -> list[str]:
        return [f.name for f in self.files]

    def subset(self, start: int, stop: int) -> FaceSet:
        """Images start..stop-1 by index (clipped to the set's size)."""
        sl = slice(start, min(stop, len(self)))
        attrs = None if self.attributes is None else self.attributes[sl]
        return FaceSet(self.name, self.root, self.files[sl], self.resolution,
                       list(self.attribute_names), attrs, self.labels_inferred_by)

    def load_uint8(self, progress: bool = False) -> np.ndarray:
        files = self.files
        if progress:
            from tqdm import tqdm
            files = tqdm(files, desc=f"reading {self.name}", unit="img")
        if not self.files:
            return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
        return np.stack([read_image(f, self.resolution) for f in files])

    def load(self, progress: bool = False) -> torch.Tensor:
        """All images as N x 3 x R x R in [-1, 1]."""
        return to_tensor(self.load_uint8(progress))

    def labels(self, names: list[str]) -> torch.Tensor:
        """The attributes `names` as an N x len(names) float tensor of 0/1."""
        if self.attributes is None:
            raise DataError(f"data set {self.name} at {self.root} has no attribute labels "
                            "(add a CelebA-style list_attr*.txt beside the images)")
        missing = [n for n in names if n not in self.attribute_names]
        if missing:
            raise DataError(f"data set {self.name} lacks attributes {missing}")
        idx = [self.attribute_names.index(n) for n in names]
        return self.attributes[:, idx].float()

    def identity(self) -> dict:
        """What identifies these images in results and cache keys: their ids, not the
        folder they are in (a second copy of the data, or of the project with its demo
        faces, reuses the cache; the keys also hash the pixels)."""
        digest = hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:16]
        identity = {"name": self.name, "n": len(self), "resolution": self.resolution, "first": self.ids[:1],
                    "last": self.ids[-1:], "ids_sha256": digest}
        if self.labels_inferred_by:
            identity["labels_inferred_by"] = self.labels_inferred_by
        return identity


def _attach_attributes(files: list[Path], attr_file: Path | None):
    if attr_file is None:
        return [], None
    names, rows = read_attribute_file(attr_file)
    missing = [f.name for f in files if f.name not in rows]
    if missing:
        raise DataError(f"{attr_file} has no labels for {len(missing)} images, e.g. {missing[0]}")
    return names, torch.tensor([rows[f.name] for f in files], dtype=torch.uint8)


def _find_attribute_file(root: Path) -> Path | None:
    found = sorted(root.glob("list_attr*.txt"))
    return found[0] if found else None


def image_files(folder: Path, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """The folder's files with one of `suffixes`, in natural order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def load_celebahq(root: Path, resolution: int) -> FaceSet:
    """CelebA-HQ: `list_attr_celebahq.txt` and `images_<size>/` folders (or one image folder).

    Picks `images_<resolution>` when present, otherwise the smallest larger folder.
    Only images present on disk count, in the order of the attribute file.
    """
    attr_file = _find_attribute_file(root)
    if attr_file is None:
        raise DataError(f"no list_attr*.txt in {root} (expected the CelebA-HQ layout)")
    folders = {int(m.group(1)): p for p in root.glob("images_*")
               if (m := re.fullmatch(r"images_(\d+)", p.name)) and p.is_dir()}
    if resolution in folders:
        folder = folders[resolution]
    elif larger := [s for s in folders if s > resolution]:
        folder = folders[min(larger)]
    elif folders:
        folder = folders[max(folders)]
    else:
        candidates = sorted(p for p in root.iterdir() if p.is_dir())
        if len(candidates) != 1:
            raise DataError(f"expected images_<size>/ folders or a single image folder in {root}, "
                            f"found {[c.name for c in candidates]}")
        folder = candidates[0]
    names, rows = read_attribute_file(attr_file)
    files = [folder / f for f in sorted(rows, key=natural_key) if (folder / f).exists()]
    if not files:
        raise DataError(f"none of the images listed in {attr_file} exist in {folder}")
    attrs = torch.tensor([rows[f.name] for f in files], dtype=torch.uint8)
    return FaceSet("celebahq", root, files, resolution, names, attrs)


def load_celeba(root: Path, resolution: int) -> FaceSet:
    """CelebA: `img_align_celeba/` plus `list_attr_celeba.txt` (178x218 aligned faces)."""
    folder = root / "img_align_celeba"
    if not folder.is_dir():
        raise DataError(f"no img_align_celeba/ folder in {root} (expected the CelebA layout)")
    attr_file = root / "list_attr_celeba.txt"
    if not attr_file.exists():
        attr_file = _find_attribute_file(root)
    files = image_files(folder)
    if attr_file is not None:
        names, rows = read_attribute_file(attr_file)
        files = [f for f in files if f.name in rows]
    names, attrs = _attach_attributes(files, attr_file)
    return FaceSet("celeba", root, files, resolution, names, attrs)


def load_folder(root: Path, resolution: int) -> FaceSet:
    """Any folder of images; attributes from a CelebA-style list_attr*.txt if present."""
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    files = image_files(root)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    names, attrs = _attach_attributes(files, _find_attribute_file(root))
    return FaceSet("folder", root, files, resolution, names, attrs)


def load_demo(root: Path | None, resolution: int) -> FaceSet:
    """The demo face set shipped with the package (`root` is ignored)."""
    if not (DEMO_FACES / "list_attr_demo.txt").exists():
        raise DataError(f"the demo face set is missing from this installation ({DEMO_FACES}); "
                        "pass --data with a CelebA-HQ, CelebA or image folder instead")
    faces = load_folder(DEMO_FACES, resolution)
    faces.name = "demo"
    return faces


LOADERS = {"demo": load_demo, "celeba": load_celeba, "celebahq": load_celebahq, "folder": load_folder}


def load_faceset(path: str | Path, kind: str, resolution: int) -> FaceSet:
    if kind not in LOADERS:
        raise DataError(f"unknown dataset kind {kind!r}; choose one of {', '.join(LOADERS)}")
    if kind == "demo":
        return load_demo(None, resolution)
    if not path:
        raise DataError(f"--dataset {kind} needs --data PATH")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"data path does not exist: {root}")
    return LOADERS[kind](root, resolution)
