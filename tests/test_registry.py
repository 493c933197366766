import subprocess
import sys
import warnings
from importlib.metadata import EntryPoint

import pytest

from bench.contract.errors import ConfigError
from bench.contract.registry import GROUPS, PluginImportError, Registry
from tests.conftest import write_random_clip_weights

BUILT_INS = {
    "defenses": {"disrupting"},
    "bypasses": {"none", "jpeg", "lora"},
    "generators": {"stargan"},
    "metrics": {"l2", "ssim", "dsr"},
}


@pytest.mark.parametrize("kind", list(GROUPS))
def test_built_ins_register_through_entry_points(kind):
    registry = Registry(kind)
    assert BUILT_INS[kind] <= set(registry.names())
    for name in registry.names():
        cls = registry.get(name)
        assert cls is not None


def test_all_expands_to_every_name():
    registry = Registry("bypasses")
    assert registry.resolve("all") == registry.names()
    assert registry.resolve("lora,none,lora") == ["lora", "none"]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'disrupting'"):
        Registry("defenses").resolve("disruptin")


def test_failing_plugin_is_reported_not_fatal(monkeypatch):
    registry = Registry("defenses")
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Thing", group="bench.defenses")
    monkeypatch.setitem(registry._entries, "broken", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.resolve("all")
    assert "broken" not in names and "disrupting" in names
    assert any("broken" in str(w.message) for w in caught)
    with pytest.raises(PluginImportError, match="failed to import"):
        registry.resolve("broken")
    rows = {r["name"]: r for r in registry.describe()}
    assert rows["broken"]["status"].startswith("import failed")


def test_bench_ls_lists_without_importing_torch():
    code = ("import sys; from bench.harness.cli import main; main(['ls']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "disrupting" in out and "lora" in out
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("kind,name", [(k, n) for k in GROUPS for n in Registry(k).names()])
def test_every_registered_plugin_keeps_its_contract(kind, name, tmp_path, monkeypatch):
    from bench.harness.validate import validate

    if kind == "metrics" and Registry(kind).get(name).missing():
        if name != "clip_score":
            pytest.skip(Registry(kind).get(name).missing())
        monkeypatch.setenv("BENCH_WEIGHTS", str(tmp_path))  # random weights in the official layout
        write_random_clip_weights(tmp_path)
    found_kind, checks = validate(name, kind)
    assert found_kind == kind and checks
    failed = [(what, detail) for what, ok, detail in checks if not ok]
    assert not failed


def test_validate_reports_a_broken_defense():
    from bench.contract.plugins import Defense
    from bench.harness.validate import check_defense

    class Greedy(Defense):
        name = "greedy"

        def protect(self, x, generator, conditions, seed):
            return (x + 0.5).clamp(-1, 1).unsqueeze(0).expand(conditions.size(0), *x.shape)

    results = {what: ok for what, ok, _ in check_defense(Greedy)}
    assert results["declares eps"] is False and results["shape (T, N, 3, H, W)"] is True
