"""Leader election decisions (engine/lease.py).

Cases: a missing Lease is acquired; the holder renews (keeping the transition
count); another holder's live Lease means standby until it expires, then acquire
with one more transition; a Lease without holder or renew time is free; the leader
stops acting once it could not renew for renew_deadline, before any standby may
take over; timings that would let two leaders overlap are refused; property: for
any history of reads, at most one candidate is told it may act at any instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.lease import (
    LeaseRecord,
    LeaseTimings,
    decide,
    still_leading,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T = LeaseTimings()
S = timedelta(seconds=1)


def test_missing_lease_is_acquired() -> None:
    d = decide(None, "a", T0, T)
    assert d.verdict == "acquire"
    assert d.record == LeaseRecord("a", T0, T.lease_duration, 0)
    assert d.retry_at == T0 + T.retry_period


def test_holder_renews() -> None:
    held = LeaseRecord("a", T0, T.lease_duration, 3)
    d = decide(held, "a", T0 + 2 * S, T)
    assert d.verdict == "renew"
    assert d.record == LeaseRecord("a", T0 + 2 * S, T.lease_duration, 3)


def test_standby_until_expiry_then_acquire() -> None:
    held = LeaseRecord("a", T0, T.lease_duration, 3)
    assert decide(held, "b", T0 + 14 * S, T).verdict == "standby"
    assert decide(held, "b", T0 + 14 * S, T).record is None
    # The standby wakes at the expiry, not a retry period after it.
    assert decide(held, "b", T0 + 14 * S, T).retry_at == T0 + 15 * S
    assert decide(held, "b", T0 + 5 * S, T).retry_at == T0 + 7 * S
    d = decide(held, "b", T0 + 15 * S, T)
    assert d.verdict == "acquire"
    assert d.record == LeaseRecord("b", T0 + 15 * S, T.lease_duration, 4)


@pytest.mark.parametrize("record", [LeaseRecord(None, T0, T.lease_duration),
                                    LeaseRecord("a", None, T.lease_duration)])
def test_a_lease_without_holder_or_renewal_is_free(record: LeaseRecord) -> None:
    assert decide(record, "b", T0, T).verdict == "acquire"


def test_leader_stops_before_a_standby_may_take_over() -> None:
    assert still_leading(T0, T0 + 9 * S, T)
    assert not still_leading(T0, T0 + 10 * S, T)
    assert not still_leading(None, T0, T)
    assert T.renew_deadline < T.lease_duration


def test_overlapping_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseTimings(lease_duration=timedelta(seconds=10), renew_deadline=timedelta(seconds=10))
    with pytest.raises(ValueError):
        LeaseTimings(retry_period=timedelta(seconds=11))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20_000),
                          st.booleans()), min_size=1, max_size=40))
def test_at_most_one_candidate_may_act_at_any_instant(
        rounds: list[tuple[str, int, bool]]) -> None:
    """Candidates read and write one shared Lease (writes are atomic, as with a
    resourceVersion guard); some writes are lost. A candidate may act from a
    successful write until renew_deadline after it. No two intervals overlap."""
    lease: LeaseRecord | None = None
    now = T0
    acting: dict[str, tuple[datetime, datetime]] = {}
    intervals: list[tuple[str, datetime, datetime]] = []
    for who, step_ms, write_lost in rounds:
        now += timedelta(milliseconds=step_ms)
        d = decide(lease, who, now, T)
        if d.record is None or write_lost:
            continue
        lease = d.record
        start = acting[who][0] if who in acting and acting[who][1] > now else now
        acting[who] = (start, now + T.renew_deadline)
        intervals.append((who, now, now + T.renew_deadline))
    for i, (w1, s1, e1) in enumerate(intervals):
        for w2, s2, e2 in intervals[i + 1:]:
            if w1 != w2:
                assert e1 <= s2 or e2 <= s1, (w1, s1, e1, w2, s2, e2)
