"""Execution parameters: type checks, defaults, and what containers receive.

Parameter values often come from alert labels, which are untrusted input: they
are checked against the declared type, enum and pattern before anything runs,
and they reach containers only as environment variables, never by substitution
into a command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from runbook_operator.api.runbook import Param

MAX_PARAM_BYTES = 16 * 1024


class ParamError(ValueError):
    """A parameter value that does not fit its declaration; the message names it."""


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def check_value(param: Param, value: Any, *, check_enum: bool = True) -> None:
    """Raise ``ParamError`` when ``value`` does not fit ``param``.

    The message quotes the value, except for secret parameters.
    """
    def _short(v: Any) -> str:
        return "[REDACTED]" if param.secret else _quote(v)

    expected = _PY_TYPES[param.type]
    is_bool = isinstance(value, bool)
    if not isinstance(value, expected) or (is_bool and param.type != "boolean"):
        raise ParamError(f"parameter {param.name!r}: expected {param.type}, "
                         f"got {_type_name(value)} {_short(value)}")
    if check_enum and param.enum is not None and value not in param.enum:
        raise ParamError(f"parameter {param.name!r}: {_short(value)} is not one of "
                         f"{', '.join(_quote(v) for v in param.enum)}")
    if param.pattern is not None and isinstance(value, str):
        try:
            matched = re.fullmatch(param.pattern, value) is not None
        except (re.error, OverflowError, RecursionError):
            matched = False
        if not matched:
            raise ParamError(f"parameter {param.name!r}: {_short(value)} does not match "
                             f"pattern {param.pattern!r}")
    try:
        size = len(json.dumps(value))
    except (ValueError, RecursionError):  # e.g. an integer of thousands of digits
        size = MAX_PARAM_BYTES + 1
    if size > MAX_PARAM_BYTES:
        raise ParamError(f"parameter {param.name!r}: value is larger than {MAX_PARAM_BYTES} bytes")


def resolve_params(
    declared: list[Param], given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Apply defaults and check every value.

    Returns the resolved parameters and a list of error messages, one per bad
    parameter (unknown, missing, wrong type, not in enum, pattern mismatch).
    """
    resolved: dict[str, Any] = {}
    errors: list[str] = []
    by_name = {p.name: p for p in declared}
    for name in given:
        if name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            errors.append(f"parameter {name!r} is not declared by the runbook (declared: {known})")
    for param in declared:
        if param.name in given and given[param.name] is not None:
            value = given[param.name]
        elif param.default is not None:
            value = param.default
        elif param.required:
            errors.append(f"parameter {param.name!r} is required")
            continue
        else:
            value = None
        if value is not None:
            try:
                check_value(param, value)
            except ParamError as exc:
                errors.append(str(exc))
                continue
        resolved[param.name] = value
    return resolved, errors


def secret_names(declared: list[Param]) -> frozenset[str]:
    return frozenset(p.name for p in declared if p.secret)


def env_name(param_name: str) -> str:
    """``provider`` -> ``PARAM_PROVIDER``."""
    return "PARAM_" + param_name.upper()


def env_value(value: Any) -> str:
    """Strings as they are; everything else as JSON (``true``, ``3``, ``["a"]``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def _quote(value: Any) -> str:
    try:
        text = json.dumps(value) if not isinstance(value, str) else repr(value[:80])
    except (ValueError, TypeError, RecursionError):  # too deep, or an integer too long
        return f"<a {_type_name(value)} too large to show>"
    return text if len(text) <= 60 else text[:57] + "..."


def secret_forms(value: Any) -> list[str]:
    """The forms in which one secret value may appear in text: as given, and as JSON."""
    return [env_value(value), json.dumps(value)]


def secret_literals(declared: Any, given: Any) -> list[str]:
    """The forms in which secret parameter values may appear in text (as given, as JSON).

    From raw objects (a Runbook's ``params`` list, an execution's ``spec.params``), as a
    watch event brings them, so that any replica learns a run's secrets before it could
    log anything about it; malformed input gives what can be read, never an error.
    """
    if not isinstance(declared, list) or not isinstance(given, Mapping | None):
        return []
    out: list[str] = []
    for param in declared:
        if not isinstance(param, Mapping) or param.get("secret") is not True:
            continue
        name = param.get("name")
        value = (given or {}).get(name, param.get("default")) if isinstance(name, str) \
            else None
        if value is not None:
            try:
                out += secret_forms(value)
            except (TypeError, ValueError):
                continue
    return out
