"""The contract: what defenses, bypasses, generators and metrics implement, and what
the harness promises them. Third-party plugins import from here:

    from bench.contract import Defense
    from bench.contract.registry import registry  # the plugins installed, by kind

Names are loaded on first use (importing `bench.contract.errors` stays cheap).
Nothing here imports the toolkit or the harness.
"""

import importlib

_WHERE = {
    **dict.fromkeys(["BenchError", "ConfigError", "DataError", "WeightsError"], "bench.contract.errors"),
    **dict.fromkeys(["Cell", "Metric", "MetricSpec", "NoReferenceMetric", "PairMetric", "Row", "SetMetric"],
                    "bench.contract.metric"),
    **dict.fromkeys(["DEFAULT_EPS", "Bypass", "Defense", "FitTarget", "Generator", "Pipeline", "Plugin"],
                    "bench.contract.plugins"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'bench.contract' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
