import pytest
import torch

from bench.contract.errors import ConfigError, WeightsError
from generators.attgan import ATTRIBUTES, AttGAN
from generators.attgan.recipe import Discriminators
from tests.conftest import make_face_folder, random_state_from_layout, reference_layout


@pytest.mark.parametrize("name, inject", [("attgan_G_256_shortcut1_inject0.json", 0),
                                          ("attgan_G_128_shortcut1_inject1.json", 1)])
def test_official_layouts_load_strictly(tmp_path, name, inject):
    layout = reference_layout(name)
    state = random_state_from_layout(layout)
    torch.save({"G": state}, tmp_path / "weights.199.pth")  # the official wrapper: {'G': state_dict}
    config = {**AttGAN.configs["official"], "inject_layers": inject}
    G = AttGAN.load_official(tmp_path / "weights.199.pth", config)
    assert list(G.state_dict()) == list(layout["state_dict"])
    assert sum(p.numel() for p in G.parameters()) == layout["num_params"]
    assert torch.equal(G.state_dict()["dec_layers.4.layers.0.bias"], state["dec_layers.4.layers.0.bias"])


def test_official_forward_shapes():
    G = AttGAN.from_config("official").eval()
    features = G.encode(torch.zeros(1, 3, 64, 64))
    assert [f.size(1) for f in features] == [64, 128, 256, 512, 1024]
    assert G(torch.zeros(1, 3, 64, 64), torch.zeros(1, 13)).shape == (1, 3, 64, 64)


def test_bare_state_dict_or_other_layout_is_one_clear_error(tmp_path):
    state = random_state_from_layout(reference_layout("attgan_G_256_shortcut1_inject0.json"))
    torch.save(state, tmp_path / "bare.pth")
    with pytest.raises(WeightsError, match="no 'G' entry"):
        AttGAN.load_official(tmp_path / "bare.pth")
    torch.save({"G": state}, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="does not fit attgan"):
        AttGAN.load_official(tmp_path / "w.pth", {**AttGAN.configs["official"], "inject_layers": 1})


def test_targets_flip_with_thres_int_and_the_right_index():
    G = AttGAN(dim=4, layers=3)
    labels = torch.zeros(2, 13)
    labels[0, ATTRIBUTES.index("Black_Hair")] = 1
    labels[1, ATTRIBUTES.index("Male")] = 1
    t = G.targets(labels)
    assert G.target_names() == ["Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
    assert t.shape == (5, 2, 13)
    blond = t[2, 0]  # blond switched on at +1, black switched off (conflict), others at +-0.5
    assert blond[ATTRIBUTES.index("Blond_Hair")] == 1.0
    assert blond[ATTRIBUTES.index("Black_Hair")] == -0.5
    assert blond[ATTRIBUTES.index("Young")] == -0.5
    male = t[4, 1]  # male flipped off: -1 (test_int), not the neighbouring index
    assert male[ATTRIBUTES.index("Male")] == -1.0
    assert male[ATTRIBUTES.index("Mouth_Slightly_Open")] == -0.5
    assert G.target_values(labels)[:, 0].tolist() == [1, 0, 1, 1, 1]
    assert G.unedited_conditions(labels).shape == (1, 2, 13)
    assert G.unedited_conditions(labels).abs().max() == 0.5


def test_discriminators_shapes():
    D = Discriminators(64, dim=8, layers=4, n_attrs=13, fc_dim=16)
    adv, cls = D(torch.zeros(2, 3, 64, 64))
    assert adv.shape == (2, 1) and cls.shape == (2, 13)


def test_training_smoke_resumes(tmp_path):
    from bench.toolkit.data import load_faceset

    faces = load_faceset(make_face_folder(tmp_path / "faces", n=12, size=(32, 32), with_labels=True),
                         "folder", 32)
    params = AttGAN.TrainParams(resolution=32, dim=4, layers=3, d_dim=4, d_fc_dim=8, batch_size=2, iters=3,
                                n_d=1, train_stop=8, checkpoint_every=2)
    AttGAN.train_recipe(params, faces, tmp_path / "run", torch.device("cpu"), export=tmp_path / "g.safetensors")
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    loaded = AttGAN.load(str(tmp_path / "g.safetensors"), 32)
    assert loaded.config["dim"] == 4
    params.iters = 4
    AttGAN.train_recipe(params, faces, tmp_path / "run", torch.device("cpu"))  # resumes at 3


def test_shipped_weights_load():
    path = AttGAN.shipped_weights_path(64)
    if not path.exists():
        pytest.skip("no shipped weights")
    G = AttGAN.load("shipped", 64)
    assert G(torch.zeros(1, 3, 64, 64), torch.zeros(1, 13)).shape == (1, 3, 64, 64)


def test_instance_norm_option_round_trips_and_keeps_images_independent(tmp_path):
    G = AttGAN(dim=4, layers=3, enc_norm="instancenorm", dec_norm="instancenorm").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
    x, a = torch.rand(3, 3, 32, 32) * 2 - 1, torch.zeros(3, 13)
    with torch.no_grad():
        together, alone = G(x, a), G(x[:1], a[:1])
    torch.testing.assert_close(together[:1], alone)
    G.save(tmp_path / "g.safetensors")
    loaded = AttGAN.load(str(tmp_path / "g.safetensors"), 32)
    assert loaded.config["enc_norm"] == loaded.config["dec_norm"] == "instancenorm"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, a), together)
    with pytest.raises(ConfigError, match="groupnorm"):
        AttGAN(dim=4, layers=3, enc_norm="groupnorm")
