"""Feature extractors: frozen networks for feature-alignment losses (LoRA patching's MMFA
loss), and `FeatureTap`, which reads a generator's own mid-level features.

Each maps images in [-1, 1] (N, 3, H, W) to features (N, D) and carries gradients to
its input (its own weights are frozen). Names:

- `resnet50`: torchvision's ResNet-50 with ImageNet weights (IMAGENET1K_V1), fc removed,
  2048-d, at 224 px with ImageNet normalisation (the paper's image-feature network).
  Weights: torchvision's file in torch's hub cache (`torch.hub.get_dir()/checkpoints`) or
  `$BENCH_WEIGHTS/resnet50/`.
- `blip`: the vision tower of BLIP (Salesforce/blip-image-captioning-base), CLS token of
  the last hidden state, 768-d, at 384 px with BLIP's normalisation (the paper's
  semantic-feature network). Weights: a local copy of the model folder at
  `$BENCH_WEIGHTS/blip-image-captioning-base/` (needs `transformers`: the `paper` extra).
- `classifier_features` and `classifier_attributes`: offline substitutes from the
  project's own attribute classifier (trained on CelebA-HQ faces): its pooled
  penultimate features (a face-image feature), and its attribute probabilities (what
  the face shows: a semantic feature). Runs that use them record the names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import ConfigError, WeightsError
from bench.contract.plugins import weights_root

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BLIP_MEAN, BLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
BLIP_FOLDER = "blip-image-captioning-base"


class Preprocessed(nn.Module):
    """[-1, 1] images -> resized and normalised -> a frozen network -> (N, D) features."""

    def __init__(self, net: nn.Module, size: int, mean, std, read=lambda out: out):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.size, self.read = size, read
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.read(self.net((x - self.mean) / self.std)).flatten(1)

    def train(self, mode: bool = True):  # always frozen, BatchNorm included
        return super().train(False)


def resnet50_network() -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50()
    net.fc = nn.Identity()
    return net


def resnet50_weights_path() -> Path:
    from torchvision.models import ResNet50_Weights

    file = Path(ResNet50_Weights.IMAGENET1K_V1.url).name
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / file, weights_root() / "resnet50" / file]
    return next((p for p in candidates if p.exists()), candidates[-1])


def load_resnet50() -> nn.Module:
    path = resnet50_weights_path()
    if not path.exists():
        raise WeightsError(f"ResNet-50 ImageNet weights not found at {path} (or torch's hub cache); "
                           "see `bench download`, or use an offline substitute "
                           "(--set bypasses.lora.image_features=classifier_features)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    net = resnet50_network()
    net.load_state_dict(state, strict=True)
    return net


def blip_vision_network(folder: Path) -> nn.Module:
    """BLIP's vision tower from a local model folder (the vision part of a
    BlipForConditionalGeneration checkpoint, or a saved BlipVisionModel)."""
    try:
        from transformers import BlipForConditionalGeneration, BlipVisionModel
    except ImportError:
        raise ConfigError("the BLIP feature extractor needs transformers: "
                          "pip install 'deepfake-defense-bench[paper]'") from None
    if not (folder / "config.json").exists():
        raise WeightsError(f"BLIP weights not found at {folder} (a local copy of "
                           f"Salesforce/{BLIP_FOLDER}); see `bench download`, or use an offline substitute "
                           "(--set bypasses.lora.semantic_features=classifier_attributes)")
    if json.loads((folder / "config.json").read_text()).get("model_type") == "blip":  # the whole captioner
        return BlipForConditionalGeneration.from_pretrained(str(folder), local_files_only=True).vision_model
    return BlipVisionModel.from_pretrained(str(folder), local_files_only=True)


def blip_cls_token(out) -> torch.Tensor:
    return out.last_hidden_state[:, 0]


def load_extractor(name: str) -> nn.Module:
    """The frozen extractor `name` (see the module docstring), on the CPU."""
    if name == "resnet50":
        return Preprocessed(load_resnet50(), 224, IMAGENET_MEAN, IMAGENET_STD)
    if name == "blip":
        net = blip_vision_network(weights_root() / BLIP_FOLDER)
        return Preprocessed(net, net.config.image_size, BLIP_MEAN, BLIP_STD, read=blip_cls_token)
    if name in ("classifier_features", "classifier_attributes"):
        from bench.toolkit.classifier import AttributeClassifier

        return classifier_extractor(AttributeClassifier.load(), name)
    raise ConfigError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")


def classifier_extractor(classifier: nn.Module, name: str) -> nn.Module:
    if name == "classifier_features":
        return Preprocessed(classifier.features, classifier.config["resolution"], (0.5,) * 3, (0.5,) * 3,
                            read=lambda maps: maps.mean(dim=(2, 3)))
    return Preprocessed(classifier, classifier.config["resolution"], (0.5,) * 3, (0.5,) * 3, read=torch.sigmoid)


EXTRACTORS = ("resnet50", "blip", "classifier_features", "classifier_attributes")


class FeatureTap:
    """Records the output of a generator's feature module during a forward pass."""

    def __init__(self, generator):
        module = generator.feature_module()
        self.value = None
        self.handle = module.register_forward_hook(self._keep) if module is not None else None

    def _keep(self, module, inputs, output):
        self.value = output[-1] if isinstance(output, (list, tuple)) else output

    def close(self):
        if self.handle is not None:
            self.handle.remove()
