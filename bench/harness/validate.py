"""`bench validate NAME`: check that a plugin keeps its contract, on a tiny random
generator and random images, in seconds. Used on third-party plugins and, in the
tests, on every built-in one."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

from bench.contract.errors import ConfigError
from bench.contract.params import default_violations
from bench.contract.plugins import FitTarget
from bench.contract.registry import GROUPS, registry
from bench.toolkit.tiny_generator import tiny_generator

Check = tuple[str, bool, str]


def sample_batch(generator, n: int = 2, size: int = 16):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    labels = torch.randint(0, 2, (n, len(generator.attribute_names)), generator=gen).float()
    return x, generator.targets(labels), labels


def check_defense(cls) -> list[Check]:
    defense = cls(**cls.smoke_params)
    generator = tiny_generator()
    x, conditions, labels = sample_batch(generator)
    checks = []
    if defense.fit_scope() is not None:
        targets = [FitTarget(generator, conditions, generator.unedited_conditions(labels))]
        state, info = defense.fit(x, targets, 0, torch.device("cpu"))
        checks.append(("fit returns tensors and info", all(isinstance(v, torch.Tensor) for v in state.values())
                       and isinstance(info, dict), ""))
        again, _ = cls(**cls.smoke_params).fit(x, targets, 0, torch.device("cpu"))
        checks.append(("fit deterministic under a seed", state.keys() == again.keys()
                       and all(torch.equal(v, again[k]) for k, v in state.items()), ""))
        defense = cls(**cls.smoke_params)
        defense.load_state(state, info)  # protect from the loaded state, as the runner does
    out = defense.protect(x, generator, conditions, seed=0)
    expected = (conditions.size(0), *x.shape)
    eps = getattr(defense.params, "eps", None)
    checks += [("shape (T, N, 3, H, W)", tuple(out.shape) == expected, f"{tuple(out.shape)} vs {expected}"),
               ("values in [-1, 1]", bool(out.min() >= -1 and out.max() <= 1), f"[{out.min():.3f}, {out.max():.3f}]")]
    if eps is not None:
        dist = (out - x.unsqueeze(0)).abs().max().item()
        checks.append((f"|x_protected - x| <= eps ({eps})", dist <= eps + 1e-6, f"max {dist:.4f}"))
    else:
        checks.append(("declares eps", False, "Params has no eps field"))
    again = defense.protect(x, generator, conditions, seed=0)
    checks.append(("deterministic under a seed", torch.equal(out, again), ""))
    if cls.per_image_settings is None:
        return checks
    return checks + check_one_per_image(cls, generator, x, conditions, labels)


def check_one_per_image(cls, generator, x, conditions, labels) -> list[Check]:
    """Under `per_image_settings` the defense protects each image once for every target
    (what `bench protect` writes)."""
    defense = cls(**{**cls.smoke_params, **cls.per_image_settings})
    if defense.fit_scope() is not None:
        targets = [FitTarget(generator, conditions, generator.unedited_conditions(labels))]
        defense.load_state(*defense.fit(x, targets, 0, torch.device("cpu")))
    out = defense.protect(x, generator, conditions, seed=0)
    same = torch.equal(out, out[:1].expand_as(out))
    return [(f"one protected image per image under per_image_settings {cls.per_image_settings}", same, "")]


def check_bypass(cls) -> list[Check]:
    bypass = cls(**cls.smoke_params)
    generator = tiny_generator()
    x, conditions, _ = sample_batch(generator)
    checks = []
    if bypass.trainable:
        before = copy.deepcopy(generator.state_dict())
        state, info = bypass.fit(generator, x, conditions, 0, torch.device("cpu"))
        checks.append(("fit returns tensors", all(isinstance(v, torch.Tensor) for v in state.values()), ""))
        checks.append(("fit leaves the generator untouched",
                       all(torch.equal(before[k], v) for k, v in generator.state_dict().items()), ""))
        checks.append(("fit reports trainable_params and train_seconds",
                       {"trainable_params", "train_seconds"} <= set(info), ", ".join(info)))
    pipeline = bypass.pipeline(generator)
    with torch.no_grad():
        out = pipeline.model(pipeline.purify(x), conditions[0])
    checks.append(("output shape", out.shape == x.shape, f"{tuple(out.shape)}"))
    checks.append(("finite output", bool(torch.isfinite(out).all()), ""))
    return checks


def check_generator(cls) -> list[Check]:
    checks = []
    for name, config in cls.configs.items():
        if name == "official":
            continue  # too large to build in seconds; the tests load it against its layout
        generator = cls.from_config(name).eval()
        x, conditions, _ = sample_batch(generator, size=32)
        out = generator(x, conditions[0])
        checks.append((f"config {name}: conditions (T, N, ...)",
                       conditions.dim() >= 2 and conditions.size(1) == x.size(0), f"{tuple(conditions.shape)}"))
        checks.append((f"config {name}: target names", len(generator.target_names()) == conditions.size(0), ""))
        checks.append((f"config {name}: output shape", out.shape == x.shape, f"{tuple(out.shape)}"))
        labels = torch.randint(0, 2, (x.size(0), len(generator.attribute_names))).float()
        values = generator.target_values(labels)
        checks.append((f"config {name}: target values (T, N) of 0/1",
                       tuple(values.shape) == tuple(conditions.shape[:2]) and bool(((values == 0) | (values == 1)).all()),
                       f"{tuple(values.shape)}"))
        unedited = generator.unedited_conditions(labels)
        checks.append((f"config {name}: unedited conditions (1, N, ...) run",
                       unedited.size(0) == 1 and generator(x, unedited[0]).shape == x.shape, ""))
    return checks


def check_attribute_metric(cls) -> list[Check]:
    from bench.toolkit.classifier import AttributeClassifier
    from bench.toolkit.metrics import attribute_hits

    classifier = AttributeClassifier(width=4, stages=1, resolution=16).eval()  # random weights: shapes only
    outputs = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    expected = torch.randint(0, 2, (2, 3))
    hits = attribute_hits(outputs, expected, classifier.attribute_names[:2], classifier)
    return [("reads edited or unedited outputs", getattr(cls, "outputs", None) in ("edited", "unedited"), ""),
            ("one 0/1 value per (target, image)", tuple(hits.shape) == (2, 3)
             and bool(((hits == 0) | (hits == 1)).all()), f"{tuple(hits.shape)}")]


def check_metric(cls) -> list[Check]:
    from bench.contract.metric import KINDS

    if cls.spec.kind not in KINDS:
        return [("declares a known kind", False, f"{cls.spec.kind!r}; expected one of {', '.join(KINDS)}")]
    if cls.spec.kind == "attribute":
        return check_attribute_metric(cls)
    missing = cls.missing()
    if missing:
        return [("its weights are present", False, missing)]
    if cls.spec.kind == "set":
        return check_set_metric(cls)
    if cls.spec.kind == "no-reference":
        return check_no_reference_metric(cls)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    same = cls.per_pair(x, x)
    other = cls.per_pair(x, -x)
    return [("one value per pair", tuple(same.shape) == (3,), f"{tuple(same.shape)}"),
            ("identical images score best", bool((same >= other).all() if cls.spec.higher_is_better
                                                  else (same <= other).all()), "")]


def check_set_metric(cls) -> list[Check]:
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(6, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear")
    same, other = cls.per_set(x, x.clone()), cls.per_set(x, -x)
    return [("one number per pair of sets", isinstance(same, float), type(same).__name__),
            ("identical sets score best", same >= other if cls.spec.higher_is_better else same <= other,
             f"{same:.4g} vs {other:.4g}")]


def check_no_reference_metric(cls) -> list[Check]:
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    values = cls.per_image(x)
    return [("one value per image", tuple(values.shape) == (3,), f"{tuple(values.shape)}"),
            ("finite values", bool(torch.isfinite(values).all()), "")]


CHECKS: dict[str, Callable] = {"defenses": check_defense, "bypasses": check_bypass,
                               "generators": check_generator, "metrics": check_metric}


def validate(name: str, kind: str | None = None) -> tuple[str, list[Check]]:
    """Find `name` among the plugin kinds (or in `kind`) and run its contract checks."""
    kinds = [kind] if kind else [k for k in GROUPS if name in registry(k).names()]
    if not kinds:
        raise ConfigError(f"no installed plugin is named {name!r} (`bench ls` lists them)")
    kind = kinds[0]
    cls = registry(kind).get(name)
    declared = check_declared_params(cls) if kind in ("defenses", "bypasses") else []
    try:
        return kind, declared + CHECKS[kind](cls)
    except Exception as err:  # a crash is a failed contract, reported as such
        return kind, declared + [("runs without error", False, f"{type(err).__name__}: {err}")]


def check_declared_params(cls) -> list[Check]:
    """The defaults, and the smoke settings over them, keep the constraints the plugin's
    `Params` declares (a user who sets nothing must not get an error)."""
    defaults = default_violations(cls.Params, f"{cls.kind_name} {cls.name!r}")
    smoke = default_violations(cls.Params, f"{cls.kind_name} {cls.name!r}", cls.smoke_params)
    return [("defaults keep the declared constraints", not defaults, "; ".join(defaults)),
            ("smoke_params keep them", not smoke, "; ".join(smoke))]
