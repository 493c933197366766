"""bench: an open benchmark for proactive deepfake defenses and their bypasses.

Three layers, each importing only those before it:

- `bench.contract`: what third parties code against: the plugin base classes
  (Defense, Bypass, Generator, Pipeline), the registry over entry points, the metric
  contract (MetricSpec, Row) and safe file helpers.
- `bench.toolkit`: what methods use: PGD, codecs, fine-tuning loops, marks, feature
  networks, the generators' training-loop skeleton, data sets, the metric table.
- `bench.harness`: what runs them: the plan, the executors (local, Dask), the cache,
  the report, the leaderboard and the command line.
"""

__version__ = "0.1.0"
# 2: fit costs in costs.jsonl (no longer rows of defense "none"), plan.json, run.json "plan"
RESULT_SCHEMA_VERSION = 2
