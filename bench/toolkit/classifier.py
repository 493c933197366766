"""The attribute classifier behind the `edit_success` metrics.

A small CNN trained by the project on the CelebA-HQ training split (64 px) to see the
attributes the generators edit. It answers "does this output show the attribute the
edit asked for?", which pixel metrics against the original fake cannot. Its held-out
accuracy is stored in its weights file and printed by `bench ls -v`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256, load_tensors, save_tensors
from bench.contract.params import Count, NonNegative, NonNegativeInt, Positive, Resolution, Seed

# The attributes any shipped generator conditions on (AttGAN's 13 include StarGAN's and
# HiSD's), so the classifier can also label the demo faces for every generator.
ATTRIBUTES = ["Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses",
              "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young"]
SHIPPED = Path(__file__).parents[1] / "weights" / "attribute_classifier_64.safetensors"


class AttributeClassifier(nn.Module):
    """Conv-BN-ReLU stages halving the resolution, global average pooling, one logit
    per attribute. Inputs of any size are resized to `resolution`."""

    def __init__(self, attributes=ATTRIBUTES, width: int = 32, stages: int = 4, resolution: int = 64):
        super().__init__()
        self.config = {"attributes": list(attributes), "width": width, "stages": stages,
                       "resolution": resolution}
        layers, ch = [], 3
        for i in range(stages):
            out = width * 2 ** i
            layers += [nn.Conv2d(ch, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, len(attributes))

    @property
    def attribute_names(self) -> list[str]:
        return self.config["attributes"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.config["resolution"]
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.features(x).mean(dim=(2, 3)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Images (N,3,H,W) in [-1,1] -> (N, A) probabilities, on the classifier's device."""
        device = next(self.parameters()).device
        probs = [torch.sigmoid(self(images[i:i + batch_size].to(device).float())).cpu()
                 for i in range(0, images.size(0), batch_size)]
        return torch.cat(probs) if probs else torch.zeros(0, len(self.attribute_names))

    def save(self, path: Path, meta: dict) -> None:
        save_tensors(path, self.state_dict(), {"model": "attribute_classifier", "config": self.config, **meta})

    @classmethod
    def load(cls, path: Path = SHIPPED) -> "AttributeClassifier":
        path = Path(path)
        if not path.exists():
            raise WeightsError(f"attribute classifier weights not found at {path}; "
                               "train them with `bench train-classifier`")
        tensors, meta = load_tensors(path)
        if meta.get("model") != "attribute_classifier":
            raise WeightsError(f"{path} does not hold attribute classifier weights")
        model = cls(**meta["config"])
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"{path} does not fit the attribute classifier: "
                               f"{str(err).splitlines()[0]}") from None
        model.metadata, model.path = meta, path
        return model.eval().requires_grad_(False)


def label_faces(faces, classifier: AttributeClassifier | None = None):
    """`faces` (a FaceSet without labels) with the attributes the classifier sees in them
    (probability > 0.5), recording which classifier labelled them: what a folder of a
    person's own photos needs to be edited by attribute-conditioned generators."""
    classifier = classifier or AttributeClassifier.load()
    probabilities = classifier.predict(faces.load(progress=len(faces) > 200))
    path = Path(getattr(classifier, "path", SHIPPED))
    source = {"classifier": "attribute_classifier", "file": path.name, "sha256": file_sha256(path), "threshold": 0.5}
    return replace(faces, attribute_names=list(classifier.attribute_names),
                   attributes=(probabilities > 0.5).to(torch.uint8), labels_inferred_by=source)


@dataclass
class TrainParams:
    resolution: Resolution = 64
    width: Count = 32
    stages: Count = 4
    batch_size: Count = 64
    iters: Count = 3000
    lr: Positive = 1e-3
    weight_decay: NonNegative = 1e-4
    train_start: NonNegativeInt = 0
    train_stop: Count = 27000
    test_start: NonNegativeInt = 29000  # held-out faces for the reported accuracy
    test_stop: Count = 30000
    seed: Seed = 1234
    checkpoint_every: Count = 500


def evaluate(model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per-attribute accuracy and balanced accuracy (mean of the two class recalls: some
    attributes are rare, e.g. Blond_Hair, so plain accuracy flatters a lazy classifier)."""
    predicted = model.predict(images) > 0.5
    truth = labels.bool()
    result = {}
    for i, name in enumerate(model.attribute_names):
        p, t = predicted[:, i], truth[:, i]
        recalls = [(p[t == v] == v).float().mean().item() for v in (True, False) if (t == v).any()]
        result[name] = {"accuracy": round((p == t).float().mean().item(), 4),
                        "balanced_accuracy": round(sum(recalls) / len(recalls), 4),
                        "positives": int(t.sum())}
    return result


def train(params: TrainParams, faceset, out_dir: Path, device: torch.device, export: Path | None = None,
          command: str = "") -> AttributeClassifier:
    from bench.toolkit.training import BatchSampler, TrainingRun

    torch.manual_seed(params.seed)
    train_set = faceset.subset(params.train_start, params.train_stop)
    test_set = faceset.subset(params.test_start, params.test_stop)
    model = AttributeClassifier(ATTRIBUTES, params.width, params.stages, params.resolution).to(device)
    opt = torch.optim.AdamW(model.parameters(), params.lr, weight_decay=params.weight_decay)
    sampler = BatchSampler(train_set.load_uint8(progress=True), train_set.labels(ATTRIBUTES),
                           params.batch_size, params.seed)
    run = TrainingRun(out_dir, params.iters, params.checkpoint_every)
    start = run.resume({"model": model}, {"opt": opt}, sampler)
    started, losses = time.time(), {}
    bar = run.progress(start, "train attribute classifier")
    for it in bar:
        lr = params.lr * 0.5 * (1 + torch.cos(torch.tensor(it / params.iters * torch.pi)).item())
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = next(sampler)
        model.train()
        loss = F.binary_cross_entropy_with_logits(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses["bce"] = loss.item()
        if (it + 1) % run.log_every == 0:
            run.log(it + 1, losses, started)
            bar.set_postfix(bce=f"{loss.item():.3f}")
        if (it + 1) % params.checkpoint_every == 0 or it + 1 == params.iters:
            run.save(it + 1, {"model": model}, {"opt": opt}, sampler)
    model = model.cpu().eval().requires_grad_(False)
    accuracy = evaluate(model, test_set.load(), test_set.labels(ATTRIBUTES))
    for name, row in accuracy.items():
        print(f"{name:12s} accuracy {row['accuracy']:.3f}  balanced {row['balanced_accuracy']:.3f}")
    if export is not None:
        model.save(export, {"training": {**asdict(params), "data": train_set.identity(), "command": command},
                            "held_out": {"data": test_set.identity(), "accuracy": accuracy}})
    return model
