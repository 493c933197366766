"""The contract: what defenses, bypasses, generators and metrics implement, and what
the harness promises them. Third-party plugins import from here:

    from bench.contract import Defense
    from bench.contract.registry import registry  # the plugins installed, by kind
    from bench.contract.results import RunRecord  # a run's run.json (reading it needs no torch)

Names are loaded on first use (importing `bench.contract.errors` stays cheap).
Nothing here imports the toolkit or the harness.
"""

import importlib

_WHERE = {
    **dict.fromkeys(["BenchError", "ConfigError", "DataError", "WeightsError"], "bench.contract.errors"),
    **dict.fromkeys(["Metric", "MetricSpec", "NoReferenceMetric", "PairMetric", "SetMetric"], "bench.contract.metric"),
    **dict.fromkeys(["Bypass", "Defense", "FitTarget", "Generator", "Pipeline", "Plugin"], "bench.contract.plugins"),
    **dict.fromkeys(["DEFAULT_EPS", "Cell", "Row", "RunRecord"], "bench.contract.results"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'bench.contract' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
