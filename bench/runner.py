"""Run the matrix generators x defenses x bypasses and score every cell.

Data flow: images -> conditions -> clean outputs y (cached) -> each defense (fitted
first if it learns, on the defense split: cached) -> its protected images (cached) ->
each bypass (purify, or patch the generator once: cached) -> outputs -> metrics -> one
row per (generator, defense, bypass, scenario, metric).
The rows of defense "none" score each bypass on clean inputs (its benign impact).

Scenarios: "standard" (defenses perturb against the original generator) and "leakage"
(an adaptive defender perturbs against the bypassed pipeline itself: the patched
generator, or the generator behind the purifier, with straight-through gradients where
the purifier is not differentiable).

Bypass variants: a profile may declare further bypasses that configure a plugin
differently (`bypasses: {lora_r4: {plugin: lora, rank: 4}}`); they run and are named
like any bypass. The runner knows no method by name: everything comes from the
registry and the configuration. The steps run one after the other, because torch
already uses every core for each of them.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

import bench
from bench.attacks import chunked, device_of, flatten_targets
from bench.cache import Cache, images_identity, make_key, tensor_digest
from bench.data import FaceSet, load_faceset
from bench.device import autocast, resolve_device
from bench.errors import ConfigError
from bench.io import atomic_write_json, atomic_write_text, save_tensors
from bench.marks import mark_recovery
from bench.plugins import FitTarget
from bench.provenance import git_state, peak_memory_mb, run_metadata
from bench.registry import Registry

SCENARIO, LEAKAGE = "standard", "leakage"
NONE = "none"  # the rows' name for "no defense" and "no bypass"
ORIGINAL = "original"  # rows scored against the original generator's output on the clean image
FIT_SCOPES = ("generator", "generators", "images")


@dataclass
class Split:
    faces: FaceSet
    images: torch.Tensor
    identity: dict


@dataclass
class RunState:
    config: dict
    device: torch.device
    cache: Cache
    rows: list = field(default_factory=list)
    plugins: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)
    output_dir: Path = Path(".")
    metrics: list = field(default_factory=list)  # the metrics that can run here
    skipped_metrics: dict = field(default_factory=dict)  # name -> why it cannot run here
    metric_identities: dict = field(default_factory=dict)  # name -> identity (weights hashed once a run)
    metric_seconds: dict = field(default_factory=dict)  # name -> time spent computing it
    universal_generators: list = field(default_factory=list)  # what "generators"-scope fits span
    loaded: dict = field(default_factory=dict)  # name -> (generator, identity), loaded once
    defense_split: Split | None = None  # the images learned and universal defenses fit on
    defense_fits: dict = field(default_factory=dict)  # fit key -> (tensors, info)
    finetune: Split | None = None  # the images trainable bypasses fit on
    prepared: dict = field(default_factory=dict)  # (generator, bypass) -> Prepared, fitted once

    def generator(self, name: str):
        """The generator `name` and its identity (weights hashed once per run)."""
        if name not in self.loaded:
            generator = load_generator(self.config, name, self.device)
            self.loaded[name] = (generator, generator.identity())
        return self.loaded[name]

    @property
    def amp(self) -> bool:
        return bool(self.config["amp"]) and self.device.type == "cuda"

    def bypass(self, gen_name: str, label: str) -> "Prepared":
        """The bypass `label` ready for generator `gen_name` (fitted once, cached)."""
        if (gen_name, label) not in self.prepared:
            self.prepared[(gen_name, label)] = prepare_bypass(self, label, gen_name)
        return self.prepared[(gen_name, label)]

    def defender_view(self, gen_name: str, label: str) -> tuple["DefenderView", dict]:
        """The bypassed pipeline of `label` on `gen_name`, and its identity, as a leakage-
        scenario defender attacks it."""
        generator, identity = self.generator(gen_name)
        prepared = self.bypass(gen_name, label)
        view = DefenderView(generator, prepared.bypass, prepared.patched).to(self.device)
        return view, {**identity, "bypassed_by": prepared.identity}


def load_data(config: dict) -> FaceSet:
    data = config["data"]
    return load_faceset(data["path"], data["dataset"], config["resolution"])


def load_split(config: dict, faces: FaceSet, name: str, limit: int) -> Split:
    start, stop = config["splits"][name]
    part = faces.subset(start, stop)
    part = part.subset(0, limit) if limit else part
    if len(part) == 0:
        raise ConfigError(f"the {name} split [{start}, {stop}) of {faces.root} is empty "
                          f"({len(faces)} images); set --set splits.{name}=[START,STOP]")
    images = part.load(progress=len(part) > 200)
    return Split(part, images, {**part.identity(), **images_identity(part.ids, images)})


def batched_generate(generator, x: torch.Tensor, conditions: torch.Tensor, batch_size: int,
                     amp: bool = False) -> torch.Tensor:
    """x: (N, ...) or (T, N, ...) inputs; conditions (T, N, ...) -> outputs (T, N, 3, H, W),
    computed on the generator's device (mixed precision there if `amp`), returned on the CPU."""
    t, device = conditions.size(0), device_of(generator)
    if x.dim() == 4:
        xs, cs = flatten_targets(x, conditions)
    else:
        xs, cs = x.reshape(-1, *x.shape[2:]), conditions.reshape(-1, *conditions.shape[2:])
    with torch.no_grad(), autocast(device, amp):
        out = chunked(lambda xb, cb: generator(xb, cb).float(), xs, cs, batch_size=batch_size, device=device)
    return out.view(t, -1, *out.shape[1:])


def precision_parts(state: "RunState") -> dict:
    """Device kind and precision change numbers slightly: they belong in cache keys."""
    return {"device": state.device.type, "amp": state.amp, "harness": bench.__version__}


def cached_tensor(state: RunState, kind: str, parts: dict, compute) -> tuple[torch.Tensor, bool, dict]:
    hit = state.cache.get(kind, parts)
    if hit is not None:
        return hit[0]["value"], True, hit[1]
    started = time.time()
    value, info = compute()
    info = {**info, "seconds": time.time() - started}
    state.cache.put(kind, parts, {"value": value}, info)
    return value, False, info


@dataclass
class Edits:
    """What the edits of one generator ask for, for the attribute metrics: the expected
    (T, N) attribute values, the target names and the no-edit conditions."""
    expected: torch.Tensor
    target_names: list[str]
    unedited: torch.Tensor  # (1, N, ...)


def edits_of(generator, labels: torch.Tensor) -> Edits | None:
    try:
        return Edits(generator.target_values(labels), generator.target_names(),
                     generator.unedited_conditions(labels))
    except NotImplementedError:
        tqdm.write(f"note: {generator.name} does not state what its edits ask for "
                   "(target_values / unedited_conditions): no edit-success rows")
        return None


@dataclass
class CellSets:
    """A cell's outputs and their references, flattened to (T*N, 3, H, W); their pixels
    are hashed once, when a cached set metric first needs them."""
    outputs: torch.Tensor
    references: torch.Tensor

    @classmethod
    def of(cls, outputs: torch.Tensor, references: torch.Tensor) -> "CellSets":
        return cls(outputs.reshape(-1, *outputs.shape[2:]), references.reshape(-1, *references.shape[2:]))

    @functools.cached_property
    def digests(self) -> dict:
        return {"outputs": tensor_digest(self.outputs), "references": tensor_digest(self.references)}


def pair_rows(state: "RunState", metric, sets: CellSets) -> list[tuple[str, torch.Tensor, int]]:
    values = chunked(metric.per_pair, sets.outputs, sets.references, batch_size=256, device=state.device)
    return [("all", values.mean(), values.numel())]


def set_rows(state: "RunState", metric, sets: CellSets) -> list[tuple[str, torch.Tensor, int]]:
    """A set metric's value, cached (a network over every output: FID's Inception) under
    the metric's identity (implementation, weights' hash) and the two sets' pixels."""
    parts = {"step": "metric", "metric": state.metric_identities[metric.spec.name], **sets.digests,
             **precision_parts(state)}
    value, _, _ = cached_tensor(state, "metric", parts, lambda: (
        torch.tensor(metric.per_set(sets.outputs, sets.references, state.device), dtype=torch.float64), {}))
    return [("all", value, sets.outputs.size(0))]


def no_reference_rows(state: "RunState", metric, sets: CellSets) -> list[tuple[str, torch.Tensor, int]]:
    values = metric.per_image(sets.outputs, state.device)
    return [("all", values.mean(), values.numel())]


def attribute_rows(metric, outputs, control, edits: Edits) -> list[tuple[str, torch.Tensor, int]]:
    from bench.metrics import attribute_hits

    hits = attribute_hits(outputs if metric.outputs == "edited" else control, edits.expected,
                          edits.target_names)
    return [("all", hits.mean(), hits.numel())] + [(name, hits[t].mean(), hits[t].numel())
                                                   for t, name in enumerate(edits.target_names)]


ROWS_BY_KIND = {"pair": pair_rows, "set": set_rows, "no-reference": no_reference_rows}


def score(state: RunState, outputs, references, base: dict, seconds: float, cache_hit: bool,
          edits: Edits | None = None, control: torch.Tensor | None = None, pair_only: bool = False) -> None:
    """One row per metric (and per target for attribute metrics) for a cell's outputs
    (T, N, 3, H, W) against `references` (same shape); `control` holds the same cell's
    outputs for the no-edit conditions. `pair_only`: the pair metrics alone (for
    references that are not images a generator is meant to make)."""
    sets = CellSets.of(outputs, references)
    for metric in state.metrics:
        kind = metric.spec.kind
        if pair_only and kind != "pair":
            continue
        started = time.time()
        if kind == "attribute":
            if edits is None or (metric.outputs == "unedited" and control is None):
                continue
            values = attribute_rows(metric, outputs, control, edits)
        else:
            values = ROWS_BY_KIND[kind](state, metric, sets)
        name = metric.spec.name
        state.metric_seconds[name] = state.metric_seconds.get(name, 0.0) + time.time() - started
        for target, value, n in values:
            add_row(state, {**base, "metric": name, "target": target, "higher_is_better": metric.spec.higher_is_better,
                            "threshold": metric.spec.threshold}, float(value), n, seconds, cache_hit)


def add_row(state: RunState, fields: dict, value: float, n: int, seconds: float, cache_hit: bool) -> None:
    """One cell row: its value (a mean over n pairs or images, or a set's score over n
    outputs) and its cost."""
    state.rows.append({**fields, "value": value, "n": n, "cache_hit": cache_hit, "seconds": round(seconds, 3)})


def needs_control(state: RunState) -> bool:
    return any(getattr(m, "outputs", None) == "unedited" for m in state.metrics)


def variants(config: dict, kind: str) -> dict[str, str]:
    """Names the configuration declares as variants of a plugin: name -> plugin."""
    return {name: table["plugin"] for name, table in config[kind].items()
            if isinstance(table, dict) and "plugin" in table}


def make_plugin(kind: str, name: str, config: dict):
    """The plugin (or variant) `name` with its configured parameters; `label` is the name
    the results use. A variant's `plugin` must be a plugin, not another variant."""
    settings = dict(config[kind].get(name, {}))
    base = settings.pop("plugin", name)
    if base != name:  # a variant: the plugin's configured settings, then its own
        settings = {**config[kind].get(base, {}), **settings}
    plugin = Registry(kind).get(base)(**settings)
    plugin.label = name
    return plugin


@dataclass
class Prepared:
    """A bypass ready for one generator: the plugin, its patched generator (patches) and
    what identifies it (plugin identity and fit key)."""
    bypass: object
    patched: torch.nn.Module | None
    identity: dict


class DefenderView(torch.nn.Module):
    """The bypassed pipeline as a leakage-scenario defender attacks it: the patched
    generator, or the generator behind the purifier (`Bypass.purify_for_gradients`:
    real JPEG, for one, is differentiated through a differentiable JPEG). Everything
    else (targets, feature layer, name) is the generator's."""

    def __init__(self, generator, bypass, patched):
        super().__init__()
        self.model = patched if patched is not None else generator
        self.purifier = None if patched is not None else bypass

    def forward(self, x, c):
        if self.purifier is not None:
            x = self.purifier.purify_for_gradients(x)
        return self.model(x, c)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def fit_bypass(state: RunState, bypass, generator, finetune: Split, base_parts: dict) -> tuple[dict, str]:
    """Fit a trainable bypass once per generator (cached); returns its info and cache key."""
    conditions = generator.targets(finetune.faces.labels(generator.attribute_names))
    parts = {"step": "fit", **base_parts, "bypass": bypass.identity(), "images": finetune.identity,
             "conditions": tensor_digest(conditions), "seed": state.config["seed"]}
    if bypass.fit_scope == "images":  # the same fit serves every generator
        parts = {**parts, "generator": None, "conditions": None}
    elif bypass.fit_scope != "generator":
        raise ConfigError(f"bypass {bypass.name!r} declares fit scope {bypass.fit_scope!r}; "
                          "expected 'generator' or 'images'")
    hit = state.cache.get("fit", parts)
    if hit is not None:
        tensors, info = hit
        bypass.load_state(tensors, info)
        info = {**info, "cache_hit": True}
    else:
        started = time.time()
        tensors, info = bypass.fit(generator, finetune.images, conditions, state.config["seed"], state.device)
        info = {**info, "seconds": time.time() - started}
        state.cache.put("fit", parts, tensors, info)
        info = {**info, "cache_hit": False}
    # the fitted state on its own (e.g. only the LoRA and gate tensors), reusable elsewhere
    save_tensors(state.output_dir / "fitted" / f"{generator.name}_{bypass.label}.safetensors", tensors,
                 {"bypass": bypass.identity(), "generator": base_parts["generator"],
                  "finetune_images": finetune.identity, "seed": state.config["seed"]})
    return info, make_key(parts)


def bypass_outputs(state: "RunState", bypass, generator, patched, x, conditions):
    batch_size = state.config["batch_size"]
    if bypass.kind == "patch":
        return batched_generate(patched, x, conditions, batch_size, state.amp)
    # x is (N, ...) for clean images, shared by all targets, or (T, N, ...) when protected
    purified = chunked(bypass.purify, x.reshape(-1, *x.shape[-3:]), batch_size=batch_size,
                       device=state.device).view(x.shape)
    return batched_generate(generator, purified, conditions, batch_size, state.amp)


def fit_target(generator, labels: torch.Tensor) -> FitTarget:
    try:
        unedited = generator.unedited_conditions(labels)
    except NotImplementedError:
        unedited = None
    return FitTarget(generator, generator.targets(labels), unedited)


def fit_defense(state: RunState, defense, gen_name: str, view=None) -> str | None:
    """Fit a learned or universal defense once (cached), load the result into it and
    return the fit's key (None when it has nothing to fit), which the protected images'
    cache key then includes. `view(name) -> (model, identity)` is what the defender fits
    against (default: the original generators; the leakage scenario: bypassed pipelines)."""
    scope = defense.fit_scope()
    if scope is None:
        return None
    if scope not in FIT_SCOPES:
        raise ConfigError(f"defense {defense.name!r} declares fit scope {scope!r}; expected one of {FIT_SCOPES}")
    names = {"generator": [gen_name], "generators": state.universal_generators, "images": []}[scope]
    split = state.defense_split
    loaded = [(view or state.generator)(n) for n in names]
    targets = [fit_target(generator, split.faces.labels(generator.attribute_names)) for generator, _ in loaded]
    parts = {"step": "defense_fit", "defense": defense.identity(), "images": split.identity,
             "generators": [identity for _, identity in loaded], "seed": state.config["seed"],
             "conditions": [tensor_digest(t.conditions) for t in targets], **precision_parts(state)}
    key = make_key(parts)
    if key not in state.defense_fits:
        hit = state.cache.get("defense_fit", parts)
        if hit is None:
            started = time.time()
            tensors, info = defense.fit(split.images, targets, state.config["seed"], state.device)
            info = {**info, "fit_seconds": round(time.time() - started, 2), "cache_hit": False}
            state.cache.put("defense_fit", parts, tensors, info)
        else:
            tensors, info = hit[0], {**hit[1], "cache_hit": True}
        state.defense_fits[key] = (tensors, {**info, "defense": defense.label, "scope": scope, "generators": names,
                                             "scenario": SCENARIO if view is None else LEAKAGE})
    defense.load_state(*state.defense_fits[key])
    return key


def load_generator(config: dict, name: str, device: torch.device):
    """The generator `name` with the profile's weights, frozen, in inference mode."""
    weights = config["generators"].get(name, {}).get("weights", "shipped")
    generator = Registry("generators").get(name).load(weights, config["resolution"])
    return generator.to(device).eval().requires_grad_(False)


def prepare_bypass(state: RunState, label: str, gen_name: str) -> Prepared:
    """The bypass plugin, fitted if trainable (with its cost as rows), and the patched
    generator for patches (None for purifiers)."""
    generator, identity = state.generator(gen_name)
    base_parts = {"generator": identity, **precision_parts(state)}
    bypass = make_plugin("bypasses", label, state.config)
    state.plugins.setdefault("bypasses", {})[label] = bypass.identity()
    fit_key = None
    if bypass.trainable:
        info, fit_key = fit_bypass(state, bypass, generator, state.finetune, base_parts)
        state.fits[(gen_name, label)] = info
        for metric in ("train_seconds", "trainable_params"):
            if metric in info:
                state.rows.append({"generator": gen_name, "defense": NONE, "bypass": label,
                                   "scenario": SCENARIO, "metric": metric, "value": float(info[metric]),
                                   "n": 1, "higher_is_better": False, "threshold": None,
                                   "cache_hit": info["cache_hit"], "seconds": 0.0})
    patched = bypass.patch(generator).to(state.device) if bypass.kind == "patch" else None
    return Prepared(bypass, patched, {"bypass": bypass.identity(), "fit": fit_key})


@dataclass
class GeneratorContext:
    """What every cell of one generator shares: its evaluation inputs and clean outputs."""
    name: str
    generator: torch.nn.Module
    images: torch.Tensor
    conditions: torch.Tensor
    clean: torch.Tensor
    image_parts: dict
    edits: Edits | None
    grids: list["Grid"] = field(default_factory=list)


def score_cell(state: RunState, ctx: GeneratorContext, defense: str, label: str, x: torch.Tensor,
               scenario: str, seconds: float, cache_hit: bool) -> None:
    """Outputs of bypass `label` on inputs x (clean (N, ...) or protected (T, N, ...)), scored
    against what the bypass means to produce: the original fake, or for a defensive patch
    the marked fake (plus the original fake outside the mark)."""
    prepared = state.bypass(ctx.name, label)
    bypass, patched = prepared.bypass, prepared.patched
    started = time.time()
    outputs = bypass_outputs(state, bypass, ctx.generator, patched, x, ctx.conditions)
    control = None
    if ctx.edits is not None and needs_control(state):
        unedited = ctx.edits.unedited.expand(x.size(0) if x.dim() == 5 else 1, *ctx.edits.unedited.shape[1:])
        control = bypass_outputs(state, bypass, ctx.generator, patched, x, unedited)
    base = {"generator": ctx.name, "defense": defense, "bypass": label, "scenario": scenario}
    seconds += time.time() - started
    if bypass.defensive:
        marked, region = bypass.intended(ctx.clean), bypass.mark_region(outputs.size(-1))
        score(state, outputs, marked, {**base, "reference": "marked"}, seconds, cache_hit, ctx.edits, control)
        outside = torch.where(region, ctx.clean, outputs)
        score(state, outside, ctx.clean, {**base, "reference": "outside_mark"}, seconds, cache_hit, pair_only=True)
        recovery = mark_recovery(outputs, marked, ctx.clean, region)
        add_row(state, {**base, "reference": "marked", "metric": "mark_recovery", "target": "all",
                        "higher_is_better": True, "threshold": None},
                float(recovery.mean()), recovery.numel(), seconds, cache_hit)
    else:
        score(state, outputs, ctx.clean, {**base, "reference": ORIGINAL}, seconds, cache_hit, ctx.edits, control)
    for grid in ctx.grids:
        grid.offer(defense, label, scenario, outputs)


def add_budget_rows(state: RunState, ctx: GeneratorContext, defense: str, bypass: str, scenario: str,
                    protected: torch.Tensor, seconds: float, cache_hit: bool) -> None:
    """What the protected images really are (measured L-inf, L2, PSNR, SSIM against the
    clean images), one row each; `bypass`: the pipeline they were made against (leakage)."""
    from bench.budget import CLEAN_INPUT, MEASURES, measure

    base = {"generator": ctx.name, "defense": defense, "bypass": bypass, "scenario": scenario,
            "reference": CLEAN_INPUT, "target": "all", "threshold": None}
    for name, (value, n) in measure(protected, ctx.images).items():
        add_row(state, {**base, "metric": name, "higher_is_better": MEASURES[name][0]}, value, n, seconds, cache_hit)


def protect_cached(state: RunState, ctx: GeneratorContext, d_name: str,
                   leaked: str | None = None) -> tuple[torch.Tensor, bool, float]:
    """Defense `d_name`'s protected images (T, N, 3, H, W), made against the generator or,
    in the leakage scenario, against the pipeline bypass `leaked` makes of it; cached."""
    config = state.config
    defense = make_plugin("defenses", d_name, config)
    state.plugins.setdefault("defenses", {})[d_name] = defense.identity()
    view = None if leaked is None else (lambda name: state.defender_view(name, leaked))
    parts = {"step": "protect", **ctx.image_parts, "defense": defense.identity(), "seed": config["seed"],
             "fit": fit_defense(state, defense, ctx.name, view)}
    target = ctx.generator
    if view is not None:
        target, parts["generator"] = view(ctx.name)

    def protect():  # full precision: float16 gradients of a per-pixel mean underflow
        return defense.protect(ctx.images, target, ctx.conditions, config["seed"]).float().cpu(), {}

    protected, hit, info = cached_tensor(state, "protect", parts, protect)
    return protected, hit, 0.0 if hit else info.get("seconds", 0.0)


def run_generator(state: RunState, gen_name: str, names: dict, evaluation: Split) -> GeneratorContext:
    """The standard scenario for one generator: every bypass on clean inputs and on each
    defense's protected images. `names`: the run's defenses and bypasses, and those of
    the leakage scenario (for the figures)."""
    config, defenses, bypasses = state.config, names["defenses"], names["bypasses"]
    generator, identity = state.generator(gen_name)
    state.plugins.setdefault("generators", {})[gen_name] = identity
    labels = evaluation.faces.labels(generator.attribute_names)
    conditions = generator.targets(labels)
    edits = edits_of(generator, labels) if any(m.spec.kind == "attribute" for m in state.metrics) else None
    image_parts = {"generator": identity, **precision_parts(state), "images": evaluation.identity,
                   "conditions": tensor_digest(conditions)}
    started = time.time()
    clean, hit, _ = cached_tensor(state, "clean", {"step": "clean", **image_parts},
                                  lambda: (batched_generate(generator, evaluation.images, conditions,
                                                            config["batch_size"], state.amp), {}))
    ctx = GeneratorContext(gen_name, generator, evaluation.images, conditions, clean, image_parts, edits)
    ctx.grids = figure_grids(state, ctx, names)
    clean_control = None
    if edits is not None and needs_control(state):
        clean_control = batched_generate(generator, evaluation.images, edits.unedited, config["batch_size"],
                                         state.amp)
    score(state, clean, clean, {"generator": gen_name, "defense": NONE, "bypass": NONE, "scenario": SCENARIO,
                                "reference": ORIGINAL}, time.time() - started, hit, edits, clean_control)
    for label in bypasses:
        if label != NONE:  # no bypass on clean inputs: the clean outputs, scored above
            score_cell(state, ctx, NONE, label, evaluation.images, SCENARIO, 0.0, False)
    for d_name in tqdm(defenses, desc=f"{gen_name}: defenses", unit="defense", disable=len(defenses) < 2):
        protected, hit, seconds = protect_cached(state, ctx, d_name)
        add_budget_rows(state, ctx, d_name, NONE, SCENARIO, protected, seconds, hit)
        for label in bypasses:
            score_cell(state, ctx, d_name, label, protected, SCENARIO, seconds, hit)
    return ctx


def leakage_selection(config: dict, defenses: list[str], bypasses: list[str]) -> tuple[list[str], list[str]]:
    """The run's defenses and bypasses that the leakage scenario covers: those its
    `leakage` settings name ("all" or a comma list), except "none" (the same as the
    standard scenario); defensive patches are skipped where they come up."""
    def chosen(kind: str, spec: str, names: list[str]) -> list[str]:
        if spec == "all":
            return names
        listed = [n.strip() for n in spec.split(",") if n.strip()]
        known = set(Registry(kind).names()) | set(variants(config, kind))
        unknown = [n for n in listed if n not in known]
        if unknown:
            raise ConfigError(f"leakage.{kind} names an unknown {kind[:-1]} {unknown[0]!r}")
        return [n for n in names if n in listed]

    leak = config["leakage"]
    return (chosen("defenses", leak["defenses"], defenses),
            [b for b in chosen("bypasses", leak["bypasses"], bypasses) if b != NONE])


def run_leakage(state: RunState, ctx: GeneratorContext, defenses: list[str], bypasses: list[str]) -> None:
    """The leakage scenario: each defense perturbs against each bypassed pipeline."""
    for label in bypasses:
        if state.bypass(ctx.name, label).bypass.defensive:
            continue
        for d_name in tqdm(defenses, desc=f"{ctx.name}: leakage vs {label}", unit="defense",
                           disable=len(defenses) < 2):
            protected, hit, seconds = protect_cached(state, ctx, d_name, leaked=label)
            add_budget_rows(state, ctx, d_name, label, LEAKAGE, protected, seconds, hit)
            score_cell(state, ctx, d_name, label, protected, LEAKAGE, seconds, hit)


def example_bypasses(config: dict, bypasses: list[str]) -> list[str]:
    """The bypasses the example grids show: Table I's (and defensive patches), else all."""
    listed = config["report"].get("table1")
    return bypasses if not listed else [b for b in bypasses if b in listed or b in config["report"].get("defensive", [])]


def figure_defense(config: dict, defenses: list[str]) -> str | None:
    """The defense whose protected images the figures show: the profile's choice where
    the run has it, else the run's first."""
    chosen = config["report"].get("figure_defense")
    return chosen if chosen in defenses else (defenses[0] if defenses else None)


def figure_grids(state: RunState, ctx: GeneratorContext, names: dict) -> list["Grid"]:
    """The run's pictures of one generator: every cell of the example bypasses; Fig. 6,
    each leakage bypass on clean and on leakage-protected inputs beside the unprotected
    fake; Fig. 7, defensive patches on clean and protected inputs beside the fakes of
    the unpatched generator."""
    out, g, targets = state.output_dir, ctx.name, ", ".join(ctx.generator.target_names())
    shown = set(example_bypasses(state.config, names["bypasses"]))
    leak_defense = (names["leakage_defenses"] or [None])[0]
    leaked = set(names["leakage_bypasses"])
    chosen = figure_defense(state.config, names["defenses"])
    edits = f"row i edits toward target i mod {ctx.conditions.size(0)} ({targets})"
    grids = [Grid(out / f"examples_{g}.png", f"{g}: {edits}", ctx,
                  lambda d, b, s: s == SCENARIO and b in shown)]
    if leaked and leak_defense is not None:
        grids.append(Grid(out / f"fig6_leakage_{g}.png",
                          f"Fig. 6, {g}, leakage scenario: each bypass on clean inputs and on inputs protected by "
                          f"{leak_defense} against the bypassed pipeline; {edits}", ctx,
                          lambda d, b, s: (s == LEAKAGE and d == leak_defense) or
                          (s == SCENARIO and ((d == NONE and b in leaked) or (d == leak_defense and b == NONE)))))
    defensive = set(names["defensive_bypasses"])
    if chosen is not None and defensive:
        grids.append(Grid(out / f"fig7_defensive_{g}.png",
                          f"Fig. 7, {g}: defensive patches on clean inputs and on inputs protected by {chosen}, "
                          f"beside the unpatched generator's fakes; {edits}", ctx,
                          lambda d, b, s: s == SCENARIO and d in (NONE, chosen) and
                          (b in defensive or (d == chosen and b == NONE))))
    return grids


class Grid:
    """A picture of the run: for a few faces (one edit target each, cycling through the
    targets), the input, the original fake (the original generator's output on the
    clean image, which every cell is compared with) and the outputs of the cells it
    `wants(defense, bypass, scenario)`. Saved where it shows any cell."""

    def __init__(self, path: Path, title: str, ctx: GeneratorContext, wants, n_faces: int = 6):
        self.path, self.title, self.wants = path, title, wants
        self.n = min(n_faces, ctx.images.size(0))
        self.index = torch.arange(self.n)
        self.n_targets = ctx.conditions.size(0)
        self.columns = [("input", ctx.images[:self.n]), ("original fake", self.pick(ctx.clean))]

    def pick(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[self.index % self.n_targets, self.index]

    def offer(self, defense: str, bypass: str, scenario: str, outputs: torch.Tensor) -> None:
        if self.wants(defense, bypass, scenario):
            title = f"{'clean input' if defense == NONE else defense}\n{bypass}"
            self.columns.append((title + (" (leakage)" if scenario == LEAKAGE else ""), self.pick(outputs)))

    def save(self) -> None:
        from bench.figures import save_titled_grid

        if len(self.columns) > 2:  # beyond the input and the original fake
            save_titled_grid(self.columns, self.path, self.title)


def universal_generators(config: dict, run_generators: list[str]) -> list[str]:
    """The generators universal defenses fit across: the profile's fixed set (so a run
    of one generator reuses the fit of a run of all), or the run's own with "run"; sorted,
    so the order they are named in does not change the fit."""
    chosen = config["universal_fit_generators"]
    return sorted(run_generators if chosen == "run" else Registry("generators").resolve(chosen))


def run(config: dict, output_dir: Path, defenses: str | list[str], bypasses: str | list[str],
        generators: str | list[str], command: str = "") -> Path:
    started, git = time.time(), git_state()
    torch.manual_seed(config["seed"])
    device = resolve_device(config["device"])
    names = {"defenses": Registry("defenses").resolve(defenses, variants(config, "defenses")),
             "bypasses": Registry("bypasses").resolve(bypasses, variants(config, "bypasses")),
             "generators": Registry("generators").resolve(generators)}
    metrics, skipped = usable_metrics(config)
    state = RunState(config, device, Cache(enabled=config["cache"]), output_dir=output_dir, metrics=metrics,
                     skipped_metrics=skipped, metric_identities={m.spec.name: m.identity() for m in metrics},
                     universal_generators=universal_generators(config, names["generators"]))
    scenarios = check_scenarios(config["scenarios"])
    output_dir.mkdir(parents=True, exist_ok=True)
    faces = load_data(config)
    evaluation = load_split(config, faces, "eval", config["limit"])
    bypass_plugins = [make_plugin("bypasses", b, config) for b in names["bypasses"]]
    if any(b.trainable for b in bypass_plugins):
        state.finetune = load_split(config, faces, "finetune", config["finetune_limit"])
    if any(make_plugin("defenses", d, config).fit_scope() for d in names["defenses"]):
        state.defense_split = load_split(config, faces, "defense", config["defense_fit_limit"])
    leak_defenses, leak_bypasses = leakage_selection(config, names["defenses"], names["bypasses"])
    if LEAKAGE not in scenarios:
        leak_defenses, leak_bypasses = [], []
    cells = {**names, "leakage_defenses": leak_defenses, "leakage_bypasses": leak_bypasses,
             "defensive_bypasses": [b.label for b in bypass_plugins if b.defensive]}
    for gen_name in names["generators"]:
        ctx = run_generator(state, gen_name, cells, evaluation)
        if leak_defenses and leak_bypasses:
            run_leakage(state, ctx, leak_defenses, leak_bypasses)
        for grid in ctx.grids:
            grid.save()
    meta = run_metadata(config, names, state.plugins, device, command, git)
    meta["plugin_origins"] = plugin_origins(config, names)
    meta["data"] = {"eval": evaluation.identity, "finetune": state.finetune.identity if state.finetune else None,
                    "defense_fit": state.defense_split.identity if state.defense_split else None}
    meta["defense_fits"] = [info for _, info in state.defense_fits.values()]
    meta["fits"] = {f"{g}/{b}": {k: v for k, v in info.items() if k != "loss_curve"}
                    for (g, b), info in state.fits.items()}
    meta["wall_seconds"] = round(time.time() - started, 2)
    meta["peak_memory"] = peak_memory_mb(device)
    meta["cache_hits"] = sum(r["cache_hit"] for r in state.rows)
    meta["metrics"] = state.metric_identities
    meta["metrics_skipped"] = state.skipped_metrics
    meta["metric_seconds"] = {name: round(t, 2) for name, t in state.metric_seconds.items()}
    atomic_write_text(output_dir / "cells.jsonl", "".join(json.dumps(r) + "\n" for r in state.rows))
    atomic_write_json(output_dir / "run.json", meta)
    for (g, b), info in state.fits.items():
        if "loss_curve" in info:
            atomic_write_json(output_dir / f"loss_curve_{g}_{b}.json", info["loss_curve"])
    return output_dir


def plugin_origins(config: dict, names: dict) -> dict:
    """Where each plugin of the run came from (distribution, its version, entry point) and
    its metadata (paper, link, licence): kind -> label -> origin (a variant: its plugin's)."""
    origins = {}
    for kind in ("defenses", "bypasses", "generators"):
        declared = variants(config, kind) if kind != "generators" else {}
        registry = Registry(kind)
        origins[kind] = {label: registry.origin(declared.get(label, label)) for label in names[kind]}
    return origins


def usable_metrics(config: dict) -> tuple[list, dict]:
    """The configured metrics that can run here, and why each of the others cannot (one
    line each, printed: a metric is never silently left out)."""
    registry = Registry("metrics")
    usable, skipped = [], {}
    for name in registry.resolve(config["metrics"]):
        metric = registry.get(name)
        reason = metric.missing()
        if reason:
            skipped[name] = reason
            tqdm.write(f"note: metric {name} skipped: {reason}")
        else:
            usable.append(metric)
    return usable, skipped


def check_scenarios(scenarios: list[str]) -> list[str]:
    unknown = [s for s in scenarios if s not in (SCENARIO, LEAKAGE)]
    if unknown:
        raise ConfigError(f"unknown scenario {unknown[0]!r}; choose from {SCENARIO!r}, {LEAKAGE!r}")
    return scenarios
