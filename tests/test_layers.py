"""bench's three layers: the contract imports nothing above it, the toolkit only the
contract, nothing imports the harness but the harness, and the harness imports no
method (defenses, bypasses, generators): it finds them through the registry."""

import importlib.util
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
