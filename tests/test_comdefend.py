import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.contract.errors import ConfigError, WeightsError
from bypasses.comdefend import (
    COM_CHANNELS,
    OFFICIAL_FILES,
    REC_CHANNELS,
    ComDefend,
    ComDefendNet,
    binarise,
    hwio_shapes,
    load_official,
)
from tests.conftest import reference_layout, shared_path

CPU = torch.device("cpu")
OFFICIAL_PARAMS = 783_372 + 783_363  # elements of the official enc and dec files (reference layout)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, on [-1, 1] (peak-to-peak 2)."""
    return 10 * torch.log10(4 / (a - b).pow(2).mean(dim=(1, 2, 3)))


def random_purifier(**params) -> ComDefend:
    torch.manual_seed(0)
    bypass = ComDefend(**params)
    bypass.load_state(ComDefendNet().state_dict(), {})
    return bypass


def images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def write_canton_file(path, shapes, dtype=np.float32, member="w", seed=0):
    """A weight file as canton writes it: an npz archive holding one object array."""
    rng = np.random.default_rng(seed)
    arrays = np.empty(len(shapes), dtype=object)
    arrays[:] = [rng.standard_normal(s).astype(dtype) * 0.05 for s in shapes]
    with open(path, "wb") as f:  # a file object: numpy would append .npz to a name
        np.savez_compressed(f, **{member: arrays})
    return list(arrays)


def write_official_layout(folder, **kwargs):
    folder.mkdir(exist_ok=True)
    return {part: write_canton_file(folder / OFFICIAL_FILES[part], hwio_shapes(channels), **kwargs)
            for part, channels in (("com", COM_CHANNELS), ("rec", REC_CHANNELS))}


def test_purify_keeps_shape_and_range_and_decodes_a_binary_code():
    bypass = random_purifier()
    x = images()
    out = bypass.purify(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    net = bypass.net
    code = binarise(net.soft_code((x + 1) / 2, 1.0, torch.Generator().manual_seed(0)))
    assert set(code.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out, net.rec(code) * 2 - 1)  # purify is exactly this test path


def test_purify_is_deterministic_under_the_noise_seed():
    x = images()
    a, b = random_purifier().purify(x), random_purifier().purify(x)
    assert torch.equal(a, b)
    other = random_purifier(noise_seed=1).purify(x)
    assert not torch.equal(a, other)  # the code noise is real, only seeded
    assert torch.equal(random_purifier(code_noise=0.0).purify(x), random_purifier(code_noise=0.0, noise_seed=1).purify(x))


def test_binarisation_is_straight_through():
    z = torch.linspace(-3, 3, 13, requires_grad=True)
    soft = torch.sigmoid(z)
    hard = binarise(soft)
    assert torch.equal(hard, (z > 0).float())
    hard.sum().backward()
    assert torch.allclose(z.grad, soft * (1 - soft))


def test_gradients_flow_through_purify():
    bypass = random_purifier()
    x = images().requires_grad_(True)
    bypass.purify(x).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in bypass.net.parameters())  # the purifier itself stays frozen


def smooth_faces(n=4, size=12, seed=0):
    """Smooth colour fields: what a tiny ComDefend can learn to reconstruct in a few steps."""
    corners = torch.rand(n, 3, 2, 2, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(corners, size=size, mode="bilinear", align_corners=False) * 2 - 1


def _fit(seed=0, **params):
    faces = smooth_faces()
    bypass = ComDefend(**{"epochs": 2, "batch_size": 2, "crop": 8, **params})
    state, info = bypass.fit(None, faces, torch.zeros(5, 4, 5), seed, CPU)  # a generator's 5 targets are ignored
    return bypass, state, info, faces


def test_fit_reduces_the_loss_and_load_state_restores_the_purifier():
    # whole images, the full batch and no code noise: the curve is the objective on fixed data
    bypass, state, info, faces = _fit(epochs=30, batch_size=4, crop=0, train_code_noise=0.0)
    assert info["source"] == "trained" and info["steps"] == 30 == len(info["loss_curve"])  # one step per batch
    assert info["trainable_params"] == OFFICIAL_PARAMS and info["train_seconds"] > 0
    curve = info["loss_curve"]
    assert curve[-1] < 0.3 * curve[0]  # measured 0.04-0.15 over five seeds
    restored = ComDefend()
    restored.load_state(state, info)
    assert torch.equal(restored.purify(faces), bypass.purify(faces))


def test_fit_is_deterministic_under_a_seed():
    _, a, info, _ = _fit(seed=3)  # random crops and code noise of std 20, as in the official recipe
    _, b, *_ = _fit(seed=3)
    _, c, *_ = _fit(seed=4)
    assert info["steps"] == 2 * 2
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert not all(torch.equal(v, c[k]) for k, v in a.items())


def test_unknown_weight_source_is_rejected():
    with pytest.raises(ConfigError, match="'weights' must be 'train' or 'official'"):
        ComDefend(weights="imagenet")


def test_official_layout_matches_the_reference():
    layout = reference_layout("comdefend_npy_layout.json")["files"]
    for part, channels in (("com", COM_CHANNELS), ("rec", REC_CHANNELS)):
        arrays = layout[OFFICIAL_FILES[part]]["arrays"]
        assert [tuple(a["shape"]) for a in arrays] == hwio_shapes(channels)
    assert sum(p.numel() for p in ComDefendNet().parameters()) == OFFICIAL_PARAMS


def test_canton_files_load_kernels_as_oihw(tmp_path):
    written = write_official_layout(tmp_path)
    net = load_official(tmp_path)
    convs = [m for m in net.com.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 9
    assert torch.equal(convs[0].weight, torch.from_numpy(written["com"][0].transpose(3, 2, 0, 1)))
    assert torch.equal(convs[8].bias, torch.from_numpy(written["com"][17]))
    assert convs[4].weight.shape == (256, 128, 3, 3)


@pytest.mark.parametrize("damage,message", [
    ("missing", "not found at .*bench download"),
    ("not_zip", "not a zip archive"),
    ("member", r"members \['x.npy'\]"),
    ("float64", "does not hold the ComDefend layout"),
    ("corrupted", "cannot read ComDefend weights"),
])
def test_damaged_weight_files_give_a_weights_error(tmp_path, damage, message):
    folder = tmp_path / "comdefend"
    if damage == "missing":
        folder.mkdir()
    elif damage == "member":
        write_official_layout(folder, member="x")
    elif damage == "float64":
        write_official_layout(folder, dtype=np.float64)
    else:
        write_official_layout(folder)
        enc = folder / OFFICIAL_FILES["com"]
        data = enc.read_bytes()
        middle = len(data) // 2  # zeroes part of the deflated member: the archive still opens
        enc.write_bytes(b"not a zip" if damage == "not_zip" else data[:middle] + bytes(4096) + data[middle + 4096:])
    bypass = ComDefend(weights="official", official_dir=str(folder))
    with pytest.raises(WeightsError, match=message) as caught:
        bypass.fit(None, images(), torch.zeros(1, 2, 1), 0, CPU)
    assert "\n" not in str(caught.value)


def test_official_weights_reconstruct_real_faces(monkeypatch):
    weights = shared_path("weights", "comdefend")
    monkeypatch.setenv("BENCH_WEIGHTS", str(weights.parent))
    bypass = ComDefend(weights="official")
    state, info = bypass.fit(None, images(), torch.zeros(1, 2, 1), 0, CPU)
    assert info["source"] == "official" and info["train_seconds"] == 0 and info["steps"] == 0
    assert info["trainable_params"] == OFFICIAL_PARAMS
    folder = shared_path("data", "celebahq", "images_64")
    faces = torch.stack([torch.from_numpy(np.array(Image.open(folder / f"{i}.jpg").convert("RGB")))
                         for i in range(1, 9)]).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        quality = psnr(bypass.purify(faces), faces)
    assert quality.min() > 28 and quality.mean() > 30  # measured: mean 31.7 dB, min 30.4 dB
    restored = ComDefend(weights="official")
    restored.load_state(state, info)
    with torch.no_grad():
        assert torch.equal(restored.purify(faces[:2]), bypass.purify(faces[:2]))
