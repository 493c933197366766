"""Settings with declared constraints, checked once where they enter.

A plugin's `Params` (and a training recipe's `TrainParams`) is a dataclass whose field
annotations say what is allowed, next to the default:

    @dataclass
    class Params:
        eps: Budget = 0.05                       # 0 < eps <= 2 (L-inf on [-1, 1])
        steps: Count = 10                        # an int >= 1
        variant: Literal["a", "b"] = "a"         # one of these

The constraint types are `typing.Annotated` with `annotated_types` markers and
`typing.Literal` choices; pydantic checks them strictly (no "3" for 3, no 1 for
True; an int is taken where a float is expected). A wrong value is one `ConfigError`
line naming the setting, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Annotated, Any

import pydantic
from annotated_types import Ge, Gt, Interval, MultipleOf

from bench.contract.errors import ConfigError

Count = Annotated[int, Ge(1)]                       # steps, epochs, sizes: at least 1
NonNegativeInt = Annotated[int, Ge(0)]
Positive = Annotated[float, Gt(0)]                  # learning rates, step sizes, scales
NonNegative = Annotated[float, Ge(0)]               # loss weights
Fraction = Annotated[float, Interval(ge=0, le=1)]
Budget = Annotated[float, Interval(gt=0, le=2)]     # an L-inf budget on [-1, 1]
JpegQuality = Annotated[int, Interval(ge=1, le=100)]
AdamBeta = Annotated[float, Interval(ge=0, lt=1)]
Resolution = Annotated[int, Ge(16), MultipleOf(16)]  # the JPEG codecs work on 16 px blocks
Seed = Annotated[int, Interval(ge=0, lt=2**31)]  # seeds derived from it (seed + 1, seed * 1_000_003 + step) stay in range

STRICT = pydantic.ConfigDict(strict=True)


@functools.cache
def adapter(hint) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(hint, config=STRICT)


@functools.cache
def field_types(params_cls: type) -> dict[str, Any]:
    """Each field's annotation, resolved (the annotations may be strings)."""
    hints = typing.get_type_hints(params_cls, include_extras=True)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(params_cls)}


def explain(err: pydantic.ValidationError) -> tuple[str, str, Any]:
    """(where inside the value, what is allowed, the offending part) of pydantic's first
    complaint."""
    first = err.errors(include_url=False)[0]
    inside = "".join(f"[{part}]" for part in first["loc"] if isinstance(part, int))
    message = first["msg"]
    for prefix, replacement in (("Input should", "must"), ("Value error, ", ""), ("Assertion failed, ", "")):
        if message.startswith(prefix):
            message = replacement + message[len(prefix):]
    if first["type"] in ("too_short", "too_long"):
        message = message.replace("List should", "must").split(" after validation")[0]
    return inside, message, first["input"]


def check_value(hint, value, what: str):
    """`value` checked against the annotation `hint` (an int becomes a float where one is
    expected); else one ConfigError line: `<what> must ..., got <value>`."""
    if hint is Any:
        return value
    try:
        return adapter(hint).validate_python(value)
    except pydantic.ValidationError as err:
        inside, message, offending = explain(err)
        raise ConfigError(f"{what}{inside} {message}, got {offending!r}") from None


def build_params(params_cls, overrides: dict | None, owner: str):
    """An instance of the dataclass `params_cls` with the user's `overrides`: unknown
    names and values outside a field's declared constraints are one-line errors."""
    overrides = dict(overrides or {})
    types = field_types(params_cls)
    for key in overrides:
        if key not in types:
            close = difflib.get_close_matches(key, types, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{owner} has no parameter {key!r}{hint} (parameters: {', '.join(types) or 'none'})")
    values = {key: check_value(types[key], value, f"{owner} parameter {key!r}") for key, value in overrides.items()}
    return params_cls(**values)


def default_violations(params_cls, owner: str, settings: dict | None = None) -> list[str]:
    """What in the defaults (with `settings` over them) breaks the declared constraints."""
    try:
        instance = build_params(params_cls, settings, owner)
    except ConfigError as err:
        return [str(err)]
    problems = []
    for name, hint in field_types(params_cls).items():
        try:
            check_value(hint, getattr(instance, name), f"{owner} parameter {name!r}")
        except ConfigError as err:
            problems.append(str(err))
    return problems
