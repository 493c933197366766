"""Shared fixtures: small synthetic face folders and tiny generators, so tests run
offline in seconds. Tests that read ../shared skip cleanly where it is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generators.stargan import ATTRIBUTES, StarGAN

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CELEBA_ATTRS = (  # the 40 CelebA attributes, in the file order
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def shared_path(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent)")
    return path


def reference_layout(name: str) -> dict:
    return json.loads(shared_path("reference", name).read_text())


def random_state_from_layout(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the official keys and shapes, filled with random values; batch-norm
    statistics stay those of a fresh layer (a random variance can be negative), so the
    network's outputs are finite."""
    gen = torch.Generator().manual_seed(seed)

    def value(key: str, shape: list[int]) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.tensor(0, dtype=torch.long)
        if key.endswith("running_var"):
            return torch.ones(shape)
        if key.endswith("running_mean"):
            return torch.zeros(shape)
        return torch.randn(shape, generator=gen) * 0.05

    return {key: value(key, shape) for key, shape in layout["state_dict"].items()}


def write_attribute_file(path: Path, files: list[str], names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lines = [str(len(files)), " ".join(names)]
    for f in files:
        lines.append(f + " " + " ".join(rng.choice(["-1", "1"], len(names))))
    path.write_text("\n".join(lines) + "\n")


def make_face_folder(root: Path, n: int = 12, size=(40, 48), with_labels: bool = True) -> Path:
    """n random RGB images of a non-square size, plus CelebA-style labels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files = []
    for i in range(1, n + 1):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        name = f"{i}.png"
        Image.fromarray(pixels).save(root / name)
        files.append(name)
    if with_labels:
        write_attribute_file(root / "list_attr_test.txt", files, CELEBA_ATTRS)
    return root


@pytest.fixture
def face_folder(tmp_path) -> Path:
    return make_face_folder(tmp_path / "faces")


@pytest.fixture
def tiny_stargan() -> StarGAN:
    torch.manual_seed(0)
    return StarGAN(conv_dim=8, repeat_num=1, attributes=ATTRIBUTES).eval()


@pytest.fixture
def tiny_stargan_file(tmp_path, tiny_stargan) -> Path:
    path = tmp_path / "tiny_stargan.safetensors"
    tiny_stargan.save(path)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))


def write_random_clip_weights(root: Path) -> Path:
    """open_clip's ViT-B-32 layout (as built for OpenAI's weights) with seeded random
    weights, saved where the CLIP score looks under BENCH_WEIGHTS=root."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    path = root / "clip" / "ViT-B-32-openai.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(path))
    return path
