"""Leader election over a ``coordination.k8s.io`` Lease: the decision, without I/O.

Two operator replicas watch the same objects; only one may act on them (create
Jobs, write status), or a step could run twice. The leader holds a Lease and
renews it; a standby takes it over once the holder has not renewed it for the
lease's duration. This module decides, from the Lease as last read and the time
now, what this candidate does next; ``controllers/leader.py`` reads and writes the
Lease (guarded by its resourceVersion, so two candidates never both win) and acts.

The leader stops acting on its own once it could not renew for ``renew_deadline``,
which is shorter than the lease duration: by the time a standby may take over,
the old leader has already stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says: who holds it, since when renewed, for how long."""

    holder: str | None
    renewed_at: datetime | None
    duration: timedelta
    transitions: int = 0


@dataclass(frozen=True)
class LeaseTimings:
    """How the election runs (the same on every candidate)."""

    lease_duration: timedelta = timedelta(seconds=15)
    """A holder silent this long has lost the Lease: the takeover time after a crash."""
    renew_deadline: timedelta = timedelta(seconds=10)
    """A leader that could not renew for this long stops acting (before anyone may take over)."""
    retry_period: timedelta = timedelta(seconds=2)
    """How often a candidate reads (and the leader renews) the Lease."""

    def __post_init__(self) -> None:
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("lease timings need retry_period < renew_deadline < "
                             "lease_duration (the leader must stop before a standby may "
                             "take over)")


Verdict = Literal["acquire", "renew", "standby"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    """``acquire``: write the Lease as ours (it is free or expired); ``renew``: we hold
    it, write a new renew time; ``standby``: someone else holds it, read again later."""
    record: LeaseRecord | None
    """For acquire and renew: the Lease to write."""
    retry_at: datetime


def decide(current: LeaseRecord | None, me: str, now: datetime,
           timings: LeaseTimings) -> Decision:
    """What candidate ``me`` does about the Lease ``current`` (None: it does not exist)."""
    retry_at = now + timings.retry_period
    if current is None:
        return Decision("acquire", LeaseRecord(me, now, timings.lease_duration, 0), retry_at)
    if current.holder == me:
        return Decision("renew", LeaseRecord(me, now, timings.lease_duration,
                                             current.transitions), retry_at)
    expired = (current.holder is None or current.renewed_at is None
               or now >= current.renewed_at + current.duration)
    if expired:
        return Decision("acquire", LeaseRecord(me, now, timings.lease_duration,
                                               current.transitions + 1), retry_at)
    # Wake when it expires rather than up to a retry period later: the takeover time
    # after a crash is then the lease duration, not that plus a polling gap.
    assert current.renewed_at is not None
    return Decision("standby", None, min(retry_at, current.renewed_at + current.duration))


def still_leading(last_renewed: datetime | None, now: datetime, timings: LeaseTimings) -> bool:
    """Whether a leader whose last successful renewal was at ``last_renewed`` may still act."""
    return last_renewed is not None and now - last_renewed < timings.renew_deadline
