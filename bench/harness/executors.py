"""Executors run a plan's steps and hand each step's receipt back as it finishes.

- `local` (default): one step after another in this process, inputs first; torch
  already uses every core for each step.
- `dask`: `dask.distributed`, on a scheduler (`--scheduler tcp://host:8786`) or on a
  `LocalCluster` of `--workers N` processes on this machine. Each step is submitted
  with its inputs' futures, so the scheduler starts it once they are done. Workers
  read and write the same content-addressed cache folder: a step's inputs travel by
  cache key, never as pickled modules, and every worker needs the data folder at the
  same path (and, for `--device cuda`, a GPU). Local workers share this machine's cores
  (`threads`: cores / workers each, unless set), and CPU results depend slightly on the
  thread count: a local run with the same `--set threads=N` gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm import tqdm

from bench.contract.errors import ConfigError
from bench.harness.estimates import CACHED_STEP_SECONDS
from bench.harness.plan import Plan
from bench.harness.steps import Receipt, run_step

EXECUTORS = ("local", "dask")
WORKER_WAIT = 120  # seconds to wait for the first worker


class Progress:
    """The run's bar, weighted by each step's estimated seconds (`bench.harness.estimates`;
    a step with no estimate weighs the mean of the steps to compute that have one), naming
    the step running: its time left is the estimate scaled by the run's speed so far."""

    def __init__(self, step_ids: list[str], estimates: dict[str, float | None] | None, desc: str):
        estimates = estimates or {}
        computed = [s for s in estimates.values() if s is not None and s > CACHED_STEP_SECONDS]
        fallback = sum(computed) / len(computed) if computed else 1.0
        self.known = {sid for sid in step_ids if estimates.get(sid) is not None}
        self.weights = {sid: fallback if estimates.get(sid) is None else estimates[sid] for sid in step_ids}
        self.bar = tqdm(total=sum(self.weights.values()), desc=desc, dynamic_ncols=True, disable=not step_ids,
                        smoothing=0, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
        self.steps_left = len(step_ids)

    def running(self, label: str, sid: str) -> None:
        seconds = self.weights.get(sid, 0.0)
        guess = f" (~{seconds / 60:.0f} min)" if sid in self.known and seconds >= 90 else ""
        self.show(f"{label}{guess}")

    def done(self, sid: str) -> None:
        self.steps_left -= 1
        self.bar.update(self.weights.get(sid, 0.0))

    def finished(self, label: str, sid: str) -> None:
        """A step done elsewhere (a Dask worker), named as it ends."""
        self.done(sid)
        self.show(f"finished {label}")

    def show(self, text: str) -> None:
        self.bar.set_postfix_str(f"{self.steps_left} steps left: {text}", refresh=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


class LocalExecutor:
    name = "local"

    def configure(self, config: dict) -> dict:
        return config

    def run(self, plan: Plan, step_ids: list[str], settings: dict,
            estimates: dict[str, float | None] | None = None) -> Iterator[Receipt]:
        threads = torch.get_num_threads()  # steps may set their own: give this process back its own
        try:
            with Progress(step_ids, estimates, "run") as bar:
                for sid in step_ids:
                    bar.running(plan.steps[sid].label, sid)
                    yield run_step(plan.steps[sid], settings)
                    bar.done(sid)
        finally:
            torch.set_num_threads(threads)


class DaskExecutor:
    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None):
        if scheduler and workers:
            raise ConfigError("--workers sizes a local cluster; with --scheduler the cluster has its own workers")
        self.scheduler, self.workers = scheduler, workers or 2

    def configure(self, config: dict) -> dict:
        """A local cluster shares this machine's cores: unless `threads` is set, each worker
        gets its share (more would make them fight over the cores), recorded in the
        configuration like any setting."""
        if self.scheduler or config.get("threads"):
            return config
        return {**config, "threads": max(1, torch.get_num_threads() // self.workers)}

    def client(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--executor dask needs dask.distributed: pip install distributed") from None
        if self.scheduler:
            client, cluster = Client(self.scheduler), None
        else:
            cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None)
            client = Client(cluster)
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT)
        except TimeoutError:
            client.close()
            raise ConfigError(f"no dask worker joined {self.scheduler or 'the local cluster'} within "
                              f"{WORKER_WAIT} s; start workers with `dask worker ADDRESS`") from None
        return client, cluster

    def run(self, plan: Plan, step_ids: list[str], settings: dict,
            estimates: dict[str, float | None] | None = None) -> Iterator[Receipt]:
        from distributed import as_completed

        client, cluster = self.client()
        try:
            futures = {}
            for sid in step_ids:
                step = plan.steps[sid]
                inputs = [futures[i] for i in step.inputs if i in futures]
                futures[sid] = client.submit(run_step, step, settings, *inputs, key=sid.replace("/", "-"),
                                             pure=False, retries=0)
            workers = len(client.scheduler_info()["workers"])
            with Progress(step_ids, estimates, f"run on {workers} dask workers") as bar:
                for future in as_completed(list(futures.values())):
                    receipt = future.result()
                    bar.finished(plan.steps[receipt.step].label, receipt.step)
                    yield receipt
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def make_executor(name: str, scheduler: str | None = None, workers: int | None = None) -> LocalExecutor | DaskExecutor:
    if name == "local":
        if scheduler or workers:
            raise ConfigError("--scheduler and --workers go with --executor dask")
        return LocalExecutor()
    if name == "dask":
        return DaskExecutor(scheduler, workers)
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


