"""bench.toolkit.brisque against OpenCV's cv2.quality.QualityBRISQUE_compute with the shipped
LIVE model: synthetic images (always, where cv2.quality is installed) and CelebA-HQ
faces at 64 and 256 px (where ../shared holds them)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from bench.toolkit import brisque as B
from tests.conftest import shared_path

TOLERANCE = 0.5  # per image, in BRISQUE points (0-100)
FACES = {64: (3, 680, 1000, 12345, 29001, 30000),  # 680: flat background touching the edge
         256: (3, 20, 43, 266, 700, 1500)}  # 43, 266: flat patches where IPP's rounding matters


def to_tensor(u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1


def box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    kernel = np.ones(2 * radius + 1) / (2 * radius + 1)
    for axis in (0, 1):
        a = np.apply_along_axis(
            lambda v: np.convolve(np.pad(v, radius, mode="edge"), kernel, mode="valid"), axis, a)
    return a


def synthetic_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64] / 63.0
    gradient = np.stack([x * 255, y * 255, (1 - x) * 200 + 20], -1)
    rows, cols = np.mgrid[0:48, 0:40]
    texture = 127 + 80 * np.sin(rows[..., None] * 0.7 + np.arange(3)) * np.cos(cols[..., None] * 0.4)
    images = {
        "gradient": gradient,
        "gradient+noise": gradient + rng.normal(0, 6, gradient.shape),
        "noise": rng.integers(0, 256, (64, 64, 3)),
        "blurred noise": box_blur(rng.integers(0, 256, (64, 64, 3)).astype(float), 2),
        "texture 48x40": texture + rng.normal(0, 10, texture.shape),
        "noise 128": rng.normal(128, 40, (128, 128, 3)),
        "uniform": np.full((64, 64, 3), 128),  # NaN features: OpenCV's capped kernel gives 0
        "two halves": np.concatenate([np.full((64, 32, 3), 90), np.full((64, 32, 3), 200)], 1),
    }
    return {name: np.clip(np.round(a), 0, 255).astype(np.uint8) for name, a in images.items()}


def load_faces(size: int) -> np.ndarray:
    folder = shared_path("data", "celebahq", f"images_{size}")
    return np.stack([np.asarray(Image.open(folder / f"{i}.jpg").convert("RGB")) for i in FACES[size]])


def opencv_quality():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "quality"):
        pytest.skip("cv2.quality (opencv-contrib) is not installed")
    if not cv2.ipp.useIPP():
        pytest.skip("OpenCV runs without IPP: its BRISQUE score is then wrong (0 or 100) in OpenCV 5.1")
    return cv2


def opencv_scores(cv2, images: list[np.ndarray]) -> np.ndarray:
    model, ranges = (str(p) for p in B.MODEL_FILES)
    return np.array([cv2.quality.QualityBRISQUE_compute(np.ascontiguousarray(a[..., ::-1]), model, ranges)[0]
                     for a in images])


def test_model_reader():
    model = B.load_model()
    assert model.support_vectors.shape == (774, 36)
    assert model.dual_coef.shape == (774,)
    assert model.feature_min.shape == model.feature_max.shape == (36,)
    assert model.gamma == pytest.approx(0.05)
    assert model.rho == pytest.approx(-149.63506109127357)
    assert bool((model.feature_max > model.feature_min).all())
    assert model.dual_coef.abs().max() == pytest.approx(1024)  # C of the training
    digest = hashlib.sha256(B.MODEL_FILES[0].read_bytes() + B.MODEL_FILES[1].read_bytes()).hexdigest()
    assert B.model_sha256() == digest


def test_model_reader_matches_opencv():
    cv2 = opencv_quality()
    svm = cv2.ml.SVM_load(str(B.MODEL_FILES[0]))
    model = B.load_model()
    assert np.array_equal(svm.getSupportVectors(), model.support_vectors.numpy())
    rho, alpha, _ = svm.getDecisionFunction(0)
    assert rho == model.rho
    assert np.array_equal(alpha.ravel(), model.dual_coef.numpy())


def test_matches_opencv_on_synthetic_images():
    cv2 = opencv_quality()
    images = synthetic_images()
    expected = opencv_scores(cv2, list(images.values()))
    ours = np.array([B.brisque(to_tensor(a[None])).item() for a in images.values()])
    for name, e, o in zip(images, expected, ours):
        assert abs(o - e) <= TOLERANCE, f"{name}: OpenCV {e:.4f}, bench.toolkit.brisque {o:.4f}"
    assert np.abs(ours - expected).mean() < 0.01


@pytest.mark.parametrize("size", sorted(FACES))
def test_matches_opencv_on_faces(size):
    cv2 = opencv_quality()
    if not any(isa in cv2.ipp.getIppVersion() for isa in ("AVX2", "AVX-512")):
        pytest.skip(f"IPP runs {cv2.ipp.getIppVersion()}: its resize rounds unlike the AVX2 / AVX-512 "
                    "kernels bench.toolkit.brisque copies, which moves OpenCV's own scores by up to 1.3")
    faces = load_faces(size)
    expected = opencv_scores(cv2, list(faces))
    ours = B.brisque(to_tensor(faces)).numpy()
    for face, e, o in zip(FACES[size], expected, ours):
        assert abs(o - e) <= TOLERANCE, f"face {face} at {size} px: OpenCV {e:.4f}, bench.toolkit.brisque {o:.4f}"
    assert np.abs(ours - expected).mean() < 0.01  # measured: max 0.002 on these, 0.015 on 1,000 faces


def test_batch_gives_the_same_scores_as_one_at_a_time():
    images = [a for a in synthetic_images().values() if a.shape == (64, 64, 3)]
    batch = to_tensor(np.stack(images))
    together = B.brisque(batch)
    in_pairs = B.brisque(batch, batch_size=2)
    alone = torch.cat([B.brisque(batch[i:i + 1]) for i in range(len(images))])
    assert together.dtype == torch.float64 and together.shape == (len(images),)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(together, in_pairs, rtol=0, atol=1e-6)


def test_distortions_score_worse_than_the_clean_face():
    face = load_faces(256)[:1]
    clean = to_tensor(face)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    blurred = to_tensor(box_blur(face[0].astype(float), 4)[None].round().astype(np.uint8))
    scores = B.brisque(torch.cat([clean, noisy, blurred]))
    assert bool(torch.isfinite(scores).all())
    assert scores[1] > scores[0] + 10 and scores[2] > scores[0] + 10, scores


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        B.brisque(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError):
        B.brisque(torch.zeros(1, 3, 4, 4))
