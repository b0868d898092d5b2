"""The bulkhead queue (engine/bulkhead.py).

Cases:

- first come first served: with maxConcurrent 2, the first two run, the others
  wait in arrival order and get a slot as slots free up, one per release;
- severity first: a SEV1 arriving last runs before waiting SEV2..SEV4 and
  tickets without a severity; unknown severities rank last; equal severity and
  time fall back to the ticket id;
- requests are idempotent (a ticket keeps its place; a running one stays Run);
- never more than maxConcurrent running; a lowered limit lets the surplus
  finish and starts nobody until below it; a raised one grants at once;
- maxWait: tickets waiting for maxWait or longer expire (exactly at the
  boundary), running ones never do; next_expiry says when; no maxWait, no expiry;
- rebuild from observed rows gives the same queue whatever the row order, with
  granted-but-unused slots shown as waiting, duplicates and a ticket seen both
  running and waiting;
- hypothesis: over random request/release/expire/limit scripts, never more than
  maxConcurrent running, nobody waits while a slot is free, each grant goes to
  the best waiting ticket (so among equal severity, strictly in arrival order:
  no starvation), and after draining everyone not expired ran; rebuild from
  the observed rows equals the queue after every step.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.bulkhead import (
    LOWEST,
    BulkheadQueue,
    Ticket,
    rebuild,
    severity_rank,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ids(entries: Any) -> list[str]:
    return [e.ticket.id for e in entries]


def test_first_come_first_served() -> None:
    queue = BulkheadQueue(max_concurrent=2)
    verdicts = []
    for i, name in enumerate("abcde"):
        queue, verdict = queue.request(Ticket(name), at(i))
        verdicts.append(verdict)
    assert verdicts == ["Run", "Run", "Wait", "Wait", "Wait"]
    assert ids(queue.running) == ["a", "b"] and ids(queue.waiting) == ["c", "d", "e"]
    assert queue.position("d") == 2 and queue.position("a") is None
    queue, granted = queue.release(Ticket("b"))
    assert granted == [Ticket("c")] and ids(queue.running) == ["a", "c"]
    queue, verdict = queue.request(Ticket("c"), at(10))
    assert verdict == "Run"
    queue, granted = queue.release("a")
    assert granted == [Ticket("d")]
    queue, granted = queue.release("nobody")
    assert granted == [] and ids(queue.waiting) == ["e"]


def test_severity_first_then_arrival() -> None:
    queue = BulkheadQueue(max_concurrent=1)
    queue, _ = queue.request(Ticket("running", "SEV4"), at(0))
    arrivals = [("none", None), ("sev4", "SEV4"), ("sev2", "SEV2"), ("weird", "P1"),
                ("sev3", "sev3"), ("sev2b", "SEV2"), ("sev1", "SEV1")]
    for i, (name, severity) in enumerate(arrivals, start=1):
        queue, verdict = queue.request(Ticket(name, severity), at(i))
        assert verdict == "Wait"
    assert ids(queue.waiting) == ["sev1", "sev2", "sev2b", "sev3", "sev4", "none", "weird"]
    order = []
    for _ in arrivals:
        queue, granted = queue.release(queue.running[0].ticket)
        order += [t.id for t in granted]
    assert order == ["sev1", "sev2", "sev2b", "sev3", "sev4", "none", "weird"]


def test_severity_rank() -> None:
    assert [severity_rank(s) for s in ["SEV1", "sev4", " SEV-2 ", "SEV10"]] == [1, 4, 2, 10]
    assert {severity_rank(s) for s in [None, "", "P1", "critical", "SEV"]} == {LOWEST}


def test_same_time_and_severity_falls_back_to_id() -> None:
    queue = BulkheadQueue(max_concurrent=1)
    queue, _ = queue.request(Ticket("x"), at(0))
    for name in ["c", "a", "b"]:
        queue, _ = queue.request(Ticket(name, "SEV2"), at(1))
    assert ids(queue.waiting) == ["a", "b", "c"]


def test_requests_are_idempotent() -> None:
    queue = BulkheadQueue(max_concurrent=1)
    queue, _ = queue.request(Ticket("a"), at(0))
    queue, _ = queue.request(Ticket("b"), at(1))
    queue, _ = queue.request(Ticket("c"), at(2))
    again, verdict = queue.request(Ticket("b"), at(50))
    assert verdict == "Wait" and again == queue
    again, verdict = queue.request(Ticket("a"), at(50))
    assert verdict == "Run" and again == queue


def test_limits_lowered_and_raised() -> None:
    queue = BulkheadQueue(max_concurrent=3)
    for i, name in enumerate("abcdef"):
        queue, _ = queue.request(Ticket(name), at(i))
    queue, granted = queue.with_limit(1)
    assert granted == [] and len(queue.running) == 3
    queue, granted = queue.release("a")
    assert granted == [] and len(queue.running) == 2
    queue, verdict = queue.request(Ticket("g"), at(10))
    assert verdict == "Wait"
    queue, granted = queue.release("b")
    queue, granted = queue.release("c")
    assert granted == [Ticket("d")] and ids(queue.running) == ["d"]
    queue, granted = queue.with_limit(3)
    assert granted == [Ticket("e"), Ticket("f")]


def test_max_wait_expiry() -> None:
    queue = BulkheadQueue(max_concurrent=1)
    for i, name in enumerate("abc"):
        queue, _ = queue.request(Ticket(name), at(i))
    wait = timedelta(minutes=5)
    assert queue.next_expiry(wait) == at(1) + wait
    assert queue.next_expiry(None) is None
    same, expired = queue.expire(at(1) + wait - timedelta(milliseconds=1), wait)
    assert expired == [] and same == queue
    queue, expired = queue.expire(at(1) + wait, wait)
    assert expired == [Ticket("b")] and ids(queue.waiting) == ["c"]
    queue, expired = queue.expire(at(1000), wait)
    assert expired == [Ticket("c")] and ids(queue.running) == ["a"]  # running never expires
    assert queue.next_expiry(wait) is None
    assert queue.expire(at(10**6), None) == (queue, [])


def test_rebuild_from_observed() -> None:
    queue = BulkheadQueue(max_concurrent=2)
    arrivals = [("a", None), ("b", "SEV3"), ("c", "SEV1"), ("d", None), ("e", "SEV3")]
    for i, (name, severity) in enumerate(arrivals):
        queue, _ = queue.request(Ticket(name, severity), at(i + 0.0004))  # sub-ms: dropped
    rows = queue.observed()
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert rebuild(2, shuffled) == queue
    # a slot granted but not used yet shows up as waiting: granted again
    queue2, granted = queue.release("a")
    rows2 = [(i, "waiting" if i in {t.id for t in granted} else p, t, s)
             for i, p, t, s in queue2.observed()]
    assert rebuild(2, rows2) == queue2
    # duplicates: running wins, the earliest enqueue time is kept
    dupes = [*rows, ("b", "waiting", at(0), "SEV3"), ("d", "waiting", at(99), None)]
    rebuilt = rebuild(2, dupes)
    assert ids(rebuilt.running) == ids(queue.running)
    assert ids(rebuilt.waiting) == ids(queue.waiting)
    assert rebuild(2, []) == BulkheadQueue(2)


# -- properties ---------------------------------------------------------------------------

SEVERITIES = st.sampled_from([None, "SEV1", "SEV2", "SEV3", "SEV4"])
OPS = st.lists(st.one_of(
    st.tuples(st.just("request"), SEVERITIES, st.integers(0, 3000)),
    st.tuples(st.just("request"), SEVERITIES, st.integers(0, 3000)),
    st.tuples(st.just("again"), st.integers(0, 999)),
    st.tuples(st.just("release"), st.integers(0, 999)),
    st.tuples(st.just("release"), st.integers(0, 999)),
    st.tuples(st.just("expire"), st.integers(0, 60_000)),
    st.tuples(st.just("limit"), st.integers(1, 5)),
), max_size=80)


def check(before: BulkheadQueue, after: BulkheadQueue, granted: list[Ticket]) -> None:
    assert len(after.running) <= max(after.max_concurrent, len(before.running))
    assert not after.waiting or len(after.running) >= after.max_concurrent
    waiting = {e.ticket.id: e for e in after.waiting}
    for ticket in granted:
        entry = next(e for e in after.running if e.ticket == ticket)
        for other in waiting.values():
            assert other.order > entry.order, (other, entry)
    assert rebuild(after.max_concurrent, after.observed()) == after
    assert rebuild(after.max_concurrent, list(reversed(after.observed()))) == after


def newly_running(before: BulkheadQueue, after: BulkheadQueue) -> list[Ticket]:
    had = {e.ticket.id for e in before.running}
    return [e.ticket for e in after.running if e.ticket.id not in had]


@settings(max_examples=600, deadline=None)
@given(st.integers(1, 4), OPS, st.sampled_from([None, 5_000, 20_000]))
def test_queue_properties(limit: int, ops: list[tuple[Any, ...]], max_wait_ms: int | None) -> None:
    max_wait = None if max_wait_ms is None else timedelta(milliseconds=max_wait_ms)
    queue = BulkheadQueue(limit)
    now = T0
    made = 0
    expired_ids: set[str] = set()
    released_waiting: set[str] = set()
    ever_ran: set[str] = set()
    for op in ops:
        before = queue
        kind = op[0]
        if kind == "request":
            now += timedelta(milliseconds=op[2])
            made += 1
            queue, verdict = queue.request(Ticket(f"t{made:04d}", op[1]), now)
            assert (verdict == "Run") == queue.is_running(f"t{made:04d}")
        elif kind == "again" and (queue.running or queue.waiting):
            entries = [*queue.running, *queue.waiting]
            ticket = entries[op[1] % len(entries)].ticket
            queue, verdict = queue.request(ticket, now + timedelta(seconds=1))
            assert queue == before and (verdict == "Run") == queue.is_running(ticket)
        elif kind == "release" and (queue.running or queue.waiting):
            entries = [*queue.running, *queue.waiting]
            victim = entries[op[1] % len(entries)].ticket
            if victim in {e.ticket for e in queue.waiting}:
                released_waiting.add(victim.id)
            queue, _ = queue.release(victim)
        elif kind == "expire":
            now += timedelta(milliseconds=op[1])
            queue, expired = queue.expire(now, max_wait)
            expired_ids |= {t.id for t in expired}
            if max_wait is not None:
                assert all(now - e.enqueued_at < max_wait for e in queue.waiting)
        elif kind == "limit":
            queue, _ = queue.with_limit(op[1])
        else:
            continue
        granted = newly_running(before, queue)
        ever_ran |= {t.id for t in granted}
        check(before, queue, granted)
    # drain: everyone still queued runs, best first, never more than the limit at once
    while queue.running:
        before = queue
        queue, granted = queue.release(queue.running[0].ticket)
        ever_ran |= {t.id for t in granted}
        check(before, queue, granted)
    assert not queue.waiting
    everyone = {f"t{i:04d}" for i in range(1, made + 1)}
    assert everyone - expired_ids - released_waiting == ever_ran - released_waiting


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(0, 2000), min_size=1, max_size=40),
       st.randoms(use_true_random=False))
def test_no_starvation_among_equal_severity(limit: int, gaps: list[int],
                                           rnd: random.Random) -> None:
    """Same severity: slots are granted strictly in arrival order, whatever runs long."""
    queue = BulkheadQueue(limit)
    now = T0
    grants: list[str] = []
    for i, gap in enumerate(gaps):
        now += timedelta(milliseconds=gap)
        queue, verdict = queue.request(Ticket(f"t{i:03d}", "SEV2"), now)
        if verdict == "Run":
            grants.append(f"t{i:03d}")
        if queue.running and rnd.random() < 0.4:
            victim = rnd.choice(queue.running).ticket
            queue, granted = queue.release(victim)
            grants += [t.id for t in granted]
    while queue.running:
        queue, granted = queue.release(rnd.choice(queue.running).ticket)
        grants += [t.id for t in granted]
    assert grants == [f"t{i:03d}" for i in range(len(gaps))]
