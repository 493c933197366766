import dataclasses

import torch

from bench.toolkit.metrics import DSR, L2, SSIM


def test_l2_and_dsr_per_pair():
    ref = torch.zeros(3, 3, 8, 8)
    out = ref.clone()
    out[1] += 0.2   # MSE 0.04: not disrupted
    out[2] += 0.25  # MSE 0.0625: disrupted
    assert torch.allclose(L2.per_pair(out, ref), torch.tensor([0.0, 0.04, 0.0625]))
    assert DSR.per_pair(out, ref).tolist() == [0.0, 0.0, 1.0]
    assert DSR.spec.threshold == 0.05 and not DSR.spec.higher_is_better


def test_dsr_threshold_is_strict(monkeypatch):
    # 0.25 = 0.5**2 exactly in floating point: an MSE equal to the threshold is not a success
    monkeypatch.setattr(DSR, "spec", dataclasses.replace(DSR.spec, threshold=0.25))
    ref = torch.zeros(1, 1, 4, 4)
    assert L2.per_pair(ref + 0.5, ref).item() == 0.25
    assert DSR.per_pair(ref + 0.5, ref).item() == 0.0
    assert DSR.per_pair(ref + 0.5001, ref).item() == 1.0


def test_ssim_identity_and_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(SSIM.per_pair(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    assert (SSIM.per_pair(noisy, x) < 0.9).all()
