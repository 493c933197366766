"""Old import paths that keep working: a module that moved leaves behind a forwarder
that hands out the new module's names, each with a DeprecationWarning naming the new
path. The API stability rule (the manual's plugin page): an old path lives for at
least two minor releases after its move."""

from __future__ import annotations

import importlib
import warnings

REMOVED_IN = "0.3"  # the first release without the paths that moved in 0.1


def forwarding(old: str, new: str, names: tuple[str, ...] | None = None):
    """A module `__getattr__` for the old module `old`: its names (all, or `names`) are
    now `new`'s."""

    def __getattr__(name: str):
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(new), name)
        except AttributeError:
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new})") from None
        warnings.warn(f"{old}.{name} moved: import it from {new} (the old path {old}.{name} goes in {REMOVED_IN})",
                      DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
