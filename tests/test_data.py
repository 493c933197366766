import pytest
import torch

from bench.contract.errors import DataError
from bench.toolkit.data import load_faceset
from tests.conftest import CELEBA_ATTRS, make_face_folder, shared_path


def test_folder_loader_crops_resizes_and_scales(face_folder):
    faces = load_faceset(face_folder, "folder", 32)
    assert len(faces) == 12 and faces.ids[:3] == ["1.png", "2.png", "3.png"]
    x = faces.load()
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    labels = faces.labels(["Male", "Young"])
    assert labels.shape == (12, 2) and set(labels.unique().tolist()) <= {0.0, 1.0}


def test_subsets_are_deterministic_slices(face_folder):
    faces = load_faceset(face_folder, "folder", 16)
    assert faces.subset(2, 5).ids == ["3.png", "4.png", "5.png"]
    assert len(faces.subset(10, 100)) == 2
    assert torch.equal(faces.subset(2, 5).load(), faces.load()[2:5])


def test_corrupt_image_names_the_file(face_folder):
    (face_folder / "5.png").write_bytes(b"not an image at all")
    faces = load_faceset(face_folder, "folder", 16)
    with pytest.raises(DataError, match="5.png"):
        faces.load()


def test_missing_labels_are_a_clear_error(tmp_path):
    faces = load_faceset(make_face_folder(tmp_path / "nolabels", n=3, with_labels=False), "folder", 16)
    with pytest.raises(DataError, match="no attribute labels"):
        faces.labels(["Male"])


def test_celeba_layout(tmp_path):
    root = tmp_path / "celeba"
    make_face_folder(root / "img_align_celeba", n=4, size=(178, 218), with_labels=False)
    from tests.conftest import write_attribute_file
    write_attribute_file(root / "list_attr_celeba.txt", [f"{i}.png" for i in range(1, 5)], CELEBA_ATTRS)
    faces = load_faceset(root, "celeba", 64)
    assert len(faces) == 4 and faces.load().shape == (4, 3, 64, 64)
    assert faces.labels(["Bangs"]).shape == (4, 1)


def test_unknown_kind_and_missing_path(tmp_path):
    with pytest.raises(DataError, match="unknown dataset kind"):
        load_faceset(tmp_path, "imagenet", 64)
    with pytest.raises(DataError, match="does not exist"):
        load_faceset(tmp_path / "nowhere", "folder", 64)
    with pytest.raises(DataError, match="--dataset celebahq needs --data"):
        load_faceset(None, "celebahq", 64)


def test_shared_celebahq_layout():
    root = shared_path("data", "celebahq")
    faces = load_faceset(root, "celebahq", 64)
    assert len(faces) == 30000 and faces.ids[0] == "1.jpg" and faces.ids[-1] == "30000.jpg"
    assert faces.files[0].parent.name == "images_64"
    x = faces.subset(29000, 29002).load()
    assert x.shape == (2, 3, 64, 64)
    at128 = load_faceset(root, "celebahq", 128)
    assert len(at128) == 8000  # only the first 8,000 exist at 128 px


def test_command_line_offers_every_loader():
    from bench.harness.cli import DATASET_KINDS
    from bench.toolkit.data import LOADERS

    assert set(DATASET_KINDS) == set(LOADERS)


def test_demo_kind_reads_the_packaged_set_and_says_when_it_is_missing(tmp_path, monkeypatch):
    import bench.toolkit.data
    from tests.conftest import write_attribute_file

    monkeypatch.setattr(bench.toolkit.data, "DEMO_FACES", tmp_path / "absent")
    with pytest.raises(DataError, match="demo face set is missing"):
        bench.toolkit.data.load_faceset(None, "demo", 16)
    folder = make_face_folder(tmp_path / "demo", n=5, with_labels=False)
    write_attribute_file(folder / "list_attr_demo.txt", [f"{i}.png" for i in range(1, 6)], CELEBA_ATTRS)
    monkeypatch.setattr(bench.toolkit.data, "DEMO_FACES", folder)
    faces = bench.toolkit.data.load_faceset(None, "demo", 16)
    assert faces.name == "demo" and len(faces) == 5 and faces.labels(["Male"]).shape == (5, 1)


def test_default_splits_follow_the_chosen_data_set(tmp_path):
    from bench.harness.cli import build_parser, resolved_config

    parse = build_parser().parse_args
    assert resolved_config(parse(["run"]))["splits"] == {"finetune": [0, 256], "defense": [0, 256], "eval": [256, 320]}
    config = resolved_config(parse(["run", "--data", str(tmp_path), "--dataset", "celebahq"]))
    assert config["splits"]["eval"] == [29000, 30000] and config["splits"]["defense"] == [28000, 29000]
    config = resolved_config(parse(["run", "--profile", "paper", "--data", str(tmp_path)]))
    assert config["splits"]["eval"] == [1000, 1500]
    config = resolved_config(parse(["run", "--data", str(tmp_path), "--set", "splits.eval=[0,10]"]))
    assert config["splits"]["eval"] == [0, 10]


def test_a_small_folder_is_halved_into_its_splits(tmp_path):
    from bench.harness.cli import build_parser, resolved_config

    folder = make_face_folder(tmp_path / "photos", n=11, with_labels=False)
    config = resolved_config(build_parser().parse_args(["run", "--data", str(folder), "--dataset", "folder"]))
    assert config["splits"] == {"finetune": [0, 5], "defense": [0, 5], "eval": [5, 11]}
