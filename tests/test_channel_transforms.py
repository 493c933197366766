"""The channel transforms of the cost ladder: real 8-bit Pillow transforms whose
strength orders how much they change an image, whose outputs do not depend on the batch
an image comes in, and whose surrogate gradients keep the real output."""

import io

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from bench.contract.registry import registry
from bench.contract.results import CHANNEL_TRANSFORM
from bench.toolkit.codecs import to_uint8

# plugin -> (weaker, stronger) settings of its strength
STRENGTHS = {"jpeg": ({"quality": 95}, {"quality": 30}), "webp": ({"quality": 90}, {"quality": 30}),
             "resize": ({"scale": 0.75}, {"scale": 0.25}), "blur": ({"sigma": 0.5}, {"sigma": 2.0}),
             "noise": ({"sigma": 2.0}, {"sigma": 16.0}), "social": ({"scale": 0.9}, {"scale": 0.4})}


def faces(n=3, size=32, seed=0):
    """Smooth images with some texture, like faces at low resolution."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")
    return (smooth * 2 - 1 + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(-1, 1)


def make(name, **params):
    return registry("bypasses").get(name)(**params)


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_a_stronger_setting_changes_the_image_more_and_outputs_are_8_bit(name):
    x = faces()
    weak, strong = (make(name, **p).purify(x) for p in STRENGTHS[name])
    for out in (weak, strong):
        assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
        levels = (out + 1) * 127.5
        assert torch.allclose(levels, levels.round(), atol=1e-4)  # what a file would hold
    assert (strong - x).abs().mean() > (weak - x).abs().mean() > 0


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_an_image_comes_out_the_same_alone_or_in_a_batch(name):
    x = faces(4)
    transform = make(name, **STRENGTHS[name][1])
    assert torch.equal(transform.purify(x)[2:3], transform.purify(x[2:3]))


def test_noise_is_seeded_and_differs_between_images_and_seeds():
    x = faces(2)
    x = torch.cat([x[:1], x[:1], x[1:]])  # the same image twice
    out = make("noise", sigma=8.0).purify(x)
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0] - x[0], out[2] - x[2])
    assert not torch.equal(out, make("noise", sigma=8.0, seed=1).purify(x))
    levels = (out - x) * 127.5
    assert 5 < float(levels.std()) < 11  # sigma 8 levels, less where clipped


def test_social_chain_writes_4_2_0_jpeg_at_its_quality():
    """The chain's JPEG is 4:2:0 (what the social network's encoder does), as plain JPEG's."""
    image = Image.fromarray(to_uint8(faces(1))[0])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85, subsampling="4:2:0")
    assert JpegImagePlugin.get_sampling(Image.open(buffer)) == 2  # Pillow's code for 4:2:0
    one_pass = make("social", scale=1.0, quality=85).purify(faces(1))
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert np.array_equal(to_uint8(one_pass)[0], expected)


@pytest.mark.parametrize("name", ["resize", "blur", "social"])
def test_surrogate_gradients_keep_the_real_output(name):
    x = faces(2).requires_grad_(True)
    for gradients in ("surrogate", "identity"):
        transform = make(name, gradients=gradients)
        out = transform.purify_for_gradients(x)
        assert torch.allclose(out, transform.purify(x.detach()), atol=1e-5)
        weights = torch.linspace(-1, 1, x.size(-1))
        (grad,) = torch.autograd.grad((out * weights).sum(), x)
        assert torch.equal(grad, weights.expand_as(x)) == (gradients == "identity")


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_each_transform_declares_a_channel_transform_and_its_strength(name):
    transform = make(name, **STRENGTHS[name][1])
    cost = transform.attack_cost()
    assert cost["rung"] == CHANNEL_TRANSFORM and cost["faces"] == 0
    key = cost["strength"]["name"]
    assert cost["strength"]["value"] == STRENGTHS[name][1][key]
    assert cost["strength"]["stronger"] == ("lower" if STRENGTHS[name][1][key] < STRENGTHS[name][0][key] else "higher")
