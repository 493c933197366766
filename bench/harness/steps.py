"""Running one step of a plan, in whatever process holds it (the `bench run` process or
a Dask worker): its inputs come from the shared cache by step id, its value goes back
there, and what it reports (rows, costs) travels back as a small `Receipt`.

Generators and fitted states never travel: a `Workspace` loads each generator once
per process and restores fitted plugins from their cached tensors.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from bench.contract.errors import BenchError
from bench.contract.registry import registry
from bench.contract.results import (
    ALL_TARGETS,
    CLEAN_INPUT,
    MARKED,
    ORIGINAL,
    OUTSIDE_MARK,
    Cell,
    Row,
    transfer_source,
)
from bench.harness.cache import tensor_digest
from bench.harness.inputs import (
    Split,
    fit_target,
    load_data,
    load_generator,
    load_split,
    make_plugin,
)
from bench.harness.plan import FIT_KINDS, PREVIEW_FACES, Step, precision_parts
from bench.harness.released import is_released, open_cache
from bench.toolkit.attacks import attack_precision, chunked
from bench.toolkit.budget import SPECS, measure
from bench.toolkit.device import resolve_device
from bench.toolkit.generation import Edits, batched_generate, edits_of, pipeline_outputs
from bench.toolkit.marks import MARK_RECOVERY, mark_recovery
from bench.toolkit.metrics import attribute_hits

KEPT_VALUES = 8  # cached values a workspace keeps in memory
KEPT_PIPELINES = 16  # fitted bypasses (and the pipelines they make) it keeps, rebuilt from the cache after


@dataclass
class Receipt:
    """What a step reports back: whether it came from the cache, what it cost, its rows
    (protect and cell steps) and the seconds each metric took where it ran."""
    step: str
    cache_hit: bool
    seconds: float
    rows: list[dict] = field(default_factory=list)
    metric_seconds: dict = field(default_factory=dict)
    released: bool = False  # a fit that came with bench (`bench.harness.released`)


class Workspace:
    """What one process needs to run steps: the configuration, its device, the cache, and
    what it has loaded (generators, splits, recent values)."""

    def __init__(self, config: dict, cache_root: str, device_kind: str, attack_precision: str = "fp32",
                 fit_attack_precision: str = "fp32", released: str | None = None):
        self.config, self.attack_precision, self.fit_attack_precision = config, attack_precision, fit_attack_precision
        self.device = resolve_device(config["device"])
        if self.device.type != device_kind:
            raise BenchError(f"the plan was made for device {device_kind!r} but this worker has {self.device.type!r}: "
                             f"run `bench run --device {self.device.type}` (the device kind is part of every key)")
        self.cache = open_cache(cache_root, released)
        self.amp = bool(config["amp"]) and self.device.type == "cuda"
        self._values: OrderedDict[str, tuple[dict, dict]] = OrderedDict()
        self._faces = None

    @functools.cache
    def generator(self, name: str):
        return load_generator(self.config, name, self.device)

    @functools.cache
    def split(self, name: str) -> Split:
        if self._faces is None:
            self._faces = load_data(self.config)
        return load_split(self.config, self._faces, name)

    def labels(self, generator, split: str) -> torch.Tensor:
        return self.split(split).faces.labels(generator.attribute_names)

    def value(self, step_id: str) -> tuple[dict, dict]:
        """(tensors, info) of a finished step, from memory or the cache."""
        if step_id not in self._values:
            kind, key = step_id.split("/")
            found = self.cache.load(kind, key)
            if found is None:
                raise BenchError(f"step {step_id} is not in the cache at {self.cache.root}: every process of a run "
                                 "must share one cache folder")
            self.remember(step_id, found)
        self._values.move_to_end(step_id)
        return self._values[step_id]

    def info(self, step_id: str) -> dict:
        """A finished step's info, without reading its tensors where they are not in memory."""
        if step_id in self._values:
            return self._values[step_id][1]
        return (self.cache.manifest(*step_id.split("/")) or {}).get("info", {})

    def remember(self, step_id: str, value: tuple[dict, dict]) -> None:
        self._values[step_id] = value
        while len(self._values) > KEPT_VALUES:
            self._values.popitem(last=False)

    @functools.lru_cache(maxsize=KEPT_PIPELINES)
    def bypass(self, label: str, fit: str | None):
        """Bypass `label`, its fitted state restored from step `fit`."""
        plugin = make_plugin("bypasses", label, self.config)
        if fit is not None:
            plugin.load_state(*self.value(fit))
        return plugin

    @functools.lru_cache(maxsize=KEPT_PIPELINES)
    def _pipeline(self, generator: str, label: str, fit: str | None):
        return self.bypass(label, fit).pipeline(self.generator(generator)).to(self.device)

    def model(self, generator: str, ref: dict | None):
        """The generator, or the pipeline bypass `ref` makes of it."""
        if ref is None:
            return self.generator(generator)
        return self._pipeline(generator, ref["bypass"], ref["fit"])

    @functools.cache
    def metrics(self, names: tuple[str, ...]) -> list:
        return [registry("metrics").get(name) for name in names]



# --- computing each kind of step -----------------------------------------------------
def compute_clean(step: Step, ws: Workspace) -> tuple[dict, dict]:
    generator = ws.generator(step.task["generator"])
    conditions = generator.targets(ws.labels(generator, "eval"))
    clean = batched_generate(generator, ws.split("eval").images, conditions, ws.config["batch_size"], ws.amp)
    return {"value": clean}, {}


def compute_fit(step: Step, ws: Workspace) -> tuple[dict, dict]:
    bypass = make_plugin("bypasses", step.task["bypass"], ws.config)
    generator = ws.generator(step.task["generator"])
    conditions = generator.targets(ws.labels(generator, "finetune"))
    images = bypass.fitting_images(ws.split("finetune").images)
    tensors, info = bypass.fit(generator, images, conditions[:, :images.size(0)], ws.config["seed"], ws.device)
    # what the fit spent, measured here for every bypass (a plugin may report more)
    return tensors, {"faces": images.size(0), **info, "device": str(ws.device)}


def compute_defense_fit(step: Step, ws: Workspace) -> tuple[dict, dict]:
    defense = make_plugin("defenses", step.task["defense"], ws.config)
    targets = []
    for target in step.task["targets"]:
        model = ws.model(target["generator"], target["pipeline"])
        targets.append(fit_target(model, ws.labels(model, "defense")))
    tensors, info = defense.fit(ws.split("defense").images, targets, ws.config["seed"], ws.device)
    return tensors, {**info, "defense": step.task["defense"], "scope": step.task["scope"],
                     "generators": [t["generator"] for t in step.task["targets"]], "scenario": step.task["scenario"]}


def compute_protect(step: Step, ws: Workspace) -> tuple[dict, dict]:
    task = step.task
    defense = make_plugin("defenses", task["defense"], ws.config)
    if task["defense_fit"]:
        defense.load_state(*ws.value(task["defense_fit"]))
    target = ws.model(task["generator"], task["pipeline"])
    conditions = target.targets(ws.labels(target, "eval"))
    # full precision: float16 gradients of a per-pixel mean underflow
    protected = defense.protect(ws.split("eval").images, target, conditions, ws.config["seed"]).float().cpu()
    return {"value": protected}, {}


def compute_cell(step: Step, ws: Workspace) -> tuple[dict, dict]:
    task, config = step.task, ws.config
    generator = ws.generator(task["generator"])
    pipeline = ws.model(task["generator"], task["pipeline"])
    labels = ws.labels(generator, "eval")
    conditions = generator.targets(labels)
    metrics = ws.metrics(tuple(task["metrics"]))
    x = ws.value(task["protect"])[0]["value"] if task["protect"] else ws.split("eval").images
    clean = ws.value(task["clean"])[0]["value"]
    if transfer_source(task["scenario"]):
        x, outputs, clean = transferred(pipeline, x, conditions, clean, config["batch_size"], ws.amp)
    else:
        outputs = pipeline_outputs(pipeline, x, conditions, config["batch_size"], ws.amp)
    by_target = outputs.size(0) == conditions.size(0)  # outputs are (target, image): attribute metrics apply
    edits = edits_of(generator, labels) if by_target and any(m.spec.kind == "attribute" for m in metrics) else None
    control = None
    if edits is not None and any(getattr(m, "outputs", None) == "unedited" for m in metrics):
        unedited = edits.unedited.expand(x.size(0) if x.dim() == 5 else 1, *edits.unedited.shape[1:])
        control = pipeline_outputs(pipeline, x, unedited, config["batch_size"], ws.amp)
    scorer = Scorer(ws, metrics, step.parts["metrics"],
                    Cell(task["generator"], task["defense"], task["bypass"], task["scenario"]),
                    ws.split("eval").images)
    bypass = ws.bypass(task["pipeline"]["bypass"], task["pipeline"]["fit"])
    if bypass.defensive:
        marked, region = bypass.intended(clean), bypass.mark_region(outputs.size(-1))
        scorer.score(outputs, marked, MARKED, edits, control)
        scorer.score(torch.where(region, clean, outputs), clean, OUTSIDE_MARK, pair_only=True)
        recovery = mark_recovery(outputs, marked, clean, region)
        scorer.rows.append(Row.of(scorer.cell, MARKED, MARK_RECOVERY, recovery.mean(), recovery.numel()))
    else:
        scorer.score(outputs, clean, ORIGINAL, edits, control)
    info = {"rows": [r.to_json() for r in scorer.rows], "metric_seconds": scorer.seconds}
    return {"preview": outputs[:, :PREVIEW_FACES].contiguous()}, info


def transferred(pipeline, x: torch.Tensor, conditions: torch.Tensor, clean: torch.Tensor, batch_size: int,
                amp: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A transfer cell's inputs, outputs and references: protections made against another
    generator, x (T', N, ...) for its T' targets, edited with this generator's T targets.
    One image per face (T' = 1 or all alike) is edited as clean inputs are: outputs (T, N,
    ...). Otherwise every image the defender made for a face meets every edit: outputs
    (T' * T, N, ...), against the clean fakes repeated T' times."""
    if x.dim() == 5 and all(torch.equal(x[0], other) for other in x[1:]):
        x = x[0]
    outputs = pipeline_outputs(pipeline, x, conditions, batch_size, amp) if x.dim() == 4 else \
        torch.cat([pipeline_outputs(pipeline, made, conditions, batch_size, amp) for made in x])
    return x, outputs, clean.repeat(outputs.size(0) // clean.size(0), 1, 1, 1, 1)


COMPUTE = {"clean": compute_clean, "fit": compute_fit, "defense_fit": compute_defense_fit,
           "protect": compute_protect, "cell": compute_cell}


# --- scoring -------------------------------------------------------------------------
@dataclass
class Scorer:
    """Makes a cell's rows, each through its metric's spec."""
    ws: Workspace
    metrics: list
    identities: dict  # metric name -> identity (implementation, weights' hash), as the plan made them
    cell: Cell
    inputs: torch.Tensor  # the clean evaluation faces (N, 3, H, W), for "input" metrics
    rows: list[Row] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # metric -> seconds spent

    def score(self, outputs: torch.Tensor, references: torch.Tensor, reference: str, edits: Edits | None = None,
              control: torch.Tensor | None = None, pair_only: bool = False) -> None:
        """One row per metric (and per target for attribute metrics) for outputs
        (T, N, 3, H, W) against references (same shape); `control`: the same cell's
        outputs for the no-edit conditions; `pair_only`: the pair metrics alone (for
        references that are not images a generator is meant to make)."""
        sets = CellSets.of(outputs, references, self.inputs)
        for metric in self.metrics:
            kind = metric.spec.kind
            if pair_only and kind != "pair":
                continue
            started = time.time()
            if kind == "attribute":
                if edits is None or (metric.outputs == "unedited" and control is None):
                    continue
                values = attribute_values(metric, outputs, control, edits)
            else:
                values = VALUES_BY_KIND[kind](self, metric, sets)
            name = metric.spec.name
            self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - started
            self.rows += [Row.of(self.cell, reference, metric.spec, score.value, score.n, score.target,
                                 score.per_image) for score in values]


@dataclass
class CellSets:
    """A cell's outputs and their references (T targets x N images), flattened to
    (T*N, 3, H, W), and the clean faces they were made from; their pixels are hashed once,
    when a cached set metric first needs them."""
    outputs: torch.Tensor
    references: torch.Tensor
    faces: torch.Tensor  # (N, 3, H, W)
    images: int  # N

    @classmethod
    def of(cls, outputs: torch.Tensor, references: torch.Tensor, faces: torch.Tensor) -> "CellSets":
        return cls(outputs.reshape(-1, *outputs.shape[2:]), references.reshape(-1, *references.shape[2:]), faces,
                   outputs.size(1))

    @functools.cached_property
    def inputs(self) -> torch.Tensor:
        """Each output's clean input face, in the outputs' order."""
        targets = self.outputs.size(0) // self.images
        return self.faces.unsqueeze(0).expand(targets, *self.faces.shape).reshape(self.outputs.shape)

    @functools.cached_property
    def digests(self) -> dict:
        return {"outputs": tensor_digest(self.outputs), "references": tensor_digest(self.references)}


class Score(NamedTuple):
    target: str
    value: torch.Tensor
    n: int
    per_image: torch.Tensor | None = None


def pair_values(scorer: Scorer, metric, sets: CellSets) -> list[Score]:
    """The mean over the cell's pairs, and each image's mean over its targets (the unit
    that bootstrap intervals resample: pairs of one image are not independent); an
    "input" metric pairs each output with its clean input face."""
    references = sets.inputs if metric.spec.kind == "input" else sets.references
    values = chunked(metric.per_pair, sets.outputs, references, batch_size=256, device=scorer.ws.device)
    return [Score(ALL_TARGETS, values.mean(), values.numel(), values.view(-1, sets.images).mean(0))]


def set_values(scorer: Scorer, metric, sets: CellSets) -> list[Score]:
    """A set metric's value, cached (a network over every output: FID's Inception) under
    the metric's identity (implementation, weights' hash) and the two sets' pixels."""
    ws = scorer.ws
    parts = {"step": "metric", "metric": scorer.identities[metric.spec.name], **sets.digests,
             **precision_parts(ws.config)}
    hit = ws.cache.get("metric", parts)
    if hit is not None:
        return [Score(ALL_TARGETS, hit[0]["value"], sets.outputs.size(0))]
    value = torch.tensor(metric.per_set(sets.outputs, sets.references, ws.device), dtype=torch.float64)
    ws.cache.put("metric", parts, {"value": value}, {})
    return [Score(ALL_TARGETS, value, sets.outputs.size(0))]


def no_reference_values(scorer: Scorer, metric, sets: CellSets) -> list[Score]:
    values = metric.per_image(sets.outputs, scorer.ws.device)
    return [Score(ALL_TARGETS, values.mean(), values.numel())]


def attribute_values(metric, outputs, control, edits: Edits) -> list[Score]:
    hits = attribute_hits(outputs if metric.outputs == "edited" else control, edits.expected, edits.target_names)
    return [Score(ALL_TARGETS, hits.mean(), hits.numel())] + [Score(name, hits[t].mean(), hits[t].numel())
                                                        for t, name in enumerate(edits.target_names)]


VALUES_BY_KIND = {"pair": pair_values, "input": pair_values, "set": set_values, "no-reference": no_reference_values}


# --- the rows a step reports -----------------------------------------------------------
def budget_rows(step: Step, ws: Workspace, tensors: dict) -> list[Row]:
    """What the protected images really are (measured L-inf, L2, PSNR, SSIM against the
    clean images), as rows of the cell the step serves (its bypass: the pipeline they
    were made against in the leakage scenario)."""
    cell = Cell(*step.task["cell"])
    return [Row.of(cell, CLEAN_INPUT, SPECS[name], value, n)
            for name, (value, n) in measure(tensors["value"], ws.split("eval").images).items()]


def step_seconds(info: dict) -> float:
    return float(info.get("seconds", 0.0))


# --- one step, claimed, computed or read, reported --------------------------------------
def execute(step: Step, ws: Workspace) -> Receipt:
    """Run `step` unless the cache holds it (computing it under a claim, so that processes
    sharing the cache compute it once), and report its rows and cost."""
    found = ws.cache.load(step.kind, step.key)
    hit = found is not None
    if not hit:
        with ws.cache.claim(step.kind, step.key):
            found = ws.cache.load(step.kind, step.key)  # made by another process while we waited
            hit = found is not None
            if not hit:
                started = time.time()
                torch.manual_seed(ws.config["seed"])  # a step's value depends on its inputs, not on what ran before
                with attack_precision(ws.fit_attack_precision if step.kind in FIT_KINDS else ws.attack_precision):
                    tensors, info = COMPUTE[step.kind](step, ws)
                info = {**info, "seconds": time.time() - started}
                ws.cache.put(step.kind, step.parts, tensors, info)
                found = (tensors, info)
    ws.remember(step.id, found)
    tensors, info = found
    seconds = row_seconds = step_seconds(info)
    rows: list[Row] = []
    if step.kind == "protect":
        rows = budget_rows(step, ws, tensors)
    elif step.kind == "cell":
        rows = [Row.from_json(r) for r in info["rows"]]
        if step.task["protect"]:  # a cell's rows report its cost with making its protected images
            row_seconds += step_seconds(ws.info(step.task["protect"]))
    rows = [replace(r, cache_hit=hit, seconds=round(row_seconds, 3)).to_json() for r in rows]
    return Receipt(step.id, hit, seconds, rows, {} if hit else info.get("metric_seconds", {}), is_released(info))


# one workspace per process and run settings: Dask workers keep theirs between steps
_WORKSPACES: dict[str, Workspace] = {}


def workspace(settings: dict) -> Workspace:
    import json

    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _WORKSPACES:
        _WORKSPACES.clear()
        _WORKSPACES[key] = Workspace(settings["config"], settings["cache_root"], settings["device_kind"],
                                      settings.get("attack_precision", "fp32"),
                                      settings.get("fit_attack_precision", "fp32"), settings.get("released"))
    return _WORKSPACES[key]


def run_step(step: Step, settings: dict, *_inputs) -> Receipt:
    """Entry point of executors: `_inputs` are the receipts of the step's inputs (Dask
    uses them to order the steps; their values come from the cache)."""
    threads = settings["config"].get("threads")
    if threads:
        torch.set_num_threads(threads)
    return execute(step, workspace(settings))
