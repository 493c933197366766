import torch

from bench.toolkit.marks import apply_mark, mark_recovery, mark_region, warning_mark


def test_mark_covers_about_five_percent_bottom_left():
    for size in (64, 256):
        region = mark_region(warning_mark(size))
        assert 0.04 < region.float().mean() < 0.08
        rows, cols = torch.nonzero(region, as_tuple=True)
        assert rows.min() > size / 2 and cols.max() < size / 2  # bottom-left quadrant


def test_mark_text_is_configurable_and_saturates_the_target():
    ai, other = warning_mark(64), warning_mark(64, text="FAKE")
    assert not torch.equal(ai, other)
    y = torch.zeros(2, 3, 64, 64)
    marked = apply_mark(y, ai)
    region = mark_region(ai)
    assert marked.max() <= 1 and torch.equal(marked[..., ~region], y[..., ~region])
    assert (marked[:, 0][:, region] > 0.5).float().mean() > 0.9  # the triangle is red where it is drawn


def test_mark_recovery_is_one_for_the_mark_and_zero_without_it():
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    ai = warning_mark(64)
    marked, region = apply_mark(y, ai), mark_region(ai)
    outputs = torch.stack([marked, y, (marked + y) / 2])  # (T=3, N=2, ...)
    recovery = mark_recovery(outputs, marked, y, region)
    assert recovery.shape == (3, 2)
    assert torch.allclose(recovery, torch.tensor([[1.0], [0.0], [0.75]]).expand(3, 2), atol=1e-5)
