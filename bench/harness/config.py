"""Profiles (quick, ci, paper) and command-line overrides of any setting."""

from __future__ import annotations

import copy
import json

from bench.contract.errors import ConfigError


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, '[1,2]' -> [1, 2], anything else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(pairs: list[str] | None) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}."""
    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_value(value.strip())
    return out


# Tables of per-plugin settings: open here, each plugin validates its own keys.
OPEN_TABLES = {"generators", "defenses", "bypasses"}


def _check_type(where: str, value, default) -> None:
    if default is None or value is None:
        return
    numeric = (int, float)
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) == isinstance(default, bool)
    elif isinstance(default, numeric):
        ok = isinstance(value, numeric) and (isinstance(default, float) or isinstance(value, int))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"setting {where!r} must be {type(default).__name__}, got {value!r}")


def merge(base: dict, overrides: dict, path: str = "", strict: bool = True) -> dict:
    """Deep-merge overrides into a copy of base. Unknown keys and wrong types are errors,
    except inside the open plugin tables."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        where = f"{path}{key}"
        if strict and key not in out:
            import difflib
            close = difflib.get_close_matches(key, list(out), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown setting {where!r}{hint}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            nested_strict = strict and not (path == "" and key in OPEN_TABLES)
            out[key] = merge(out[key], value, f"{where}.", strict=nested_strict)
        else:
            if strict:
                _check_type(where, value, out.get(key))
            out[key] = value
    return out
