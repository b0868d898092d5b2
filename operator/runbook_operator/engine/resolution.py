"""What a resolved alert does to the execution of its occurrence, decided without I/O.

Why it exists: the receiver (``triggers/alertmanager.py``) reads the execution and
writes what this module decides. A resolution is delivered again and again
(Alertmanager retries, an HA pair sends it twice): it must cancel a run once,
record the resolution once, and leave alone an execution this alert did not start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.engine.alerts import Resolve, started_by_alert
from runbook_operator.engine.history import appended
from runbook_operator.engine.timeutil import fmt

Outcome = Literal["resolved", "rejected", "duplicate", "cancelled"]


@dataclass(frozen=True)
class Resolution:
    """The outcome to count, its detail, and the status patch to write (None: none)."""

    outcome: Outcome
    detail: str | None
    patch: dict[str, Any] | None = None
    guarded: bool = False
    """Write the patch only if the execution is still at the version read (else read
    again and decide again): a history entry appended to a stale list would drop one."""


def resolve(body: Mapping[str, Any] | None, decision: Resolve, now: datetime) -> Resolution:
    """What to do about ``decision`` given the execution as read now (None: gone)."""
    name = decision.name
    if body is None:
        return Resolution("resolved", "no execution for this occurrence")
    alert = decision.alert
    if not started_by_alert(body, decision.trigger.runbook, alert.fingerprint,
                            alert.starts_ns):
        return Resolution("rejected", squatted(name, body) + "; left alone")
    status = body.get("status") or {}
    if decision.cancel and status.get("phase") not in FINISHED_EXECUTION_PHASES:
        if status.get("cancelReason") == "AlertResolved":
            return Resolution("duplicate", None)
        return Resolution("cancelled", name, {"cancelRequested": f"alert {alert.name} resolved",
                                              "cancelReason": "AlertResolved"})
    if any(isinstance(h, Mapping) and h.get("event") == "AlertResolved"
           for h in status.get("history") or []):
        return Resolution("duplicate", None)
    entry = {"time": fmt(now), "event": "AlertResolved",
             "message": f"alert {alert.name[:200]} resolved"
                        + (f" at {alert.ends_at[:40]}" if alert.ends_at else "")}
    return Resolution("resolved", name, appended(status, entry), guarded=True)


def squatted(name: str, body: Mapping[str, Any]) -> str:
    """Why an execution under the occurrence's name is not this alert's run."""
    spec = body.get("spec") or {}
    runbook = str((spec.get("runbookRef") or {}).get("name"))[:63]
    kind = str((spec.get("triggeredBy") or {}).get("kind") or "Manual")[:20]
    return (f"execution {name} exists but this alert did not start it (runbook {runbook}, "
            f"triggered by {kind}): not counted as its run")
