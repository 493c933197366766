"""Feature extractors of the MMFA loss: each gives (N, D) features that carry gradient to
the input; the paper's networks load from their official layouts (random weights here:
no pretrained files offline) and say clearly where missing weights belong."""

import pytest
import torch

from bench.contract.errors import WeightsError
from bench.toolkit.features import load_extractor, resnet50_network


def assert_features_with_gradient(extractor, dim):
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    features = extractor(x)
    assert features.shape == (2, dim)
    features.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in extractor.parameters())  # frozen


@pytest.mark.parametrize("name,dim", [("classifier_features", 256), ("classifier_attributes", 13)])
def test_classifier_substitutes(name, dim):
    extractor = load_extractor(name)
    assert_features_with_gradient(extractor, dim)
    extractor.train()
    assert not extractor.net.training  # BatchNorm stays in inference mode inside a training loop


def test_resnet50_loads_the_torchvision_layout_without_fc(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="resnet50-0676ba61.pth"):
        load_extractor("resnet50")
    from torchvision.models import resnet50

    (tmp_path / "resnet50").mkdir()
    torch.save(resnet50().state_dict(), tmp_path / "resnet50" / "resnet50-0676ba61.pth")  # random, official keys
    assert_features_with_gradient(load_extractor("resnet50"), 2048)
    assert isinstance(resnet50_network().fc, torch.nn.Identity)


def test_blip_vision_tower_loads_from_a_local_folder(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="blip-image-captioning-base"):
        load_extractor("blip")
    # a small randomly initialised BLIP captioner saved as the hub folder would be
    config = transformers.BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, encoder_hidden_size=32))
    transformers.BlipForConditionalGeneration(config).save_pretrained(tmp_path / "blip-image-captioning-base")
    extractor = load_extractor("blip")
    assert extractor.size == 32  # the model's own input size
    assert_features_with_gradient(extractor, 32)
