import torch

from bench.metrics import DSR, L2, SSIM


def test_l2_and_dsr_per_pair():
    ref = torch.zeros(3, 3, 8, 8)
    out = ref.clone()
    out[1] += 0.2   # MSE 0.04: not disrupted
    out[2] += 0.25  # MSE 0.0625: disrupted
    assert torch.allclose(L2.per_pair(out, ref), torch.tensor([0.0, 0.04, 0.0625]))
    assert DSR.per_pair(out, ref).tolist() == [0.0, 0.0, 1.0]
    assert DSR.spec.threshold == 0.05 and not DSR.spec.higher_is_better


def test_dsr_threshold_is_strict():
    ref = torch.zeros(1, 1, 4, 4)
    out = torch.full_like(ref, 0.05 ** 0.5)
    assert L2.per_pair(out, ref).item() == torch.tensor(0.05 ** 0.5).pow(2).item()
    assert DSR.per_pair(out - 1e-4, ref).item() == 0.0


def test_ssim_identity_and_noise():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(SSIM.per_pair(x, x), torch.ones(2), atol=1e-5)
    noisy = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    assert (SSIM.per_pair(noisy, x) < 0.9).all()
