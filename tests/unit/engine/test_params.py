"""engine.params: resolving an execution's parameters against the runbook's declarations.

Cases:
- defaults are applied; a given value wins over the default; an explicit null
  means "use the default";
- a required parameter without a value is an error; an optional one resolves to None;
- an undeclared parameter is an error listing the declared ones;
- types: string, integer, number, boolean, array, object; a bool is not an
  integer nor a number; 3.0 is not an integer; an int is a number;
- enum membership, pattern (full match), oversized values;
- several bad parameters give one error each;
- env_name / env_value: what containers receive (PARAM_<NAME>, JSON for non-strings);
- hypothesis: resolve_params never raises on arbitrary JSON-like values (given
  and declared defaults/enums), every error names a parameter, and every declared
  parameter without an error is resolved to a value that passes check_value.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.runbook import Param
from runbook_operator.engine.params import (
    MAX_PARAM_BYTES,
    ParamError,
    check_value,
    env_name,
    env_value,
    resolve_params,
    secret_names,
)

PROVIDER = Param(name="provider", enum=["openai", "anthropic", "deepseek"], default="openai")
SEVERITY = Param(name="severity", enum=["SEV1", "SEV2", "SEV3", "SEV4"], default="SEV3")


def test_defaults_are_applied() -> None:
    assert resolve_params([PROVIDER, SEVERITY], {}) == (
        {"provider": "openai", "severity": "SEV3"}, [])


def test_given_value_wins_and_null_means_default() -> None:
    resolved, errors = resolve_params([PROVIDER, SEVERITY], {"provider": "deepseek",
                                                             "severity": None})
    assert (resolved, errors) == ({"provider": "deepseek", "severity": "SEV3"}, [])


def test_required_parameter_missing() -> None:
    declared = [Param(name="incident_id", required=True)]
    resolved, errors = resolve_params(declared, {})
    assert resolved == {}
    assert errors == ["parameter 'incident_id' is required"]


def test_optional_parameter_without_default_is_none() -> None:
    assert resolve_params([Param(name="note")], {}) == ({"note": None}, [])


def test_unknown_parameter() -> None:
    _, errors = resolve_params([PROVIDER, SEVERITY], {"provder": "openai"})
    assert len(errors) == 1
    assert "'provder'" in errors[0]
    assert "provider, severity" in errors[0]


def test_unknown_parameter_when_none_is_declared() -> None:
    _, errors = resolve_params([], {"x": 1})
    assert errors == ["parameter 'x' is not declared by the runbook (declared: none)"]


@pytest.mark.parametrize(("type_", "good", "bad"), [
    ("string", "x", 1),
    ("integer", 3, True),
    ("integer", -7, 3.0),
    ("integer", 0, "3"),
    ("number", 2.5, False),
    ("number", 2, "2.5"),
    ("boolean", False, 0),
    ("boolean", True, "true"),
    ("array", [1, "a"], {"a": 1}),
    ("object", {"a": [1]}, [1]),
])
def test_types(type_: Any, good: Any, bad: Any) -> None:
    param = Param(name="p", type=type_)
    assert resolve_params([param], {"p": good}) == ({"p": good}, [])
    resolved, errors = resolve_params([param], {"p": bad})
    assert resolved == {}
    assert len(errors) == 1
    assert f"expected {type_}" in errors[0]
    assert "'p'" in errors[0]


def test_bool_is_not_an_integer() -> None:
    with pytest.raises(ParamError, match="expected integer, got boolean true"):
        check_value(Param(name="replicas", type="integer"), True)


def test_enum() -> None:
    _, errors = resolve_params([PROVIDER], {"provider": "gemini"})
    assert errors == ["parameter 'provider': 'gemini' is not one of "
                      "'openai', 'anthropic', 'deepseek'"]


def test_integer_enum() -> None:
    param = Param(name="minutes", type="integer", enum=[15, 30, 60])
    assert resolve_params([param], {"minutes": 30}) == ({"minutes": 30}, [])
    assert resolve_params([param], {"minutes": 45})[1] != []


def test_pattern_must_match_in_full() -> None:
    param = Param(name="namespace", pattern="[a-z0-9-]+")
    assert resolve_params([param], {"namespace": "prod-eu"}) == ({"namespace": "prod-eu"}, [])
    _, errors = resolve_params([param], {"namespace": "prod; rm -rf /"})
    assert len(errors) == 1
    assert "does not match pattern" in errors[0]


def test_broken_pattern_rejects_instead_of_raising() -> None:
    for pattern in ["(", "a{99999999999}"]:
        _, errors = resolve_params([Param(name="p", pattern=pattern)], {"p": "a"})
        assert len(errors) == 1


def test_oversized_value() -> None:
    _, errors = resolve_params([Param(name="blob")], {"blob": "x" * (MAX_PARAM_BYTES + 1)})
    assert len(errors) == 1
    assert "larger than" in errors[0]


def test_one_error_per_bad_parameter() -> None:
    declared = [PROVIDER, SEVERITY, Param(name="id", required=True)]
    resolved, errors = resolve_params(declared, {"provider": 1, "severity": "SEV9", "x": 0})
    assert resolved == {}
    assert len(errors) == 4


def test_environment_names_and_values() -> None:
    assert env_name("provider") == "PARAM_PROVIDER"
    assert env_name("threshold_pct") == "PARAM_THRESHOLD_PCT"
    assert env_value("a b $(x)") == "a b $(x)"
    assert env_value(True) == "true"
    assert env_value(3) == "3"
    assert env_value(["a", 1]) == '["a",1]'
    assert env_value(None) == ""


def test_secret_names() -> None:
    declared = [PROVIDER, Param(name="token", secret=True)]
    assert secret_names(declared) == frozenset({"token"})


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
param_names = st.sampled_from(["provider", "severity", "n", "flag", "items", "cfg", "ns"])
declarations = st.lists(
    st.builds(
        Param,
        name=param_names,
        type=st.sampled_from(["string", "integer", "number", "boolean", "array", "object"]),
        required=st.booleans(),
        default=json_like,
        enum=st.none() | st.lists(json_like, max_size=4),
        pattern=st.none() | st.sampled_from(["^[a-z]+$", "[0-9]*", "(", "a{99999999999}"]),
    ),
    max_size=5,
    unique_by=lambda p: p.name,
)


@settings(max_examples=400, deadline=None)
@given(declarations, st.dictionaries(param_names | st.text(max_size=6), json_like, max_size=6))
def test_resolve_params_never_raises(declared: list[Param], given_: dict[str, Any]) -> None:
    resolved, errors = resolve_params(declared, given_)
    known = {p.name for p in declared} | set(given_)
    for error in errors:
        assert any(f"parameter {name!r}" in error for name in known), error
    erroneous = {name for name in known if any(f"parameter {name!r}" in e for e in errors)}
    for param in declared:
        if param.name in erroneous:
            continue
        assert param.name in resolved
        if resolved[param.name] is not None:
            check_value(param, resolved[param.name])
    assert set(resolved) <= {p.name for p in declared}
