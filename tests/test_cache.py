import torch

from bench.harness.cache import Cache, make_key


def test_put_get_roundtrip_and_verification(tmp_path):
    cache = Cache(tmp_path)
    parts = {"step": "clean", "seed": 0}
    value = torch.arange(6.0).view(2, 3)
    cache.put("clean", parts, {"value": value}, {"seconds": 1.5})
    tensors, info = cache.get("clean", parts)
    assert torch.equal(tensors["value"], value) and info["seconds"] == 1.5
    assert cache.get("clean", {**parts, "seed": 1}) is None


def test_damaged_entry_is_dropped(tmp_path):
    cache = Cache(tmp_path)
    parts = {"x": 1}
    cache.put("protect", parts, {"value": torch.ones(3)})
    entry = cache.path("protect", make_key(parts))
    data = (entry / "tensors.safetensors").read_bytes()
    (entry / "tensors.safetensors").write_bytes(data[:-4] + b"\x00\x00\x00\x01")
    assert cache.get("protect", parts) is None
    assert not entry.exists()


def test_generator_weights_change_the_key(tiny_stargan):
    key_before = make_key({"generator": tiny_stargan.identity()})
    with torch.no_grad():
        tiny_stargan.main[0].weight[0, 0, 0, 0] += 1e-3
    assert make_key({"generator": tiny_stargan.identity()}) != key_before


def test_disabled_cache_stores_nothing(tmp_path):
    cache = Cache(tmp_path, enabled=False)
    cache.put("clean", {"a": 1}, {"value": torch.ones(1)})
    assert cache.get("clean", {"a": 1}) is None
    assert not any(tmp_path.iterdir())
