import pytest
import torch

from bench.contract.errors import WeightsError
from generators.stargan import ATTRIBUTES, StarGAN
from generators.stargan.recipe import Discriminator
from tests.conftest import random_state_from_layout, reference_layout


def test_official_layout_loads_strictly(tmp_path):
    layout = reference_layout("stargan_G_c5.json")
    state = random_state_from_layout(layout)
    path = tmp_path / "200000-G.ckpt"
    torch.save(state, path)  # the official file is a bare state dict
    G = StarGAN.load_official(path)
    assert list(G.state_dict()) == list(layout["state_dict"])
    assert sum(p.numel() for p in G.parameters()) == layout["num_params"] == 8_430_528
    assert torch.equal(G.state_dict()["main.21.weight"], state["main.21.weight"])
    x, c = torch.rand(1, 3, 32, 32) * 2 - 1, torch.zeros(1, 5)
    assert G(x, c).shape == (1, 3, 32, 32)


def test_official_checkpoint_without_num_batches_tracked(tmp_path):
    state = random_state_from_layout(reference_layout("stargan_G_c5.json"))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.ckpt")
    StarGAN.load_official(tmp_path / "old.ckpt")


def test_wrong_checkpoint_is_one_clear_error(tmp_path):
    state = random_state_from_layout(reference_layout("stargan_G_c5_r9.json"))  # 9 blocks, not 6
    torch.save(state, tmp_path / "r9.ckpt")
    with pytest.raises(WeightsError, match="does not fit stargan"):
        StarGAN.load_official(tmp_path / "r9.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        StarGAN.load_official(tmp_path / "junk.ckpt")
    with pytest.raises(WeightsError, match="bench download stargan"):
        StarGAN.load_official(tmp_path / "absent.ckpt")


def test_discriminator_layout():
    for size in (128, 256):
        layout = reference_layout(f"stargan_D_c5_{size}.json")
        D = Discriminator(size, 64, 5, 6)
        assert {k: list(v.shape) for k, v in D.state_dict().items()} == layout["state_dict"]


def test_targets_follow_create_labels():
    G = StarGAN(conv_dim=8, repeat_num=1)
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]], dtype=torch.float)
    t = G.targets(labels)
    assert t.shape == (5, 2, 5) and G.target_names() == ATTRIBUTES
    assert t[1, 0].tolist() == [0, 1, 0, 1, 0]   # blond: one-hot hair colour
    assert t[3, 0].tolist() == [1, 0, 0, 0, 0]   # male flipped
    assert t[4, 1].tolist() == [0, 0, 1, 0, 0]   # young flipped


def test_inference_uses_instance_statistics_and_leaves_buffers(tiny_stargan):
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    c = torch.zeros(3, 5)
    before = {k: v.clone() for k, v in tiny_stargan.state_dict().items()}
    alone = tiny_stargan(x[:1], c[:1])
    together = tiny_stargan(x, c)[:1]
    assert torch.allclose(alone, together, atol=1e-5)  # no cross-batch statistics
    tiny_stargan.train()
    assert torch.allclose(tiny_stargan(x, c)[:1], alone, atol=1e-5)  # same in train mode
    assert all(torch.equal(before[k], v) for k, v in tiny_stargan.state_dict().items())


def test_own_weights_roundtrip(tiny_stargan, tiny_stargan_file):
    loaded = StarGAN.load(str(tiny_stargan_file), resolution=64)
    assert loaded.config == tiny_stargan.config
    assert loaded.weight_hash() == tiny_stargan.weight_hash()


def test_shipped_weights_load():
    path = StarGAN.shipped_weights_path(64)
    if not path.exists():
        pytest.skip("no shipped weights")
    G = StarGAN.load("shipped", 64)
    assert G.metadata["training"]["iters"] > 0
