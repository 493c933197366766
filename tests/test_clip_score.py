"""The CLIP score's network and preprocessing, offline: random weights in open_clip's
ViT-B-32 layout stand in for OpenAI's (no pretrained file offline). The loaded image tower
must give the embeddings of the same network in memory, and the torch preprocessing must
give what open_clip's own PIL transform gives for the same images saved as 8-bit PNGs.

Tolerances (measured on these images): the torch preprocessing differs from open_clip's
PIL pipeline by at most 2/255 on under 1% of values (PIL's fixed-point rounding ties,
mean 0.008/255); the embeddings then differ by at most 7e-5 per component (1 - cosine
1.2e-7), so 2e-4 and 1e-6 are asserted. For scale: distinct images are 0.03-0.14 apart in
1 - cosine under this random network, and a single float resize pass without PIL's
intermediate 8-bit rounding already gives 1 - cosine 2.6e-6 and 3.4e-4 per component."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from bench.contract.errors import WeightsError
from bench.contract.io import file_sha256
from bench.toolkit import clip_score as cs

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def random_clip():
    """open_clip's ViT-B-32 as built for OpenAI's weights (QuickGELU), random weights."""
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, random_clip):
    root = tmp_path_factory.mktemp("weights")
    (root / "clip").mkdir()
    save_file(random_clip.state_dict(), str(root / "clip" / "ViT-B-32-openai.safetensors"))
    return root


def eight_bit_images(n: int, size=(64, 64), seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: smooth random colour fields plus noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        base = Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        out.append(np.clip(np.asarray(base, dtype=int) + rng.integers(-30, 31, (h, w, 3)), 0, 255))
    return np.stack(out).astype(np.uint8)


def open_clip_pipeline(pixels: np.ndarray, folder, model) -> torch.Tensor:
    """open_clip's own eval transform of the images written to and read back from PNG files."""
    transform = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    tensors = []
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(folder / f"{i}.png")
        with Image.open(folder / f"{i}.png") as image:
            tensors.append(transform(image))
    return torch.stack(tensors)


def as_unit_range(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 * 2 - 1


def in_levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of normalised images, in 8-bit steps of the [0, 1] image."""
    return ((a - b) * torch.tensor(cs.OPENAI_STD).view(1, 3, 1, 1) * 255).abs()


def test_openai_preprocessing_is_what_open_clip_uses():
    tag = open_clip.get_pretrained_cfg(cs.MODEL, cs.PRETRAINED)
    assert (tag["mean"], tag["std"]) == (cs.OPENAI_MEAN, cs.OPENAI_STD)
    assert (tag["interpolation"], tag["resize_mode"], tag["quick_gelu"]) == ("bicubic", "shortest", True)


def test_loaded_tower_matches_open_clip_and_its_pil_preprocessing(weights_dir, random_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(weights_dir))
    assert cs.missing() is None
    assert cs.weights_path() == weights_dir / "clip" / "ViT-B-32-openai.safetensors"
    model = cs.load_clip_model()
    assert cs.load_clip_model() is model  # cached in-process
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    pixels = eight_bit_images(3)
    reference_input = open_clip_pipeline(pixels, tmp_path, random_clip)
    with torch.no_grad():
        reference = random_clip.encode_image(reference_input, normalize=True)
        assert torch.equal(torch.nn.functional.normalize(model(reference_input), dim=-1), reference)

    x = as_unit_range(pixels)
    levels = in_levels(cs.preprocess(x), reference_input)
    assert levels.max() <= 2.01 and levels.mean() < 0.05
    embeddings = cs.image_embeddings(x, model, batch_size=2)
    assert embeddings.shape == (3, 512)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    assert (embeddings - reference).abs().max() < 2e-4
    assert (1 - (embeddings * reference).sum(-1)).max() < 1e-6


def test_preprocessing_of_a_non_square_image(random_clip, tmp_path):
    pixels = eight_bit_images(2, size=(48, 40), seed=1)
    levels = in_levels(cs.preprocess(as_unit_range(pixels)), open_clip_pipeline(pixels, tmp_path, random_clip))
    assert levels.max() <= 2.01 and levels.mean() < 0.05


def test_open_clip_loads_the_same_file_to_the_same_network(weights_dir, random_clip, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(weights_dir))
    theirs = open_clip.create_model(cs.MODEL, pretrained=str(cs.weights_path()), force_quick_gelu=True).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(cs.load_clip_model()(x), theirs.encode_image(x), rtol=0, atol=0)


def test_clip_score_of_an_image_with_itself_is_one(weights_dir, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(weights_dir))
    x = as_unit_range(eight_bit_images(3, seed=2))
    same = cs.clip_score(x, x)
    assert same.shape == (3,)
    torch.testing.assert_close(same, torch.ones(3), rtol=0, atol=1e-5)
    assert (cs.clip_score(x, x.flip(0))[[0, 2]] < 0.999).all()


@pytest.mark.parametrize("fault", ["key", "shape"])
def test_a_state_dict_that_does_not_fit_is_refused(fault, random_clip, tmp_path, monkeypatch):
    state = {k: v.half() for k, v in random_clip.state_dict().items()}  # fp16, as OpenAI's
    if fault == "key":
        state["visual.projection"] = state.pop("visual.proj")
    else:
        state["visual.proj"] = state["visual.proj"][:, :256].contiguous()
    (tmp_path / "clip").mkdir()
    save_file(state, str(tmp_path / "clip" / "ViT-B-32-openai.safetensors"))
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="visual.proj") as err:
        cs.load_clip_model()
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_foreign_torchscript_archive_is_not_loaded(tmp_path, monkeypatch):
    (tmp_path / "clip").mkdir()
    path = tmp_path / "clip" / "ViT-B-32.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    assert cs.missing() is None and cs.weights_path() == path
    assert cs.weights_sha256(path) == file_sha256(path)
    with pytest.raises(WeightsError, match="SHA-256"):
        cs.load_clip_model()


def test_missing_weights_name_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))
    expected = tmp_path / "clip" / "ViT-B-32-openai.safetensors"
    assert cs.weights_path() == expected
    reason = cs.missing()
    assert str(expected) in reason and "bench download" in reason and "\n" not in reason
    with pytest.raises(WeightsError, match="bench download") as err:
        cs.load_clip_model()
    assert str(expected) in str(err.value)


def test_classifier_cosine_stand_in():
    x = as_unit_range(eight_bit_images(3, seed=3))
    same = cs.classifier_cosine(x, x)
    assert same.shape == (3,)
    torch.testing.assert_close(same, torch.ones(3), rtol=0, atol=1e-5)
    other = torch.rand(3, 3, 64, 64) * 2 - 1
    assert (cs.classifier_cosine(x, other) < same - 0.01).all()
    assert "clip" not in cs.classifier_cosine.__name__.lower()
