"""The plugin API is a promise: a defense package written against any import path the
documentation gave still loads, is validated and runs; a path that moved warns with a
DeprecationWarning naming the new one (the manual's plugin page, API stability)."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

# the same tiny defense, written against each documented generation of the API
PLUGINS = {
    # the README before bench/ split into layers
    "legacy_paths": """
        from dataclasses import dataclass

        from bench.errors import ConfigError
        from bench.io import load_tensors
        from bench.plugins import Defense
        from bench.registry import registry
    """,
    # the contract as documented since
    "contract_paths": """
        from dataclasses import dataclass

        from bench.contract import DEFAULT_EPS, Defense
        from bench.contract.errors import ConfigError
        from bench.contract.io import load_tensors
        from bench.contract.params import Budget
        from bench.contract.registry import registry
        from bench.contract.results import Row
    """,
}
BODY = """
    class Shift(Defense):
        name = "{name}"
        version = "1"

        @dataclass
        class Params:
            eps: float = 0.05

        def protect(self, x, generator, conditions, seed):
            out = (x + self.params.eps).clamp(-1, 1).clamp(x - self.params.eps, x + self.params.eps)
            return out.unsqueeze(0).expand(conditions.size(0), *x.shape).clone()
"""
MOVED = {"bench.errors": "bench.contract.errors", "bench.io": "bench.contract.io",
         "bench.plugins": "bench.contract.plugins", "bench.registry": "bench.contract.registry"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Each plugin as an installed distribution (a module and its dist-info with the
    entry point), as pip would lay it out."""
    site = tmp_path_factory.mktemp("api-site")
    for name, imports in PLUGINS.items():
        (site / f"{name}.py").write_text(textwrap.dedent(imports) + textwrap.dedent(BODY.format(name=name)))
        info = site / f"{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[bench.defenses]\n{name} = {name}:Shift\n")
    return site


@pytest.mark.parametrize("name", PLUGINS)
def test_a_plugin_written_against_a_documented_path_is_validated(site, name):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-m", "bench", "validate", name],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "FAIL" not in done.stdout and f"defense {name}:" in done.stdout
    moved = [old for old in MOVED if f"{old}." in done.stderr and "DeprecationWarning" in done.stderr]
    if name == "legacy_paths":
        assert sorted(moved) == sorted(MOVED), done.stderr
        assert all(new in done.stderr for new in MOVED.values())
    else:
        assert "DeprecationWarning" not in done.stderr, done.stderr


@pytest.mark.parametrize("old, new", [*MOVED.items(), ("bench.contract.metric", "bench.contract.results")])
def test_an_old_path_gives_the_new_object_and_names_the_new_path(old, new):
    import importlib

    name = "Row" if old == "bench.contract.metric" else next(
        n for n in vars(importlib.import_module(new)) if not n.startswith("_") and n[0].isupper())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)
    assert [w.category for w in caught] == [DeprecationWarning] and new in str(caught[0].message)


def test_an_unknown_name_on_an_old_path_is_an_attribute_error():
    import bench.plugins

    with pytest.raises(AttributeError, match="bench.plugins"):
        bench.plugins.NoSuchThing  # noqa: B018
