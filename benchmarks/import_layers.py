"""The import graph between bench's three layers (contract, toolkit, harness) and the
method packages (defenses, bypasses, generators), from the source: prints how many
imports go from each layer to each other one and fails on a wrong one. The contract
imports nothing above it; the toolkit only the contract; the methods the contract and
the toolkit; the harness the contract and the toolkit, and no method (it finds them
through the registry only). So nothing imports the harness, and the harness imports
no method by name.

    python benchmarks/import_layers.py
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = {"contract": 0, "toolkit": 1, "methods": 1, "harness": 2}  # methods use contract + toolkit
PACKAGES = {"defenses": "methods", "bypasses": "methods", "generators": "methods"}
# side by side, yet neither imports the other: the harness meets methods through the registry
SEPARATE = {("toolkit", "methods"), ("harness", "methods")}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "bench" and len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    return PACKAGES.get(parts[0])


def absolute(module: str, node: ast.ImportFrom) -> str:
    """The module a `from` import names, with a relative one (`from .model import x`)
    resolved against the importing module's package."""
    if not node.level:
        return node.module or ""
    package = module.split(".")[:-node.level]
    return ".".join(package + ([node.module] if node.module else []))


def imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            target = absolute(module, node)
            if target == "bench" or not node.module:  # from bench import x: x is a module of some layer
                found |= {f"{target}.{a.name}" for a in node.names}
            found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def main() -> int:
    edges, wrong = Counter(), []
    files = [p for folder in ("bench", *PACKAGES) for p in (ROOT / folder).rglob("*.py")]
    for path in sorted(files):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        source = layer_of(module)
        if source is None:
            continue
        for target in imports(path, module):
            layer = layer_of(target)
            if layer is None or layer == source:
                continue
            edges[(source, layer)] += 1
            if ORDER[layer] > ORDER[source] or (source, layer) in SEPARATE:
                wrong.append(f"{module} imports {target} ({source} -> {layer})")
    for (source, layer), count in sorted(edges.items()):
        print(f"{source:>8} -> {layer:<8} {count:3d} imports")
    for line in wrong:
        print("WRONG:", line)
    print("layers respected" if not wrong else f"{len(wrong)} imports break the layering")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
