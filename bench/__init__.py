"""bench: an open benchmark for proactive deepfake defenses and their bypasses.

Three layers, each importing only those before it:

- `bench.contract`: what third parties code against: the plugin base classes
  (Defense, Bypass, Generator, Pipeline), the registry over entry points, the metric
  contract (MetricSpec), the result format (Cell, Row, RunRecord; no torch needed to
  read a run) and safe file helpers.
- `bench.toolkit`: what methods use: PGD, codecs, fine-tuning loops, marks, feature
  networks, the generators' training-loop skeleton, data sets, the metric table.
- `bench.harness`: what runs them: the plan, the executors (local, Dask), the cache,
  the reporting wing (tables, the leaderboard) and the command line.

`bench.plugins`, `bench.io`, `bench.errors` and `bench.registry` are the paths the
contract's modules had before; they still work, with a DeprecationWarning.
"""

__version__ = "0.1.0"
from bench.contract.results import RESULT_SCHEMA_VERSION  # noqa: E402,F401  (what run.json records)
