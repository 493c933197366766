"""Every file the paper profile reads, in its official layout but with random weights,
written where `bench download` says (under one BENCH_WEIGHTS folder): so the paper
profile can run end to end before anyone has the real checkpoints or a GPU. The numbers
such a run makes mean nothing; what it shows is that no step dies on a shape, a dtype or
a missing file.

    python -m tests.paper_weights FOLDER [--reference ../shared/reference]   (from the repository root)

- the three generators: the official state-dict layouts recorded in
  ../shared/reference (keys and shapes), random values, saved as the official files are
  (StarGAN a bare state dict, AttGAN under "G", HiSD under "gen_test");
- ComDefend: its official .npy files, copied from ../shared/weights;
- MMFA's feature networks: torchvision's ResNet-50 layout, and a small BLIP captioner
  saved as the hub folder would be (the full one is 1 GB; the code path is the same).
FID's Inception and CLIP are left as they are here (a run names what it skips).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from bench.contract.registry import registry
from tests.conftest import random_state_from_layout

GENERATOR_LAYOUTS = {"stargan": "stargan_G_c5.json", "attgan": "attgan_G_256_shortcut1_inject0.json",
                     "hisd": "hisd_gen_celebahq256.json"}


def write_generators(root: Path, reference: Path) -> list[Path]:
    written = []
    for name, layout_file in GENERATOR_LAYOUTS.items():
        cls = registry("generators").get(name)
        state = random_state_from_layout(json.loads((reference / layout_file).read_text()))
        key = cls.official_checkpoint.get("key")
        path = root / name / cls.official_checkpoint["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state if key is None else {key: state}, path)
        written.append(path)
    return written


def write_comdefend(root: Path, reference: Path) -> list[Path]:
    """ComDefend's official weights are small and shared beside the reference layouts:
    copied as they are."""
    folder = root / "comdefend"
    folder.mkdir(parents=True, exist_ok=True)
    official = reference.parent / "weights" / "comdefend"
    written = []
    for name in ("enc20_0.0001.npy", "dec20_0.0001.npy"):
        shutil.copyfile(official / name, folder / name)
        written.append(folder / name)
    return written


def write_feature_networks(root: Path) -> list[Path]:
    import transformers
    from torchvision.models import resnet50

    torch.manual_seed(0)
    resnet = root / "resnet50" / "resnet50-0676ba61.pth"
    resnet.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet50().state_dict(), resnet)
    config = transformers.BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, encoder_hidden_size=32))
    blip = root / "blip-image-captioning-base"
    transformers.BlipForConditionalGeneration(config).save_pretrained(blip)
    return [resnet, blip]


def write_paper_weights(root: Path, reference: Path) -> list[Path]:
    return write_generators(root, reference) + write_comdefend(root, reference) + write_feature_networks(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the BENCH_WEIGHTS folder to fill")
    parser.add_argument("--reference", default=str(Path(__file__).resolve().parents[2] / "shared" / "reference"))
    args = parser.parse_args()
    for path in write_paper_weights(Path(args.folder), Path(args.reference)):
        print(path)


if __name__ == "__main__":
    main()
