"""An execution's severity: the one rule every part of the operator reads it by.

Severity orders queues (Queue concurrency, bulkheads: SEV1 first) and labels
traces and notifications, so it must be the same everywhere: ``spec.severity``
(set by whoever started the run, such as an alert trigger's ``severity``), else
the ``severity`` parameter, else the triggering alert's ``severity`` label.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def severity_of(spec: Mapping[str, Any] | None) -> str | None:
    """The severity of an execution given its raw ``spec`` (camelCase), or None."""
    spec = spec if isinstance(spec, Mapping) else {}
    for candidate in (spec.get("severity"), _get(spec, "params", "severity"),
                      _get(spec, "triggeredBy", "alert", "labels", "severity")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _get(value: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
