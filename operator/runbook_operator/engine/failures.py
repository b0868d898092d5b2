"""What to do when a reconcile pass raises: retry later, or fail the run (InternalError).

A poison input (a body that breaks the planner, a Job the API server refuses for
good) must not keep a run Running forever in silence; an outage of the cluster must
never fail a run. The streak of identical errors is recorded in the execution's
``status.reconcileFailures``, so a replica that takes over leadership continues
the count instead of granting the poison input a fresh set of attempts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

MAX_DELAY = 60.0
"""Longest wait before a failing pass is tried again (seconds)."""


@dataclass(frozen=True)
class Streak:
    """The same error, ``count`` times in a row."""

    summary: str
    count: int

    def to_status(self) -> dict[str, Any]:
        return {"error": self.summary, "count": self.count}


def recorded(status: Mapping[str, Any] | None) -> Streak | None:
    """The streak an execution's status carries (written by whichever replica led)."""
    raw = (status or {}).get("reconcileFailures")
    if not isinstance(raw, Mapping):
        return None
    error, count = raw.get("error"), raw.get("count")
    if not isinstance(error, str) or not isinstance(count, int) or isinstance(count, bool) \
            or count < 1:
        return None
    return Streak(error, count)


def next_streak(previous: Streak | None, summary: str) -> Streak:
    """The streak after one more failure with ``summary``."""
    if previous is not None and previous.summary == summary:
        return Streak(summary, previous.count + 1)
    return Streak(summary, 1)


def retry_delay(streak: Streak) -> float:
    """Seconds before the next try: 0.5 s doubling per failure, at most a minute."""
    return min(MAX_DELAY, 0.5 * float(2 ** min(streak.count - 1, 16)))


Verdict = Literal["retry", "fail"]


def verdict(streak: Streak, limit: int, transient: bool) -> Verdict:
    """Fail the run once the same non-transient error reached ``limit`` in a row."""
    return "fail" if streak.count >= limit and not transient else "retry"
