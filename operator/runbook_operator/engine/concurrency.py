"""Runbook concurrency: may a new execution start while others of the same runbook run?

What keeps an alert storm from running the same remediation twenty times at
once. A pure decision over the peers the shell observed: executions of the same
runbook (and the same ``concurrency.key``) that are running or queued.
Queued executions start in order: SEV1 first, then the oldest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from runbook_operator.api.runbook import Concurrency
from runbook_operator.engine.bulkhead import severity_rank

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
