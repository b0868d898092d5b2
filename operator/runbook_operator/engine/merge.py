"""JSON merge patches (RFC 7386): the smallest patch that turns one object into another.

Status is written as a merge patch of only what changed; a key that disappeared
must be sent as ``null`` or the apiserver keeps the old value.
"""

from __future__ import annotations

from typing import Any


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new`` (empty when they are equal)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(before, dict):
            sub = diff(before, value)
            if sub:
                patch[key] = sub
        elif before is _MISSING or before != value or type(before) is not type(value):
            patch[key] = value
    return patch


def apply(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a merge patch, returning a new object (RFC 7386 semantics)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result.get(key)
            result[key] = apply(base if isinstance(base, dict) else {}, value)
        else:
            result[key] = value
    return result


_MISSING: Any = object()
