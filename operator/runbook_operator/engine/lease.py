"""Leader election over a ``coordination.k8s.io`` Lease: the decision, without I/O.

Two operator replicas watch the same objects; only one may act on them (create
Jobs, write status), or a step could run twice. The leader holds a Lease and
renews it; a standby takes it over once the holder has not renewed it for the
lease's duration. This module decides, from the Lease as last read and the time
now, what this candidate does next; ``controllers/leader.py`` reads and writes the
Lease (guarded by its resourceVersion, so two candidates never both win) and acts.

Expiry is judged as client-go judges it: by this candidate's own monotonic clock,
from the moment it last *saw* the Lease record change, never by comparing the
holder's ``renewTime`` with the local wall clock. Wall clocks of two nodes may be
skewed or step back; a record that keeps changing is a live holder whatever its
timestamps say, and one that stops changing has been silent for as long as this
candidate has watched it. ``renewTime`` is still written (for people and tools)
but never read for a decision.

The leader stops acting on its own once it could not renew for ``renew_deadline``
(by its own monotonic clock, from the moment before the read that renewed), which
is shorter than the lease duration: by the time a standby may take over, the old
leader has already stopped. A Lease edited by hand can only make a standby wait:
a missing or short ``leaseDurationSeconds`` is read as the configured duration, and
an empty or unknown holder is waited out like any other. Only a Lease that does not
exist is taken at once (the first start).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

LONGEST_WAIT = 10
"""A ``leaseDurationSeconds`` longer than this many configured durations (only a hand
edit writes one: holders write the configured value) is waited out for that long, not
for days with no leader."""


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says: who holds it, the record's identity, for how long."""

    holder: str | None
    renewed_at: datetime | None
    """The holder's wall-clock stamp: written, shown, never used to judge expiry."""
    duration: timedelta
    transitions: int = 0
    version: str = ""
    """Anything that changes with every write of the record (the raw ``renewTime`` and
    the ``resourceVersion``): compared for equality only, never ordered."""


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


@dataclass(frozen=True)
class Observed:
    """The Lease record this candidate last saw, and when it first saw it (monotonic)."""

    record: LeaseRecord | None
    seen_at: float


Verdict = Literal["acquire", "renew", "standby", "lost"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    """``acquire``: write the Lease as ours (it is free or expired); ``renew``: we hold
    it, write a new renew time; ``standby``: someone else holds it, read again later;
    ``lost``: we held it and someone else does now (stop acting at once)."""
    record: LeaseRecord | None
    """For acquire and renew: the Lease to write."""
    observed: Observed
    """What to remember of this read for the next decision."""
    retry_in: timedelta


def observe(previous: Observed | None, current: LeaseRecord | None, now: float) -> Observed:
    """The observation after reading ``current`` at monotonic ``now``."""
    if previous is not None and previous.record == current:
        return previous
    return Observed(current, now)


def decide(current: LeaseRecord | None, previous: Observed | None, me: str, now: float,
           wall: datetime, timings: LeaseTimings, was_leading: bool = False) -> Decision:
    """What candidate ``me`` does about the Lease ``current`` (None: it does not exist).

    ``now`` is this candidate's monotonic clock, ``wall`` its wall clock (only written
    into the record), ``previous`` what it saw before.
    """
    observed = observe(previous, current, now)
    retry = timings.retry_period
    if current is None:
        return Decision("acquire", LeaseRecord(me, wall, timings.lease_duration, 0),
                        observed, retry)
    if current.holder == me:
        return Decision("renew", replace(current, renewed_at=wall,
                                         duration=timings.lease_duration, version=""),
                        observed, retry)
    if was_leading:
        return Decision("lost", None, observed, retry)
    duration = min(max(current.duration, timings.lease_duration),
                   LONGEST_WAIT * timings.lease_duration)
    silent = timedelta(seconds=now - observed.seen_at)
    if silent >= duration:
        return Decision("acquire", LeaseRecord(me, wall, timings.lease_duration,
                                               current.transitions + 1), observed, retry)
    # Wake when it would expire rather than up to a retry period later: the takeover
    # time after a crash is then the lease duration, not that plus a polling gap.
    return Decision("standby", None, observed, min(retry, duration - silent))


def still_leading(last_renewed: float | None, now: float, timings: LeaseTimings) -> bool:
    """Whether a leader whose last successful renewal began at monotonic ``last_renewed``
    may still act at monotonic ``now``."""
    return last_renewed is not None and \
        timedelta(seconds=now - last_renewed) < timings.renew_deadline
