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
