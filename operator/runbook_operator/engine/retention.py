"""Which finished executions a Runbook's history limits let go: a pure selection.

Why it exists: deciding what to delete is a decision, and decisions belong to the
engine; the controller only deletes what this returns. A Runbook's
``spec.history`` keeps the newest ``successfulLimit`` Succeeded executions and the
newest ``failedLimit`` Failed or Cancelled ones (by ``finishedAt``; an unset limit
keeps all). Executions of other runbooks or namespaces, and unfinished ones, are
never selected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from runbook_operator.engine.timeutil import parse

_GROUP = {"Succeeded": "Succeeded", "Failed": "Failed", "Cancelled": "Failed"}


def expired(history: Mapping[str, Any] | None, namespace: str, runbook: str,
            executions: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of the executions of ``runbook`` in ``namespace`` beyond the limits, oldest
    first. ``history``: the Runbook's raw ``spec.history``; ``executions``: raw bodies."""
    history = history or {}
    limits = {"Succeeded": history.get("successfulLimit"), "Failed": history.get("failedLimit")}
    if all(v is None for v in limits.values()):
        return []
    finished: dict[str, list[tuple[datetime, str]]] = {"Succeeded": [], "Failed": []}
    for body in executions:
        meta = body.get("metadata") or {}
        if meta.get("namespace") != namespace or \
                ((body.get("spec") or {}).get("runbookRef") or {}).get("name") != runbook:
            continue
        status = body.get("status") or {}
        group = _GROUP.get(status.get("phase") or "")
        if group is not None:
            at = parse(status.get("finishedAt")) or datetime.min.replace(tzinfo=UTC)
            finished[group].append((at, str(meta.get("name") or "")))
    out: list[str] = []
    for group, items in finished.items():
        limit = limits[group]
        if limit is None or len(items) <= limit:
            continue
        items.sort()
        out += [name for _, name in items[: len(items) - limit]]
    return out
