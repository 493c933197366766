"""The plan of a run: its cells and the cached steps they need, built before anything
is computed.

A cell is (generator, defense, bypass, scenario). Its steps, each a node with its
inputs and its cache key (the hash of everything that determines its value):

    clean        a generator's outputs on the clean evaluation images
    fit          a trainable bypass fitted on the fine-tuning split (per generator, or
                 once for every generator where the fit depends on the images alone)
    defense_fit  a learned or universal defense fitted on the defender's split, against
                 generators or, in the leakage scenario, against their bypassed pipelines
    protect      a defense's protected images (rows: the measured budget)
    cell         the bypassed pipeline's outputs on clean or protected inputs, scored
                 (rows: one per metric)

Shared steps appear once: one LoRA fit serves every defense, one universal fit every
generator. The leakage scenario is cells whose protect step attacks the bypassed
pipeline; the transfer scenario is cells (no bypass) whose protect step attacked other
generators: the standard scenario's own steps, or a universal defense's fit across the
other generators. Steps are listed in an order where every input comes first; a step's id is
"<kind>/<key>", so any process that shares the cache can read its value.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import astuple, dataclass, field

import torch

import bench
from bench.contract.errors import ConfigError
from bench.contract.registry import SINGULAR, registry
from bench.contract.results import (
    CLEAN_INPUT,
    LEAKAGE,
    NONE,
    ROW_SCHEMA,
    SCENARIOS,
    STANDARD,
    TRANSFER,
    Cell,
    transfer_scenario,
)
from bench.contract.results import across as fitted_across
from bench.harness.cache import make_key, tensor_digest
from bench.harness.downloads import verified_checkpoint
from bench.harness.inputs import (
    Split,
    load_data,
    load_generator,
    load_split,
    make_plugin,
    variants,
)
from bench.toolkit.attacks import ATTACK_PRECISIONS
from bench.toolkit.device import native_bf16, resolve_device

FIT_SCOPES = ("generator", "generators", "images")
STEP_KINDS = ("clean", "fit", "defense_fit", "protect", "cell")
FIT_KINDS = ("fit", "defense_fit")  # fitted states: the same for every user of a recipe, so they can be released
PREVIEW_FACES = 6  # faces of each cell kept for the run's image grids


@dataclass
class Step:
    kind: str
    key: str
    parts: dict  # what determines its value (hashed into key; kept in the cache manifest)
    task: dict  # what to compute, JSON-able; names inputs by step id
    inputs: tuple[str, ...]
    label: str  # for people: "fit lora on stargan"

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"


@dataclass(frozen=True)
class Unit:
    """A step that makes rows, and the cell its rows belong to: a protect step (budget
    rows, reference clean_input) or a cell step."""
    cell: Cell
    step: str
    budget: bool = False

    def name(self) -> str:
        c = self.cell
        return f"{c.generator}/{c.defense}/{c.bypass}/{c.scenario}" + ("/budget" if self.budget else "")


def unit_of_row(row: dict) -> str:
    """The unit name a row of cells.jsonl belongs to."""
    cell = Cell(row["generator"], row["defense"], row["bypass"], row["scenario"])
    return Unit(cell, "", row.get("reference") == CLEAN_INPUT).name()


@dataclass
class Plan:
    steps: dict[str, Step] = field(default_factory=dict)  # id -> step, inputs first
    units: list[Unit] = field(default_factory=list)  # in the order rows are written
    names: dict = field(default_factory=dict)  # the run's defenses, bypasses, generators (+ leakage)
    metrics: list[str] = field(default_factory=list)
    metric_identities: dict = field(default_factory=dict)  # metric -> identity (weights hashed once)
    fit_users: dict = field(default_factory=dict)  # bypass fit id -> [(generator, bypass label)]
    identities: dict = field(default_factory=dict)  # generator -> identity; split -> identity
    plugins: dict = field(default_factory=dict)  # kind -> label -> identity
    defensive: list[str] = field(default_factory=list)  # bypass labels that are defensive patches
    target_names: dict = field(default_factory=dict)  # generator -> its edit targets' names
    preview: torch.Tensor | None = None  # the first evaluation images, for the run's image grids
    official_weights: dict = field(default_factory=dict)  # generator -> its official checkpoint's check

    def identity(self) -> str:
        """A hash of every row-making step: equal plans write equal rows."""
        text = json.dumps([[u.name(), u.step] for u in self.units])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def needed(self, done: set[str]) -> list[str]:
        """The ids of the steps the units not in `done` (unit names) need, inputs first."""
        wanted, stack = set(), [u.step for u in self.units if u.name() not in done]
        while stack:
            sid = stack.pop()
            if sid not in wanted:
                wanted.add(sid)
                stack.extend(self.steps[sid].inputs)
        return [sid for sid in self.steps if sid in wanted]

    def count(self) -> dict[str, int]:
        """Steps of each kind, in the order of STEP_KINDS."""
        kinds = [step.kind for step in self.steps.values()]
        return {kind: kinds.count(kind) for kind in STEP_KINDS if kind in kinds}


def device_kind(config: dict) -> str:
    """The device type steps run on ("cpu", "cuda"): part of every key, since it changes
    numbers slightly. "auto" resolves here; workers must resolve to the same."""
    if config["device"] in ("auto", None):
        return resolve_device("auto").type
    return config["device"].split(":")[0]


def attack_precision_of(config: dict, fit: bool = False) -> str:
    """The precision of sign-gradient steps: "fp32" or "bf16" ("auto": bf16 where the
    device computes it natively, else fp32); `fit`: of those inside fits
    (`fit_attack_precision`), else of protection (`attack_precision`)."""
    setting = "fit_attack_precision" if fit else "attack_precision"
    precision = config.get(setting, "fp32")
    if precision == "auto":
        return "bf16" if native_bf16(resolve_device(config["device"])) else "fp32"
    if precision not in ATTACK_PRECISIONS:
        raise ConfigError(f"{setting} must be auto, fp32 or bf16, got {precision!r}")
    return precision


def precision_parts(config: dict, fit: bool = False) -> dict:
    """What changes numbers slightly without changing the method: device kind, mixed
    precision, harness version and, where set, the thread count and a sign-gradient
    precision other than fp32 (of fits where `fit`; absent by default, so keys made
    before they existed still hold). The CPU model and torch's default thread count are
    not in it: they change rounding alone, and a fit made on one CPU serves every other."""
    kind = device_kind(config)
    parts = {"device": kind, "amp": bool(config["amp"]) and kind == "cuda", "harness": bench.__version__}
    if config.get("threads"):
        parts["threads"] = config["threads"]
    if (attack := attack_precision_of(config, fit)) != "fp32":
        parts["attack_precision"] = attack
    return parts


def check_scenarios(scenarios: list[str]) -> list[str]:
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ConfigError(f"unknown scenario {unknown[0]!r}; choose from {', '.join(map(repr, SCENARIOS))}")
    return scenarios


def leakage_selection(config: dict, defenses: list[str], bypasses: list[str]) -> tuple[list[str], list[str]]:
    """The run's defenses and bypasses that the leakage scenario covers: those its
    `leakage` settings name ("all" or a comma list), except "none" (the same as the
    standard scenario); defensive patches are left out by the planner."""
    def chosen(kind: str, spec: str, names: list[str]) -> list[str]:
        if spec == "all":
            return names
        listed = [n.strip() for n in spec.split(",") if n.strip()]
        known = set(registry(kind).names()) | set(variants(config, kind))
        unknown = [n for n in listed if n not in known]
        if unknown:
            raise ConfigError(f"leakage.{kind} names an unknown {SINGULAR[kind]} {unknown[0]!r}")
        return [n for n in names if n in listed]

    if LEAKAGE not in config["scenarios"]:
        return [], []
    leak = config["leakage"]
    return (chosen("defenses", leak["defenses"], defenses),
            [b for b in chosen("bypasses", leak["bypasses"], bypasses) if b != NONE])


def universal_generators(config: dict, run_generators: list[str]) -> list[str]:
    """The generators universal defenses fit across: the profile's fixed set (so a run
    of one generator reuses the fit of a run of all), or the run's own with "run"; sorted,
    so the order they are named in does not change the fit."""
    chosen = config["universal_fit_generators"]
    return sorted(run_generators if chosen == "run" else registry("generators").resolve(chosen))


def resolve_names(config: dict, defenses, bypasses, generators) -> dict:
    return {"defenses": registry("defenses").resolve(defenses, variants(config, "defenses")),
            "bypasses": registry("bypasses").resolve(expand_sets(bypasses, config.get("bypass_sets") or {}),
                                                     variants(config, "bypasses")),
            "generators": registry("generators").resolve(generators)}


def expand_sets(spec: str | list[str], sets: dict[str, list[str]]) -> list[str]:
    """A comma list (or list) of names with each named set (`bypass_sets`, e.g. "ladder")
    replaced by its members."""
    parts = spec if isinstance(spec, list) else [p.strip() for p in spec.split(",") if p.strip()]
    return [name for part in parts for name in sets.get(part, [part])]


class Planner:
    """Builds a plan: loads what keys depend on (generators' weights, the splits' pixels,
    the plugins' parameters) on the CPU, and computes nothing else."""

    def __init__(self, config: dict, names: dict, metrics: list[str], metric_identities: dict):
        self.config, self.names = config, names
        self.precision = precision_parts(config)
        self.fit_precision = precision_parts(config, fit=True)
        self.metric_identities = metric_identities
        self.plan = Plan(names=dict(names), metrics=list(metrics), metric_identities=metric_identities)
        self._faces = None
        self._splits: dict[str, Split] = {}
        self._generators: dict[str, tuple] = {}
        self._plugins: dict[tuple[str, str], object] = {}

    # --- what keys depend on ------------------------------------------------------
    def split(self, name: str) -> Split:
        if name not in self._splits:
            if self._faces is None:
                self._faces = load_data(self.config, announce=True)
            self._splits[name] = load_split(self.config, self._faces, name)
            self.plan.identities[f"split:{name}"] = self._splits[name].identity
            if name == "eval":
                self.plan.preview = self._splits[name].images[:PREVIEW_FACES]
        return self._splits[name]

    def generator(self, name: str) -> tuple[object, dict]:
        if name not in self._generators:
            if checked := verified_checkpoint(self.config, name):  # every generator the run loads, fits included
                self.plan.official_weights[name] = checked
            generator = load_generator(self.config, name)
            self._generators[name] = (generator, generator.identity())
            self.plan.identities[name] = self._generators[name][1]
            self.plan.target_names[name] = generator.target_names()
        return self._generators[name]

    def plugin(self, kind: str, label: str):
        if (kind, label) not in self._plugins:
            self._plugins[(kind, label)] = make_plugin(kind, label, self.config)
            self.plan.plugins.setdefault(kind, {})[label] = self._plugins[(kind, label)].identity()
        return self._plugins[(kind, label)]

    @functools.cache
    def conditions(self, generator_name: str, split: str) -> str:
        """The digest of a generator's edit targets for a split's images (one per pair)."""
        generator, _ = self.generator(generator_name)
        return tensor_digest(generator.targets(self.split(split).faces.labels(generator.attribute_names)))

    def add(self, kind: str, parts: dict, task: dict, inputs, label: str) -> str:
        step = Step(kind, make_key(parts), parts, task, tuple(i for i in inputs if i), label)
        self.plan.steps.setdefault(step.id, step)
        return step.id

    # --- steps --------------------------------------------------------------------
    def image_parts(self, g: str) -> dict:
        return {"generator": self.generator(g)[1], **self.precision, "images": self.split("eval").identity,
                "conditions": self.conditions(g, "eval")}

    def clean(self, g: str) -> str:
        return self.add("clean", {"step": "clean", **self.image_parts(g)}, {"generator": g}, (), f"clean {g}")

    def bypass_fit(self, g: str, label: str) -> str | None:
        bypass = self.plugin("bypasses", label)
        if not bypass.trainable:
            return None
        parts = {"step": "fit", "generator": self.generator(g)[1], **self.fit_precision, "bypass": bypass.identity(),
                 "images": self.split("finetune").identity, "conditions": self.conditions(g, "finetune"),
                 "seed": self.config["seed"]}
        if bypass.fit_scope == "images":  # the same fit serves every generator
            parts = {**parts, "generator": None, "conditions": None}
        elif bypass.fit_scope != "generator":
            raise ConfigError(f"bypass {bypass.name!r} declares fit scope {bypass.fit_scope!r}; "
                              "expected 'generator' or 'images'")
        sid = self.add("fit", parts, {"generator": g, "bypass": label}, (), f"fit {label} on {g}")
        users = self.plan.fit_users.setdefault(sid, [])
        if (g, label) not in users:
            users.append((g, label))
        return sid

    def pipeline(self, g: str, label: str | None) -> tuple[dict | None, dict, str | None]:
        """The model a step attacks or runs: (reference for workers, identity, fit id);
        `label` None: the generator itself."""
        identity = self.generator(g)[1]
        if label is None:
            return None, identity, None
        fit = self.bypass_fit(g, label)
        fit_key = self.plan.steps[fit].key if fit else None
        bypassed = {"bypass": self.plugin("bypasses", label).identity(), "fit": fit_key}
        return {"bypass": label, "fit": fit}, {**identity, "bypassed_by": bypassed}, fit

    def fit_scope(self, d: str) -> str | None:
        scope = self.plugin("defenses", d).fit_scope()
        if scope is not None and scope not in FIT_SCOPES:
            raise ConfigError(f"defense {d!r} declares fit scope {scope!r}; expected one of {FIT_SCOPES}")
        return scope

    def defense_fit(self, d: str, g: str, leaked: str | None, across: list[str] | None = None) -> str | None:
        """The fit protecting against `g` (or, for a universal defense, across the
        profile's generators, or `across` them: the transfer scenario's leave-one-out)."""
        defense = self.plugin("defenses", d)
        scope = self.fit_scope(d)
        if scope is None:
            return None
        fitted_on = {"generator": [g], "images": [],
                     "generators": across or universal_generators(self.config, self.names["generators"])}[scope]
        targets = [self.pipeline(name, leaked) for name in fitted_on]
        split = self.split("defense")
        conditions = [self.conditions(n, "defense") for n in fitted_on]
        parts = {"step": "defense_fit", "defense": defense.identity(), "images": split.identity,
                 "generators": [identity for _, identity, _ in targets], "seed": self.config["seed"],
                 "conditions": conditions, **self.fit_precision}
        task = {"defense": d, "scope": scope, "scenario": LEAKAGE if leaked else STANDARD, "against": leaked,
                "targets": [{"generator": n, "pipeline": ref} for n, (ref, _, _) in zip(fitted_on, targets)]}
        where = f" against {leaked}" if leaked else ""
        return self.add("defense_fit", parts, task, [fit for _, _, fit in targets],
                        f"fit {d} on {', '.join(fitted_on) or 'images'}{where}")

    def protect(self, g: str, d: str, leaked: str | None, across: list[str] | None = None) -> str:
        """The protect step against `g` (its pipeline bypassed by `leaked`), its budget
        rows those of g's standard or leakage cell; `across`: a universal defense's fit
        across these generators instead (the transfer scenario's; no budget rows)."""
        defense = self.plugin("defenses", d)
        fit = self.defense_fit(d, g, leaked, across)
        ref, identity, bypass_fit = self.pipeline(g, leaked)
        parts = {"step": "protect", **self.image_parts(g), "defense": defense.identity(),
                 "seed": self.config["seed"], "fit": self.plan.steps[fit].key if fit else None}
        parts["generator"] = identity
        cell = Cell(g, d, leaked or NONE, LEAKAGE if leaked else STANDARD)
        task = {"generator": g, "defense": d, "pipeline": ref, "defense_fit": fit, "cell": list(astuple(cell))}
        where = f" against {leaked}" if leaked else f" fitted on {'+'.join(across)}" if across else ""
        sid = self.add("protect", parts, task, [fit, bypass_fit], f"protect with {d} on {g}{where}")
        unit = Unit(cell, sid, budget=True)
        if across is None and unit not in self.plan.units:  # the transfer scenario reuses standard steps
            self.plan.units.append(unit)
        return sid

    def transfer_sources(self, g: str, d: str) -> list[tuple[str, str]]:
        """(source, protect step) of each protection made without generator `g`: against
        each other generator of the run, or, for a universal defense, fitted across the
        profile's other generators."""
        generators = self.names["generators"]
        if self.fit_scope(d) != "generators":
            return [(s, self.protect(s, d, None)) for s in generators if s != g]
        across = [s for s in universal_generators(self.config, generators) if s != g]
        if not across:
            return []
        return [(fitted_across(across), self.protect(across[0], d, None, across))]

    def cell(self, g: str, d: str, label: str, scenario: str, protect: str | None,
             metrics: list[str] | None = None) -> str:
        """The cell's step, scoring the run's metrics (or those of them in `metrics`)."""
        clean = self.clean(g)
        ref, identity, fit = self.pipeline(g, label)
        scored = [m for m in self.plan.metrics if metrics is None or m in metrics]
        parts = {"step": "cell", "clean": self.plan.steps[clean].key,
                 "inputs": self.plan.steps[protect].key if protect else self.split("eval").identity,
                 "pipeline": identity, **self.precision,
                 "metrics": self.metric_identities if metrics is None else
                 {m: self.metric_identities[m] for m in scored},
                 "labels": [g, d, label, scenario], "rows": ROW_SCHEMA}
        task = {"generator": g, "defense": d, "bypass": label, "scenario": scenario, "pipeline": ref,
                "clean": clean, "protect": protect, "metrics": scored}
        sid = self.add("cell", parts, task, [clean, protect, fit], f"score {d} / {label} on {g} ({scenario})")
        self.plan.units.append(Unit(Cell(g, d, label, scenario), sid))
        return sid

    def protected_metrics(self, bypass: str) -> list[str] | None:
        """What a protected cell under `bypass` scores (None: the run's metrics). Set
        metrics (FID, KID) compare the outputs as a distribution, which the reports read
        on a defensive patch's protected outputs (Table IV) and on no other bypass's: those
        are left out unless `set_metrics_on_protected` asks for them."""
        if self.config["set_metrics_on_protected"] or bypass in self.plan.defensive:
            return None
        kept = [m for m in self.plan.metrics if self.metric_identities[m]["kind"] != "set"]
        return None if kept == self.plan.metrics else kept

    # --- the matrix -----------------------------------------------------------------
    def check_weights(self) -> None:
        """Every checkpoint the run needs is found (verified where it is official: `generator`)
        and loads before an image is read."""
        for g in self.names["generators"]:
            self.generator(g)
        for kind in ("defenses", "bypasses"):
            for label in self.names[kind]:
                self.plugin(kind, label).check_ready()

    def build(self, leak_defenses: list[str], leak_bypasses: list[str]) -> Plan:
        names, plan = self.names, self.plan
        self.check_weights()
        plan.defensive = [b for b in names["bypasses"] if self.plugin("bypasses", b).defensive]
        leak_bypasses = [b for b in leak_bypasses if b not in plan.defensive]
        plan.names.update(leakage_defenses=leak_defenses if leak_bypasses else [],
                          leakage_bypasses=leak_bypasses if leak_defenses else [])
        for g in names["generators"]:
            self.cell(g, NONE, NONE, STANDARD, None)
            for label in names["bypasses"]:
                if label != NONE:  # no bypass on clean inputs: the clean outputs, scored above
                    self.cell(g, NONE, label, STANDARD, None)
            for d in names["defenses"]:
                protect = self.protect(g, d, None)
                for label in names["bypasses"]:
                    self.cell(g, d, label, STANDARD, protect, self.protected_metrics(label))
            for label in plan.names["leakage_bypasses"]:
                for d in plan.names["leakage_defenses"]:
                    self.cell(g, d, label, LEAKAGE, self.protect(g, d, label), self.protected_metrics(label))
        if TRANSFER in self.config["scenarios"]:
            for g in names["generators"]:  # after every standard protect step: they are reused
                for d in names["defenses"]:
                    for source, protect in self.transfer_sources(g, d):
                        self.cell(g, d, NONE, transfer_scenario(source), protect,
                                  self.config["transfer"]["metrics"])
        return plan


def build_plan(config: dict, names: dict, metrics: list[str], metric_identities: dict) -> Plan:
    check_scenarios(config["scenarios"])
    leak_defenses, leak_bypasses = leakage_selection(config, names["defenses"], names["bypasses"])
    return Planner(config, names, metrics, metric_identities).build(leak_defenses, leak_bypasses)
