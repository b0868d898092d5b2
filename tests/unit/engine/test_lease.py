"""Leader election decisions (engine/lease.py).

Cases: a missing Lease is acquired; the holder renews (keeping the transition
count); another holder's Lease means standby until it has not changed for the
lease duration *as this candidate observed it*, then acquire with one more
transition; a Lease whose record keeps changing is never taken, whatever its
renewTime says (future, past, missing); a holder that does not exist, an empty
holder and a missing or short duration are waited out for the configured duration, a
huge one for ten durations at most;
a leader that reads someone else's holder is told it lost at once; the leader stops
acting once it could not renew for renew_deadline; timings that would let two
leaders overlap are refused. Properties: with wall clocks skewed by up to 30 s and
stepping back, and lost writes, at most one candidate may act at any instant; a
healthy leader is never deposed by a standby with a fast or slow wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.lease import (
    LeaseRecord,
    LeaseTimings,
    Observed,
    decide,
    still_leading,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = LeaseTimings()
S = timedelta(seconds=1)


def held_by(holder: str | None, version: str = "1", renewed: datetime | None = T0,
            duration: timedelta = T.lease_duration, transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, renewed, duration, transitions, version)


def test_missing_lease_is_acquired() -> None:
    d = decide(None, None, "a", 100.0, T0, T)
    assert d.verdict == "acquire"
    assert d.record == LeaseRecord("a", T0, T.lease_duration, 0)
    assert d.retry_in == T.retry_period


def test_holder_renews_keeping_transitions() -> None:
    d = decide(held_by("a"), None, "a", 100.0, T0 + 2 * S, T)
    assert d.verdict == "renew"
    assert d.record == LeaseRecord("a", T0 + 2 * S, T.lease_duration, 3)


def test_standby_until_unchanged_for_the_duration_as_observed() -> None:
    lease = held_by("a")
    first = decide(lease, None, "b", 1000.0, T0, T)
    assert first.verdict == "standby"
    assert first.observed == Observed(lease, 1000.0)
    later = decide(lease, first.observed, "b", 1014.0, T0 + 14 * S, T)
    assert later.verdict == "standby" and later.record is None
    # It wakes when the lease would expire, not a retry period after.
    assert later.retry_in == S
    d = decide(lease, later.observed, "b", 1015.0, T0 + 15 * S, T)
    assert d.verdict == "acquire"
    assert d.record == LeaseRecord("b", T0 + 15 * S, T.lease_duration, 4)


def test_a_changing_record_restarts_the_wait() -> None:
    seen = decide(held_by("a", "1"), None, "b", 1000.0, T0, T).observed
    renewed = decide(held_by("a", "2"), seen, "b", 1014.0, T0, T)
    assert renewed.observed.seen_at == 1014.0
    assert decide(held_by("a", "2"), renewed.observed, "b", 1028.0, T0, T).verdict == "standby"


@pytest.mark.parametrize("renewed", [T0 - timedelta(days=365), T0 + timedelta(days=365), None])
def test_renew_time_is_never_read(renewed: datetime | None) -> None:
    """A renewTime far in the past, in the future, or missing changes nothing."""
    lease = held_by("a", renewed=renewed)
    d = decide(lease, None, "b", 1000.0, T0, T)
    assert d.verdict == "standby"
    assert decide(lease, d.observed, "b", 1014.9, T0, T).verdict == "standby"
    assert decide(lease, d.observed, "b", 1015.0, T0, T).verdict == "acquire"


@pytest.mark.parametrize("lease", [
    held_by("ghost-replica-that-never-existed"),
    held_by(None), held_by(""),
    held_by("a", duration=timedelta(0)),
    held_by("a", duration=timedelta(seconds=1)),
])
def test_hand_edited_leases_are_waited_out(lease: LeaseRecord) -> None:
    d = decide(lease, None, "b", 1000.0, T0, T)
    assert d.verdict == "standby"
    assert decide(lease, d.observed, "b", 1000.0 + 14.9, T0, T).verdict == "standby"
    assert decide(lease, d.observed, "b", 1015.0, T0, T).verdict == "acquire"


def test_a_longer_duration_in_the_record_is_honoured() -> None:
    lease = held_by("a", duration=timedelta(seconds=60))
    d = decide(lease, None, "b", 0.0, T0, T)
    assert decide(lease, d.observed, "b", 59.0, T0, T).verdict == "standby"
    assert decide(lease, d.observed, "b", 60.0, T0, T).verdict == "acquire"


def test_a_leader_that_reads_another_holder_has_lost() -> None:
    d = decide(held_by("b"), None, "a", 0.0, T0, T, was_leading=True)
    assert d.verdict == "lost" and d.record is None


def test_leader_stops_before_a_standby_may_take_over() -> None:
    assert still_leading(100.0, 109.0, T)
    assert not still_leading(100.0, 110.0, T)
    assert not still_leading(None, 100.0, T)
    assert T.renew_deadline < T.lease_duration


def test_overlapping_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseTimings(lease_duration=timedelta(seconds=10), renew_deadline=timedelta(seconds=10))
    with pytest.raises(ValueError):
        LeaseTimings(retry_period=timedelta(seconds=11))


# -- simulation: candidates with their own clocks around one Lease ---------------------

@dataclass
class Candidate:
    name: str
    mono_origin: float
    """Each process' monotonic clock has its own origin."""
    wall_offset: timedelta
    observed: Observed | None = None
    renewed_at: float | None = None
    """Monotonic time (own clock) before the read that last renewed."""
    leading: bool = False
    acting: list[tuple[float, float]] = field(default_factory=list)
    """Real-time intervals in which this candidate may act."""

    def mono(self, real: float) -> float:
        return self.mono_origin + real

    def round(self, lease: LeaseRecord | None, real: float, write_lost: bool,
              version: str) -> LeaseRecord | None:
        """One read-decide-write round at real time ``real``; the Lease after it."""
        wall = T0 + timedelta(seconds=real) + self.wall_offset
        d = decide(lease, self.observed, self.name, self.mono(real), wall, T, self.leading)
        self.observed = d.observed
        if d.verdict == "lost":
            self.stop(real)
            return lease
        if d.record is None or write_lost:
            if self.leading and not still_leading(self.renewed_at, self.mono(real), T):
                self.stop(real)
            return lease
        self.renewed_at = self.mono(real)
        self.leading = True
        self.acting.append((real, real + T.renew_deadline.total_seconds()))
        return LeaseRecord(d.record.holder, d.record.renewed_at, d.record.duration,
                           d.record.transitions, version)

    def stop(self, real: float) -> None:
        self.leading = False
        self.acting = [(s, min(e, real)) for s, e in self.acting]


offsets = st.integers(-30_000, 30_000).map(lambda ms: timedelta(milliseconds=ms))


@settings(max_examples=400, deadline=None)
@given(st.lists(offsets, min_size=2, max_size=3),
       st.lists(st.floats(0, 1e6), min_size=3, max_size=3),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20_000), st.booleans(),
                          offsets), min_size=1, max_size=60))
def test_at_most_one_candidate_may_act_at_any_instant(
        walls: list[timedelta], origins: list[float],
        rounds: list[tuple[int, int, bool, timedelta]]) -> None:
    """Candidates with wall clocks up to 30 s apart, each stepping (also back) between
    rounds, read and write one Lease (atomic writes, as with a resourceVersion
    guard; some writes lost). A candidate may act from a successful write until
    renew_deadline after it (by its own monotonic clock) or until it reads that it
    lost. No two candidates' intervals overlap."""
    candidates = [Candidate(f"c{i}", origins[i], w) for i, w in enumerate(walls)]
    lease: LeaseRecord | None = None
    real = 0.0
    for n, (who, step_ms, lost, jump) in enumerate(rounds):
        real += step_ms / 1000
        candidate = candidates[who % len(candidates)]
        candidate.wall_offset += jump  # the wall clock steps, forward or back
        lease = candidate.round(lease, real, lost, str(n))
    spans = [(c.name, s, e) for c in candidates for s, e in c.acting if e > s]
    for i, (n1, s1, e1) in enumerate(spans):
        for n2, s2, e2 in spans[i + 1:]:
            if n1 != n2:
                assert e1 <= s2 or e2 <= s1, (n1, s1, e1, n2, s2, e2)


@settings(max_examples=200, deadline=None)
@given(offsets, offsets, st.lists(st.integers(0, 3_000), min_size=1, max_size=80),
       st.lists(offsets, min_size=1, max_size=80))
def test_a_healthy_leader_is_never_deposed(leader_wall: timedelta, standby_wall: timedelta,
                                           standby_steps: list[int],
                                           jumps: list[timedelta]) -> None:
    """The leader renews every retry period; the standby reads at any times, its wall
    clock anywhere within ±30 s and stepping. It never acquires."""
    leader = Candidate("leader", 5.0, leader_wall)
    standby = Candidate("standby", 7_000.0, standby_wall)
    lease = leader.round(None, 0.0, False, "0")
    next_renew = T.retry_period.total_seconds()
    real = 0.0
    for n, (step, jump) in enumerate(zip(standby_steps, jumps * len(standby_steps),
                                         strict=False)):
        real += step / 1000
        while next_renew <= real:
            lease = leader.round(lease, next_renew, False, f"r{next_renew}")
            next_renew += T.retry_period.total_seconds()
        standby.wall_offset += jump
        lease = standby.round(lease, real, False, f"s{n}")
        assert lease is not None and lease.holder == "leader"
    assert leader.leading


def test_a_huge_duration_is_waited_out_for_ten_durations_only() -> None:
    lease = held_by("ghost", duration=timedelta(days=10_000))
    d = decide(lease, None, "b", 0.0, T0, T)
    assert decide(lease, d.observed, "b", 149.0, T0, T).verdict == "standby"
    assert decide(lease, d.observed, "b", 150.0, T0, T).verdict == "acquire"
