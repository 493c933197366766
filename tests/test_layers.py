"""bench's three layers: the contract imports nothing above it, the toolkit only the
contract, nothing imports the harness but the harness, and the harness imports no
method (defenses, bypasses, generators): it finds them through the registry."""

import importlib.util
import json
import subprocess
import sys

from tests.conftest import ROOT


def test_no_layer_imports_one_above_it():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "import_layers.py")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
    assert "toolkit -> contract" in done.stdout and "harness -> toolkit" in done.stdout
    assert "contract -> toolkit" not in done.stdout and "toolkit -> harness" not in done.stdout
    assert "harness -> methods" not in done.stdout and "methods -> harness" not in done.stdout


def test_a_harness_module_importing_a_method_is_wrong(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("import_layers", ROOT / "benchmarks" / "import_layers.py")
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    (tmp_path / "bench" / "harness").mkdir(parents=True)
    (tmp_path / "bench" / "harness" / "cli.py").write_text("from generators.hisd import pick_references\n")
    (tmp_path / "generators" / "hisd").mkdir(parents=True)
    (tmp_path / "generators" / "hisd" / "__init__.py").write_text("from .model import HiSD\n")
    (tmp_path / "generators" / "hisd" / "model.py").write_text("from bench.contract.plugins import Generator\n")
    monkeypatch.setattr(layers, "ROOT", tmp_path)
    assert layers.main() == 1
    out = capsys.readouterr().out
    assert "WRONG: bench.harness.cli imports generators.hisd (harness -> methods)" in out
    assert out.count("WRONG") == 1  # the package's own relative import is no edge between layers


LOAD_GENERATORS = """
import json, sys
from bench.contract.registry import registry
generators = registry("generators")
loaded = [generators.get(name) for name in generators.names()]
print(json.dumps(sorted(m for m in sys.modules if m.startswith("generators.") and m.endswith(".recipe"))))
"""


def test_a_generator_loads_without_its_training_recipe():
    """The network and its edits are all a run of the matrix needs: the recipe (critic,
    losses, samplers) is imported only to train or fine-tune (`recipe_module`)."""
    done = subprocess.run([sys.executable, "-c", LOAD_GENERATORS], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    from bench.contract.registry import registry

    stargan = registry("generators").get("stargan")
    assert stargan.recipe_functions("to train it").__name__ == stargan.recipe_module
