import json

import pytest
import torch

from bench.contract.errors import BenchError, ConfigError, WeightsError
from bench.contract.io import save_tensors
from bench.toolkit import demo_faces
from bench.toolkit.data import load_faceset, to_tensor

ATTRIBUTES = ["Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
TINY = dict(width=8, d_width=8, batch_size=4, checkpoint_every=2, bn_samples=32)


class FakeLabeller:
    """Deterministic 'probabilities' from each image's colour statistics."""

    attribute_names = ATTRIBUTES

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        stats = torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)  # N x 6
        return torch.sigmoid(8 * (stats - stats.mean(0)))


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    G = demo_faces.FaceGenerator(latent_dim=16, width=8)
    demo_faces.dcgan_init(G)
    demo_faces.recalibrate_batchnorm(G, samples=16, batch_size=8)
    path = tmp_path / "demo_g.safetensors"
    demo_faces.export_generator(G, path, {"training": {"command": "bench train-demo-faces (test)"}})
    return path


def test_shapes_and_bad_settings():
    G, D = demo_faces.FaceGenerator(width=8), demo_faces.FaceDiscriminator(8, norm="spectral")
    y = G(torch.randn(2, 100))
    assert y.shape == (2, 3, 64, 64) and y.abs().max() <= 1
    assert D(y).shape == (2,) and demo_faces.FaceDiscriminator(8)(y).shape == (2,)
    assert demo_faces.FaceGenerator(width=8, resolution=32)(torch.randn(1, 100)).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="power of two"):
        demo_faces.FaceGenerator(resolution=48)
    with pytest.raises(ConfigError, match="'batch' or 'spectral'"):
        demo_faces.FaceDiscriminator(norm="layer")


def test_eval_samples_do_not_depend_on_the_batch(tiny_weights):
    G = demo_faces.load_generator(tiny_weights)
    assert torch.allclose(demo_faces.sample(G, 5, seed=1, batch_size=2), demo_faces.sample(G, 5, seed=1), atol=1e-6)


def test_training_checkpoints_resumes_and_exports(tmp_path, face_folder):
    faces = load_faceset(face_folder, "folder", 64)
    device = torch.device("cpu")
    straight = demo_faces.train(demo_faces.TrainParams(**TINY, iters=3), faces, tmp_path / "a", device,
                                export=tmp_path / "g.safetensors", command="bench train-demo-faces x")
    demo_faces.train(demo_faces.TrainParams(**TINY, iters=2), faces, tmp_path / "b", device)
    resumed = demo_faces.train(demo_faces.TrainParams(**TINY, iters=3), faces, tmp_path / "b", device)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key  # resuming changes nothing
    assert {p.name for p in (tmp_path / "a" / "samples").iterdir()} == {"000002.png", "000003.png"}
    log = (tmp_path / "b" / "losses.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in log] == [2, 3]
    loaded = demo_faces.load_generator(tmp_path / "g.safetensors")
    assert loaded.config == straight.config and loaded.metadata["dtype"] == "float16"
    assert loaded.metadata["training"]["command"] == "bench train-demo-faces x"
    assert loaded.metadata["training"]["data"]["n"] == 12
    assert torch.allclose(demo_faces.sample(loaded, 4, 0), demo_faces.sample(straight, 4, 0), atol=2e-2)


def test_training_rejects_mismatching_data(tmp_path, face_folder):
    with pytest.raises(ConfigError, match="32 px"):
        demo_faces.train(demo_faces.TrainParams(**TINY), load_faceset(face_folder, "folder", 32),
                         tmp_path, torch.device("cpu"))


def test_weights_errors_are_one_line(tmp_path):
    with pytest.raises(WeightsError, match="bench train-demo-faces"):
        demo_faces.load_generator(tmp_path / "absent.safetensors")
    save_tensors(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"model": "something_else"})
    with pytest.raises(WeightsError, match="does not hold demo face generator"):
        demo_faces.load_generator(tmp_path / "other.safetensors")


def test_demo_set_is_deterministic_and_readable(tmp_path, tiny_weights):
    a = demo_faces.make_demo_set(tiny_weights, tmp_path / "a", count=6, seed=3, labeller=FakeLabeller())
    b = demo_faces.make_demo_set(tiny_weights, tmp_path / "b", count=6, seed=3, labeller=FakeLabeller())
    files = sorted(p.name for p in a.iterdir())
    assert files == ["000001.png", "000002.png", "000003.png", "000004.png", "000005.png", "000006.png",
                     "README.md", demo_faces.ATTRIBUTE_FILE]
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    faces = load_faceset(a, "folder", 64)
    assert len(faces) == 6 and faces.attribute_names == ATTRIBUTES
    expected = FakeLabeller().predict(faces.load()) > 0.5
    assert torch.equal(faces.attributes.bool(), expected)
    readme = (a / "README.md").read_text()
    assert "synthetic" in readme and "bench train-demo-faces (test)" in readme
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_demo_set_keeps_the_most_confident_candidates(tmp_path, tiny_weights):
    out = demo_faces.make_demo_set(tiny_weights, tmp_path / "set", count=4, seed=5, labeller=FakeLabeller(),
                                   candidates_factor=3)
    candidates = demo_faces.sample(demo_faces.load_generator(tiny_weights), 12, seed=5)
    probs = FakeLabeller().predict(to_tensor(demo_faces.to_uint8(candidates).numpy()))
    keep = demo_faces.select((2 * probs - 1).abs().mean(1), 4)
    expected = to_tensor(demo_faces.to_uint8(candidates[keep]).numpy())
    assert torch.equal(load_faceset(out, "folder", 64).load(), expected)


def test_demo_set_replaces_only_a_demo_set(tmp_path, tiny_weights):
    out = tmp_path / "set"
    demo_faces.make_demo_set(tiny_weights, out, count=3, seed=0)
    demo_faces.make_demo_set(tiny_weights, out, count=2, seed=1)  # a demo set: replaced whole
    assert sorted(p.name for p in out.iterdir()) == ["000001.png", "000002.png", "README.md"]
    assert load_faceset(out, "folder", 64).attributes is None  # no labeller, no labels
    other = tmp_path / "photos"
    other.mkdir()
    (other / "keep.jpg").write_bytes(b"x")
    with pytest.raises(BenchError, match="not a demo face set"):
        demo_faces.make_demo_set(tiny_weights, other, count=2, seed=0)
    assert [p.name for p in other.iterdir()] == ["keep.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bad_labeller_or_counts_are_one_line_errors(tmp_path, tiny_weights):
    class Wrong(FakeLabeller):
        def predict(self, images):
            return torch.zeros(images.size(0), 2)

    with pytest.raises(BenchError, match="labeller returned"):
        demo_faces.make_demo_set(tiny_weights, tmp_path / "x", count=2, seed=0, labeller=Wrong())
    with pytest.raises(ConfigError, match="count"):
        demo_faces.make_demo_set(tiny_weights, tmp_path / "x", count=0, seed=0)
    assert not (tmp_path / "x").exists()
