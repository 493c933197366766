"""The import graph between bench's three layers (contract, toolkit, harness) and the
method packages, from the source: prints each module's imports of other layers and
fails where a lower layer imports a higher one.

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


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "bench" and len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    return PACKAGES.get(parts[0])


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bench":  # from bench import x: x is a module of some layer
                found |= {f"bench.{a.name}" for a in node.names}
            found.add(node.module)
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
        for target in imports(path):
            layer = layer_of(target)
            if layer is None or layer == source:
                continue
            edges[(source, layer)] += 1
            if ORDER[layer] > ORDER[source] or (source, layer) in (("toolkit", "methods"),):
                wrong.append(f"{module} imports {target} ({source} -> {layer})")
    for (source, layer), count in sorted(edges.items()):
        print(f"{source:>8} -> {layer:<8} {count:3d} imports")
    for line in wrong:
        print("WRONG:", line)
    print("layers respected" if not wrong else f"{len(wrong)} imports break the layering")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
