import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import generators.hisd as hisd
import generators.hisd.model as hisd_model
from bench.contract.errors import WeightsError
from generators.hisd import HiSD, InstanceNorm
from tests.conftest import CELEBA_ATTRS, random_state_from_layout, reference_layout

LAYOUT = "hisd_gen_celebahq256.json"


def tiny_hisd(**overrides) -> HiSD:
    torch.manual_seed(0)
    config = dict(style_dim=8, noise_dim=4, encoder=[4, 8], decoder=[8, 4], translators=[4, 4],
                  extractors=[4, 8], mappers_pre=[8], mappers_post=[8], tags=[hisd.HAIR_COLOUR])
    G = HiSD(**{**config, **overrides}).eval()
    G.set_references(torch.rand(3, 3, 16, 16) * 2 - 1)
    return G


def test_official_layout_loads_strictly_from_the_gen_test_entry(tmp_path):
    layout = reference_layout(LAYOUT)
    state = random_state_from_layout(layout)
    torch.save({"gen": {k: torch.zeros_like(v) for k, v in state.items()}, "gen_test": state},
               tmp_path / "checkpoint_256_celeba-hq.pt")
    G = HiSD.load_official(tmp_path / "checkpoint_256_celeba-hq.pt")
    assert list(G.state_dict()) == list(layout["state_dict"])
    assert sum(p.numel() for p in G.parameters()) == layout["num_params"] == 19_043_939
    assert torch.equal(G.state_dict()["decoder.2.bias"], state["decoder.2.bias"])  # gen_test, not gen
    counts = {name: sum(p.numel() for p in getattr(G, name).parameters()) for name in layout["param_counts_by_submodule"]}
    assert counts == layout["param_counts_by_submodule"]


def test_official_shapes_match_the_recorded_forward():
    G = HiSD.from_config("official").eval()
    shapes = reference_layout(LAYOUT)["forward"]["shapes"]
    with torch.no_grad():
        x = torch.zeros(1, 3, 256, 256)
        e = G.encode(x)
        s = G.extract(x, 2)
        assert list(e.shape) == shapes["encode(x)"] and list(s.shape) == shapes["extract(ref,i)"]
        assert list(G.map(torch.zeros(1, 32), 2, 1).shape) == shapes["map(z,i,j)"]
        assert list(G.decode(G.translate(e, s, 2)).shape) == shapes["decode(e)"]


def test_a_bare_state_dict_is_one_clear_error(tmp_path):
    torch.save(random_state_from_layout(reference_layout(LAYOUT)), tmp_path / "bare.pt")
    with pytest.raises(WeightsError, match="no 'gen_test' entry"):
        HiSD.load_official(tmp_path / "bare.pt")


def test_instance_norm_divides_by_the_unbiased_std():
    x = torch.randn(2, 3, 4, 5)
    flat = x.flatten(2)
    expected = (flat - flat.mean(-1, keepdim=True)) / (flat.std(-1, unbiased=True, keepdim=True) + 1e-5)
    assert torch.allclose(InstanceNorm(3)(x), expected.view_as(x), atol=1e-6)
    assert InstanceNorm(3).weight.shape == (1, 3, 1)


def test_adain_parameters_are_bias_first_then_weight_plus_one(monkeypatch):
    seen = []
    real = hisd_model.adain
    monkeypatch.setattr(hisd_model, "adain", lambda x, w, b: seen.append((w, b)) or real(x, w, b))
    block = hisd.MiddleBlock(2, 3)
    params = torch.arange(block.num_adain_params, dtype=torch.float32).view(1, -1)
    block(torch.randn(1, 2, 4, 4), params)
    (w1, b1), (w2, b2) = seen
    assert b1.tolist() == [[0, 1]] and w1.tolist() == [[3, 4]]
    assert b2.tolist() == [[4, 5, 6]] and w2.tolist() == [[8, 9, 10]]


def test_targets_use_one_reference_each_and_minus_one_is_the_image_itself():
    G = tiny_hisd()
    labels = torch.zeros(2, 0)
    assert G.targets(labels).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert G.target_names() == ["Black_Hair", "Blond_Hair", "Brown_Hair"]
    assert G.target_values(labels).tolist() == [[1, 1]] * 3
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        control = G(x, G.unedited_conditions(labels)[0])
        self_translation = G.decode(G.translate(G.encode(x), G.extract(x, 0), 0)).clamp(-1, 1)
        refs = torch.nn.functional.interpolate(G.references, size=(32, 32), mode="bilinear", antialias=True)
        guided = G.decode(G.translate(G.encode(x), G.extract(refs[[1, 1]], 0), 0)).clamp(-1, 1)
        assert torch.allclose(control, self_translation, atol=1e-6)
        assert torch.allclose(G(x, torch.tensor([1, 1])), guided, atol=1e-6)
        assert G(x, torch.tensor([0, 2])).abs().max() <= 1


def test_references_enter_the_weight_hash_not_the_state_dict():
    G = tiny_hisd()
    before = G.weight_hash()
    G.set_references(torch.zeros(3, 3, 16, 16))
    assert G.weight_hash() != before
    assert not any("reference" in k for k in G.state_dict())


def test_a_reference_strip_of_the_wrong_size_is_one_clear_error(tmp_path):
    Image.fromarray(np.zeros((16, 40, 3), dtype=np.uint8)).save(tmp_path / "refs.png")
    G = tiny_hisd(references=str(tmp_path / "refs.png"))
    G._references = None
    with pytest.raises(WeightsError, match="3 square faces side by side"):
        G.references


def labelled_faces(root, n=24, size=32):
    """Faces whose labels cycle through black, blond and brown hair."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = [str(n), " ".join(CELEBA_ATTRS)]
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
        on = {["Black_Hair", "Blond_Hair", "Brown_Hair"][i % 3], "Male" if i % 2 else "Young"}
        lines.append(f"{i}.png " + " ".join("1" if a in on else "-1" for a in CELEBA_ATTRS))
    (root / "list_attr_test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_training_smoke_resumes_and_exports(tmp_path, monkeypatch):
    from bench.toolkit.data import load_faceset

    monkeypatch.setitem(HiSD.configs, "tiny", dict(style_dim=8, noise_dim=4, encoder=[4, 8], decoder=[8, 4],
                                                    translators=[4, 4], extractors=[4, 8], mappers_pre=[8],
                                                    mappers_post=[8], tags=[hisd.HAIR_COLOUR]))
    faces = load_faceset(labelled_faces(tmp_path / "faces"), "folder", 32)
    params = HiSD.TrainParams(resolution=32, config="tiny", batch_size=2, iters=3, train_stop=12,
                              checkpoint_every=2)
    HiSD.train_recipe(params, faces, tmp_path / "run", torch.device("cpu"), export=tmp_path / "g.safetensors")
    assert (tmp_path / "run" / "samples" / "000003.png").exists()
    loaded = HiSD.load(str(tmp_path / "g.safetensors"), 32)
    assert loaded.config["encoder"] == [4, 8] and loaded.metadata["training"]["iters"] == 3
    params.iters = 4
    HiSD.train_recipe(params, faces, tmp_path / "run", torch.device("cpu"))  # resumes at 3


def test_shipped_weights_and_references_load():
    if not HiSD.shipped_weights_path(64).exists():
        pytest.skip("no shipped weights")
    G = HiSD.load("shipped", 64)
    assert G.references.shape == (3, 3, 64, 64)
    assert G(torch.zeros(2, 3, 64, 64), torch.tensor([0, 2])).shape == (2, 3, 64, 64)


def test_output_modes():
    from bench.contract.errors import ConfigError

    with pytest.raises(ConfigError, match="'clamp' or 'tanh'"):
        tiny_hisd(output="sigmoid")
    G = tiny_hisd(output="tanh")
    with torch.no_grad():
        G.decoder[-1].bias.fill_(50.0)  # far outside the image range before the tanh
        out = G.decode(G.encode(torch.zeros(1, 3, 16, 16)))
    assert out.max() <= 1 and out.min() >= -1 and out.max() > 0.99


def test_references_are_the_faces_the_classifier_is_surest_about(tmp_path):
    class Labeller:  # probabilities of Black_Hair, Blond_Hair, Brown_Hair for 4 faces
        attribute_names = ["Black_Hair", "Blond_Hair", "Brown_Hair"]

        def predict(self, images):
            return torch.tensor([[0.9, 0.1, 0.8], [0.8, 0.0, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.9]])

    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8) / 4
    refs = hisd.pick_references(images, Labeller())
    assert refs[:, 0, 0, 0].tolist() == [0.25, 0.5, 0.75]  # faces 1, 2, 3: black, blond, brown
    hisd.save_reference_strip(refs, tmp_path / "refs.png")
    assert hisd_model._read_reference_strip(tmp_path / "refs.png", 3).shape == (3, 3, 8, 8)


@pytest.mark.parametrize("argv,says", [
    (["--resolution", "8"], "argument --resolution: must be at least 16, got 8"),
    (["--classifier", "nowhere.safetensors"], "attribute classifier weights not found at nowhere.safetensors"),
])
def test_the_reference_command_ends_a_bad_input_with_one_error_line(argv, says, tmp_path):
    from generators.hisd import references

    done = subprocess.run([sys.executable, "-m", "generators.hisd.references", *argv, "--out",
                           str(tmp_path / "refs.png")], capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{references.PROG}: error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert len(errors) == 1 and says in errors[0], done.stderr
    assert not (tmp_path / "refs.png").exists()


def test_the_output_and_gradient_do_not_depend_on_the_input_memory_format():
    G = tiny_hisd()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    c = G.targets(torch.zeros(2, 0))[1]
    results = []
    for image in (x.clone(), x.clone().contiguous(memory_format=torch.channels_last)):
        image.requires_grad_(True)
        out = G(image, c)
        (grad,) = torch.autograd.grad(out.square().sum(), image)
        assert out.is_contiguous()
        results.append((out, grad))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)
