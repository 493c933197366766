"""Declared parameter constraints: checked where settings enter, one line each, and
kept by every installed plugin's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from annotated_types import MinLen

from bench.contract.errors import ConfigError
from bench.contract.params import Budget, Count, JpegQuality, build_params, default_violations
from bench.contract.registry import registry
from bench.harness.config import merge, parse_overrides
from bench.harness.profiles import check_settings, get_profile
from bench.harness.validate import validate


@dataclass
class Example:
    eps: Budget = 0.05
    steps: Count = 10
    mode: Literal["a", "b"] = "a"
    qualities: Annotated[list[JpegQuality], MinLen(1)] = field(default_factory=lambda: [50, 90])
    lr: float | None = None


@pytest.mark.parametrize("overrides, message", [
    ({"eps": -0.1}, "'eps' must be greater than 0, got -0.1"),
    ({"eps": 3}, "'eps' must be less than or equal to 2, got 3"),
    ({"steps": 0}, "'steps' must be greater than or equal to 1, got 0"),
    ({"steps": 2.5}, "'steps' must be a valid integer, got 2.5"),
    ({"steps": True}, "'steps' must be a valid integer, got True"),
    ({"steps": "3"}, "'steps' must be a valid integer, got '3'"),
    ({"mode": "c"}, "'mode' must be 'a' or 'b', got 'c'"),
    ({"qualities": [50, 101]}, "'qualities'[1] must be less than or equal to 100, got 101"),
    ({"qualities": []}, "'qualities' must have at least 1 item, got []"),
    ({"lr": "fast"}, "'lr' must be a valid number, got 'fast'"),
    ({"stepz": 3}, "has no parameter 'stepz'; did you mean 'steps'?"),
])
def test_a_value_outside_its_constraint_is_one_line_naming_setting_value_and_rule(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_params(Example, overrides, "defense 'example'")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_valid_values_pass_and_an_int_becomes_a_float_where_one_is_expected():
    params = build_params(Example, {"eps": 1, "steps": 3, "mode": "b", "qualities": [1, 100], "lr": None}, "x")
    assert params.eps == 1.0 and isinstance(params.eps, float) and params.steps == 3 and params.mode == "b"


def test_default_violations_reports_a_bad_default_and_a_bad_smoke_setting():
    @dataclass
    class Broken:
        steps: Count = 0
    assert default_violations(Broken, "x") == ["x parameter 'steps' must be greater than or equal to 1, got 0"]
    assert default_violations(Example, "x", {"steps": -1})
    assert default_violations(Example, "x") == []


@pytest.mark.parametrize("kind", ["defenses", "bypasses"])
def test_every_installed_plugin_keeps_its_declared_constraints(kind):
    for name in registry(kind).names():
        _, checks = validate(name, kind)
        declared = [c for c in checks if "declared" in c[0] or "smoke_params" in c[0]]
        assert len(declared) == 2 and all(ok for _, ok, _ in declared), (name, declared)


def config_with(*pairs: str, profile: str = "ci") -> dict:
    return check_settings(merge(get_profile(profile), parse_overrides(list(pairs))))


@pytest.mark.parametrize("pair, message", [
    ("limit=0", "setting 'limit' must be greater than or equal to 1, got 0"),
    ("seed=-1", "setting 'seed' must be greater than or equal to 0"),
    ("splits.eval=[5,2]", "setting 'splits.eval' must be [START, STOP) with START < STOP, got [5, 2]"),
    ("splits.eval=[3]", "setting 'splits.eval' must have at least 2 items"),
    ("resolution=63", "setting 'resolution' must be a multiple of 16, got 63"),
    ("attack_precision=fp16", "setting 'attack_precision' must be 'auto', 'fp32' or 'bf16', got 'fp16'"),
    ("scenarios=[]", "setting 'scenarios' must have at least 1 item"),
    ('scenarios=["adaptive"]', "setting 'scenarios'[0] must be 'standard', 'leakage' or 'transfer', got 'adaptive'"),
    ("protocol.eps=0", "setting 'protocol.eps' must be greater than 0, got 0"),
    ("threads=0", "setting 'threads' must be greater than or equal to 1, got 0"),
    ("defenses.nosuch.steps=3", "setting defenses.nosuch: unknown defense 'nosuch'"),
    ("bypasses.lora.rank=-1", "bypass 'lora' parameter 'rank' must be greater than or equal to 1, got -1"),
    ("bypasses.lora_r4.rank=0", "bypass 'lora' parameter 'rank' must be greater than or equal to 1, got 0"),
])
def test_profile_settings_are_checked_once_after_the_overrides(pair, message):
    with pytest.raises(ConfigError) as err:
        config_with(pair)
    assert message in str(err.value)


@pytest.mark.parametrize("profile", ["quick", "ci", "paper"])
def test_every_profile_keeps_the_settings_constraints(profile):
    assert config_with(profile=profile)["profile"] == profile
