"""bench's three layers: the contract imports nothing above it, the toolkit only the
contract, and nothing imports the harness but the harness."""

import subprocess
import sys

from tests.conftest import ROOT


def test_no_layer_imports_one_above_it():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "import_layers.py")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
    assert "toolkit -> contract" in done.stdout and "harness -> toolkit" in done.stdout
    assert "contract -> toolkit" not in done.stdout and "toolkit -> harness" not in done.stdout
