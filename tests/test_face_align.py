"""Finding a face in a photo and cutting it out as CelebA-HQ's faces were cut: the
detector's quad lands where a pasted aligned crop lies, the differentiable cut agrees
with the attacker's Pillow cut, and a crop's change carried back onto the photo is cut
out again unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.harness.photo_path import carry_back
from bench.toolkit.composed_photos import background, compose, corner_error
from bench.toolkit.data import DEMO_FACES, to_tensor
from bench.toolkit.face_align import Quad, bounds, warp_differentiable, warp_like_attacker
from bench.toolkit.face_detection import detect_faces

SHARED_256 = Path(__file__).resolve().parents[2] / "shared" / "data" / "celebahq" / "images_256"


def as_tensor(image: Image.Image) -> torch.Tensor:
    return to_tensor(np.asarray(image)[None])


def demo_face(i: int) -> np.ndarray:
    return np.asarray(Image.open(DEMO_FACES / f"{i:06d}.png").convert("RGB"))


def test_the_quad_follows_the_landmarks():
    # eyes level 40 px apart, mouth 40 px below them: side max(4 * 40, 3.6 * 40) = 160
    landmarks = np.array([[80, 100], [120, 100], [100, 120], [85, 140], [115, 140]], dtype=float)
    quad = Quad.from_landmarks(landmarks)
    assert quad.side == pytest.approx(160) and np.allclose(quad.centre, [100, 104])
    turned = Quad.from_landmarks(landmarks @ np.array([[0, 1], [-1, 0]]))  # the face turned by 90 degrees
    assert turned.side == pytest.approx(160) and np.allclose(np.abs(turned.x), [0, 80])


def test_the_detector_finds_pasted_faces_where_they_were_pasted():
    photo = compose([demo_face(1), demo_face(2)], (520, 400), [3.0, 2.5], seed=0)
    found = [Quad.from_landmarks(f.landmarks) for f in detect_faces(photo.image)]
    assert len(found) == 2
    for truth in photo.faces:
        assert min(corner_error(q, truth) for q in found) < 0.08
    assert detect_faces(Image.fromarray(background(400, 300, seed=1))) == []


@pytest.mark.skipif(not SHARED_256.is_dir(), reason="needs CelebA-HQ in ../shared/data")
def test_celebahq_crops_are_their_own_quads():
    """CelebA-HQ's faces were cut by this rule: found again in an aligned crop, the quad is the crop."""
    errors = [corner_error(Quad.from_landmarks(detect_faces(Image.open(SHARED_256 / f"{i}.jpg"))[0].landmarks),
                           Quad.square(0, 0, 256)) for i in range(1, 11)]
    assert np.mean(errors) < 0.05


def test_the_differentiable_cut_agrees_with_the_attackers_pillow_cut():
    photo = compose([demo_face(3)], (400, 300), [3.0], seed=2)
    pasted = photo.faces[0]
    turn = np.deg2rad(8)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    for quad in (pasted, Quad(pasted.centre + [3.3, -2.1], rotation @ pasted.x, rotation @ pasted.y)):
        box = bounds([quad], *photo.image.size)
        ours = warp_differentiable(as_tensor(photo.image.crop(box)), quad, box[:2], 64)
        assert (ours - as_tensor(warp_like_attacker(photo.image, quad, 64))).abs().mean() < 0.02
    face = warp_differentiable(as_tensor(photo.image), pasted, (0, 0), 64)
    assert (face - as_tensor(Image.fromarray(demo_face(3)))).abs().mean() < 0.05  # the pasted face itself


def test_a_change_carried_back_onto_the_photo_is_cut_out_again():
    quad = Quad.from_landmarks(np.array([[150, 120], [200, 128], [172, 150], [155, 175], [195, 181]], dtype=float))
    box = bounds([quad], 400, 300)
    size = (box[3] - box[1], box[2] - box[0])
    assert all(s % 16 == 0 for s in size)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
                                             size=64, mode="bicubic", align_corners=False) * 0.1
    back = carry_back(smooth, quad, box[:2], size)
    again = warp_differentiable(back, quad, box[:2], 64)
    assert (again - smooth)[..., 4:-4, 4:-4].abs().max() < 0.01
