import torch

from bypasses.jpeg import JPEGCompression
from bypasses.none import NoBypass


def test_jpeg_is_a_real_lossy_roundtrip():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bilinear") * 2 - 1
    noisy = (smooth + 0.05 * torch.randn_like(smooth).sign()).clamp(-1, 1)
    low, high = JPEGCompression(quality=30).purify(noisy), JPEGCompression(quality=95).purify(noisy)
    assert low.shape == noisy.shape and low.min() >= -1 and low.max() <= 1
    err_low, err_high = (low - noisy).abs().mean(), (high - noisy).abs().mean()
    assert err_low > err_high > 0
    # JPEG is nearly idempotent: a second pass at the same quality changes far less
    again = JPEGCompression(quality=30).purify(low)
    assert (again - low).abs().mean() < 0.5 * err_low


def test_no_bypass_is_identity():
    x = torch.rand(1, 3, 4, 4)
    assert NoBypass().purify(x) is x


def test_jpeg_gradients_for_an_adaptive_defender():
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    for gradients in ("surrogate", "identity"):
        jpeg = JPEGCompression(quality=50, gradients=gradients)
        out = jpeg.purify_for_gradients(x)
        assert torch.allclose(out, jpeg.purify(x.detach()), atol=1e-5)  # the real JPEG's output
        (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, 32)).sum(), x)
        identity = torch.linspace(-1, 1, 32).expand_as(x)
        assert torch.equal(grad, identity) == (gradients == "identity")  # the surrogate's gradient differs
        assert grad.abs().sum() > 0
