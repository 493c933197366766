import pytest
import torch

import bench.toolkit.metrics
from bench.contract.errors import WeightsError
from bench.toolkit.classifier import AttributeClassifier, TrainParams, evaluate, train
from bench.toolkit.data import load_faceset
from tests.conftest import make_face_folder
from tests.test_runner import read_rows, run_cli


class BrightnessClassifier:
    """Sees 'Male' where the image is bright on average: outputs can be built to order."""
    attribute_names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]

    def predict(self, images):
        bright = (images.mean(dim=(1, 2, 3)) > 0).float()
        return torch.stack([bright if n == "Male" else 1 - bright for n in self.attribute_names], dim=1)


@pytest.fixture
def brightness_classifier(monkeypatch):
    monkeypatch.setattr(bench.toolkit.metrics, "attribute_classifier", lambda: BrightnessClassifier())


def test_attribute_hits_per_target_and_broadcast_control(brightness_classifier):
    outputs = -torch.ones(2, 3, 3, 4, 4)       # T=2 targets, N=3 images
    outputs[0, :2] = 1                           # target 0: images 0, 1 bright
    expected = torch.tensor([[1, 1, 1], [0, 0, 1]])
    hits = bench.toolkit.metrics.attribute_hits(outputs, expected, ["Male", "Young"])
    assert hits.tolist() == [[1, 1, 0], [0, 0, 1]]
    control = -torch.ones(1, 3, 3, 4, 4)         # one no-edit output per image serves every target
    assert bench.toolkit.metrics.attribute_hits(control, expected, ["Male", "Young"]).tolist() == [[0, 0, 0], [0, 0, 1]]


def test_train_export_load_and_held_out_accuracy(tmp_path):
    faces = load_faceset(make_face_folder(tmp_path / "faces", n=12, size=(32, 32)), "folder", 32)
    params = TrainParams(resolution=32, width=4, stages=2, batch_size=4, iters=3, train_stop=8, test_start=8,
                         test_stop=12, checkpoint_every=2)
    train(params, faces, tmp_path / "run", torch.device("cpu"), export=tmp_path / "c.safetensors")
    model = AttributeClassifier.load(tmp_path / "c.safetensors")
    accuracy = model.metadata["held_out"]["accuracy"]
    assert set(accuracy) == set(model.attribute_names)
    assert all(0 <= row["balanced_accuracy"] <= 1 for row in accuracy.values())
    probs = model.predict(torch.rand(5, 3, 64, 64) * 2 - 1)  # other sizes are resized
    assert probs.shape == (5, len(model.attribute_names)) and 0 <= probs.min() and probs.max() <= 1


def test_evaluate_counts_balanced_accuracy():
    model = AttributeClassifier(["Male"], width=2, stages=1, resolution=8)
    model.predict = lambda images: torch.tensor([[0.9], [0.9], [0.9], [0.1]])
    result = evaluate(model, torch.zeros(4, 3, 8, 8), torch.tensor([[1.0], [0.0], [0.0], [0.0]]))["Male"]
    assert result["accuracy"] == 0.5 and result["balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)


def test_missing_or_foreign_weights_are_one_clear_error(tmp_path, tiny_stargan_file):
    with pytest.raises(WeightsError, match="bench train-classifier"):
        AttributeClassifier.load(tmp_path / "absent.safetensors")
    with pytest.raises(WeightsError, match="not hold attribute classifier"):
        AttributeClassifier.load(tiny_stargan_file)


def test_run_reports_edit_success_and_control_per_target(tmp_path, tiny_stargan_file, brightness_classifier):
    out = tmp_path / "run"
    metrics = '["l2","dsr","edit_success","edit_success_control"]'
    assert run_cli(tmp_path, tiny_stargan_file, out, ["--set", f"metrics={metrics}"]) == 0
    rows = [r for r in read_rows(out) if r["metric"].startswith("edit_success")]
    cells = {(r["defense"], r["bypass"], r["metric"], r["target"]) for r in rows}
    for cell in [("none", "none"), ("disrupting", "lora"), ("none", "jpeg")]:
        for metric in ("edit_success", "edit_success_control"):
            assert (*cell, metric, "all") in cells
    assert ("none", "none", "edit_success", "Male") in cells
    overall = {r["metric"]: r for r in rows if r["target"] == "all" and r["defense"] == "none"
               and r["bypass"] == "none"}
    per_target = [r["value"] for r in rows if r["metric"] == "edit_success" and r["target"] != "all"
                  and r["defense"] == "none" and r["bypass"] == "none"]
    assert overall["edit_success"]["n"] == 4 * 5
    assert overall["edit_success"]["value"] == pytest.approx(sum(per_target) / 5)
    assert "Edit success" in (out / "report.md").read_text()
