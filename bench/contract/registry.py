"""Plugin registry over Python entry points.

Every defense, bypass, generator and metric, built-in or third-party, is an entry
point in one of the groups below, loaded lazily: listing names imports nothing.
"""

from __future__ import annotations

import difflib
import functools
import warnings
from importlib.metadata import EntryPoint, entry_points

from bench.contract.errors import ConfigError

GROUPS = {
    "defenses": "bench.defenses",
    "bypasses": "bench.bypasses",
    "generators": "bench.generators",
    "metrics": "bench.metrics",
}
SINGULAR = {"defenses": "defense", "bypasses": "bypass", "generators": "generator",
            "metrics": "metric"}


class PluginImportError(ConfigError):
    """A registered plugin whose module fails to import."""


class Registry:
    """Name -> plugin class for one entry-point group."""

    def __init__(self, kind: str):
        if kind not in GROUPS:
            raise ConfigError(f"unknown plugin kind {kind!r}; choose one of {', '.join(GROUPS)}")
        self.kind = kind
        self._entries: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=GROUPS[kind])}
        self._loaded: dict[str, type] = {}

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> EntryPoint:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"unknown {SINGULAR[self.kind]} {name!r}{hint} (installed: {', '.join(self.names()) or 'none'})")
        return self._entries[name]

    def get(self, name: str) -> type:
        """The plugin class; raises PluginImportError if its module fails to import."""
        if name not in self._loaded:
            ep = self.entry(name)
            try:
                self._loaded[name] = ep.load()
            except Exception as err:  # any error inside a third-party module
                first_line = (str(err).strip().splitlines() or [""])[0]
                raise PluginImportError(
                    f"{self.kind} plugin {name!r} ({ep.value}) failed to import: "
                    f"{type(err).__name__}: {first_line}") from err
        return self._loaded[name]

    def resolve(self, spec: str | list[str], variants: dict[str, str] | None = None) -> list[str]:
        """'all' or a comma list -> validated names in the given order.

        `variants` maps further names to the plugin they configure (e.g. 'lora_r4' -> 'lora',
        declared in a profile); 'all' includes them. With 'all', plugins that fail to import
        are reported and left out; a plugin named explicitly must import.
        """
        variants = variants or {}
        parts = spec if isinstance(spec, list) else [p.strip() for p in spec.split(",") if p.strip()]
        names: list[str] = []
        for part in parts:
            if part == "all":
                names += [n for n in [*self.names(), *variants] if self._imports(variants.get(n, n))]
            elif part in variants and part not in self._entries:
                self.get(variants[part])
                names.append(part)
            else:
                if part not in self._entries and variants:
                    close = difflib.get_close_matches(part, [*self.names(), *variants], n=3, cutoff=0.5)
                    if close:
                        raise ConfigError(f"unknown {SINGULAR[self.kind]} {part!r}; did you mean "
                                          f"{' or '.join(repr(c) for c in close)}?")
                self.get(part)
                names.append(part)
        if not names:
            raise ConfigError(f"no {self.kind} named in {spec!r}: give a comma list or 'all' "
                              f"(installed: {', '.join(self.names()) or 'none'})")
        return list(dict.fromkeys(names))

    def _imports(self, name: str) -> bool:
        try:
            self.get(name)
        except PluginImportError as err:
            warnings.warn(str(err), stacklevel=3)
            return False
        return True

    def origin(self, name: str) -> dict:
        """Where plugin `name` comes from and what it says of itself: entry point, the
        distribution that registered it and that distribution's version, and the class's
        version, paper, link and licence."""
        ep = self.entry(name)
        dist = getattr(ep, "dist", None)
        cls = self.get(name)
        return {"entry_point": ep.value, "distribution": dist.metadata["Name"] if dist else None,
                "distribution_version": dist.version if dist else None,
                **{field: getattr(cls, field, "") for field in ("version", "paper", "url", "licence")}}

    def describe(self) -> list[dict]:
        """One row per plugin: name, entry point, and version/paper where it imports."""
        rows = []
        for name in self.names():
            row = {"name": name, "entry_point": self._entries[name].value}
            try:
                cls = self.get(name)
                row.update(version=getattr(cls, "version", ""), paper=getattr(cls, "paper", ""),
                           status="ok")
            except PluginImportError as err:
                cause = err.__cause__
                first_line = (str(cause).strip().splitlines() or [""])[0]
                row.update(status=f"import failed: {type(cause).__name__}: {first_line}")
            rows.append(row)
        return rows


@functools.cache
def registry(kind: str) -> Registry:
    """The one registry of plugins of `kind` in this process (entry points read once)."""
    return Registry(kind)
