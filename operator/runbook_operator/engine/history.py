"""Appending to an execution's history from outside the planner, within its bound.

The planner keeps ``status.history`` at most ``MAX_HISTORY`` entries and counts what
it drops in ``historyDropped``; the alert receiver and the notifier add entries to a
status they read raw, and must keep the same bound the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_operator.api.execution import MAX_HISTORY


def appended(status: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The status patch that appends ``entry`` to ``status.history``, oldest dropped."""
    old = status.get("history")
    history: list[Any] = list(old) if isinstance(old, list) else []
    dropped = max(0, len(history) + 1 - MAX_HISTORY)
    patch: dict[str, Any] = {"history": [*history[dropped:], dict(entry)]}
    if dropped:
        patch["historyDropped"] = int(status.get("historyDropped") or 0) + dropped
    return patch
