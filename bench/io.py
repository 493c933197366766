"""Moved to `bench.contract.io`; this old path still works (see `bench.contract.moved`)."""

from bench.contract.moved import forwarding

__getattr__ = forwarding(__name__, "bench.contract.io")
