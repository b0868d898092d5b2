"""Runbook concurrency: may a new execution start while others of the same runbook run?

What keeps an alert storm from running the same remediation twenty times at
once. A pure decision over the peers the shell observed: executions of the same
runbook (and the same ``concurrency.key``) that are running or queued.
Queued executions start in order: SEV1 first, then the oldest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from runbook_operator.api.common import Condition
from runbook_operator.api.execution import (
    HistoryEntry,
    RunbookExecutionStatus,
    RunbookRefStatus,
)
from runbook_operator.api.runbook import Concurrency
from runbook_operator.engine.bulkhead import severity_rank
from runbook_operator.engine.cel import CelError
from runbook_operator.engine.cel import evaluate as cel_evaluate
from runbook_operator.engine.start import failed_status
from runbook_operator.engine.timeutil import fmt

Verdict = Literal["Start", "Queue", "Forbid", "Replace"]


@dataclass(frozen=True)
class Peer:
    """Another execution of the same runbook and key."""

    name: str
    running: bool
    """Running (or waiting for approval); otherwise queued."""
    created: str
    """Its creationTimestamp: the queue is first come, first served."""
    severity: str | None = None


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    message: str
    replace: tuple[str, ...] = ()
    """Running executions to cancel so this one can start (policy Replace)."""


def order(severity: str | None, created: str, name: str) -> tuple[int, str, str]:
    return severity_rank(severity), created, name


def decide(policy: Concurrency | None, me: Peer, peers: Sequence[Peer]) -> Decision:
    """What to do with execution ``me`` given its peers (``me`` not among them)."""
    if policy is None or policy.policy == "Allow":
        return Decision("Start", "concurrency: Allow")
    running = sorted(p.name for p in peers if p.running)
    if len(running) < policy.max:
        ahead = [p.name for p in peers if not p.running
                 and order(p.severity, p.created, p.name) < order(me.severity, me.created,
                                                                   me.name)]
        if policy.policy != "Queue" or len(running) + len(ahead) < policy.max:
            return Decision("Start", f"{len(running)} of at most {policy.max} running")
        return Decision("Queue", f"queued behind {', '.join(sorted(ahead))}")
    names = ", ".join(running)
    if policy.policy == "Forbid":
        return Decision("Forbid", f"{len(running)} execution(s) already running "
                        f"(max {policy.max}): {names}")
    if policy.policy == "Replace":
        return Decision("Replace", f"replacing {names}", replace=tuple(running))
    return Decision("Queue", f"queued: {len(running)} running (max {policy.max}): {names}")


def concurrency_key(policy: Concurrency, params: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the execution's ``concurrency.key``, why it could not be evaluated or None)."""
    if not policy.key:
        return "", None
    try:
        return str(cel_evaluate(policy.key, {"params": dict(params)})), None
    except CelError as exc:
        return "", f"concurrency.key: {exc}"


def admitted(decision: Decision, status: RunbookExecutionStatus, key: str,
             now: datetime, runbook: str) -> RunbookExecutionStatus:
    """The starting execution's status after ``decision``: as started (Start), Failed
    (Forbid: ConcurrencyForbidden) or Queued (Queue, and Replace while the replaced
    ones stop)."""
    ref = status.runbook or RunbookRefStatus(name=runbook)
    if decision.verdict == "Start":
        started = status.model_copy(deep=True)
        started.concurrency_key = key
        return started
    if decision.verdict == "Forbid":
        failed = failed_status("ConcurrencyForbidden", decision.message, now, ref)
        failed.concurrency_key = key
        return failed
    at = fmt(now)
    return RunbookExecutionStatus(
        phase="Queued", reason="Queued" if decision.verdict == "Queue" else "Replacing",
        message=decision.message, concurrency_key=key, runbook=status.runbook,
        observed_generation=status.observed_generation, traceID=status.trace_id,
        conditions=[Condition(type="Succeeded", status="Unknown", reason="Queued",
                              message=decision.message, last_transition_time=at)],
        history=[HistoryEntry(time=at, event="ExecutionQueued",
                              message=decision.message[:512])])
