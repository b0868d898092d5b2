"""The bulkhead line (engine/bulkhead.py): rebuilt from observed rows, and occupancy.

Cases:

- first come first served: with maxConcurrent 2, the first two run, the others
  wait in arrival order (position 1, 2, ...);
- severity first: a SEV1 arriving last is ahead of waiting SEV2..SEV4 and tickets
  without a severity; unknown severities rank last; equal severity and time fall
  back to the ticket id;
- a lowered limit keeps the surplus running and starts nobody;
- rebuild gives the same queue whatever the row order; a slot granted but not used
  yet shows up as waiting and is granted again; duplicates: running wins and the
  earliest enqueue time is kept;
- occupancy from statuses (rows_of, in_use): running admitted steps hold slots,
  BulkheadFull steps wait since circuitAdmittedAt, finished executions and other
  namespaces or policies hold nothing, one execution can be left out;
- hypothesis: over random rows, never more than max(limit, observed running)
  running, nobody waits while a slot is free, every ticket granted a slot is
  ahead of every waiting one, and the row order does not matter.
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
    BulkheadRow,
    in_use,
    rebuild,
    rows_of,
    severity_rank,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ids(entries: Any) -> list[str]:
    return [e.ticket.id for e in entries]


def waiting(name: str, seconds: float, severity: str | None = None) -> BulkheadRow:
    return (name, "waiting", at(seconds), severity)


def running(name: str, seconds: float, severity: str | None = None) -> BulkheadRow:
    return (name, "running", at(seconds), severity)


def test_first_come_first_served() -> None:
    queue = rebuild(2, [waiting(name, i) for i, name in enumerate("abcde")])
    assert ids(queue.running) == ["a", "b"] and ids(queue.waiting) == ["c", "d", "e"]
    assert queue.is_running("a") and not queue.is_running("c")
    assert queue.position("d") == 2 and queue.position("a") is None


def test_severity_first_then_arrival() -> None:
    arrivals = [("none", None), ("sev4", "SEV4"), ("sev2", "SEV2"), ("weird", "P1"),
                ("sev3", "sev3"), ("sev2b", "SEV2"), ("sev1", "SEV1")]
    queue = rebuild(1, [running("running", 0, "SEV4"),
                        *(waiting(n, i, s) for i, (n, s) in enumerate(arrivals, start=1))])
    assert ids(queue.waiting) == ["sev1", "sev2", "sev2b", "sev3", "sev4", "none", "weird"]


def test_severity_rank() -> None:
    assert [severity_rank(s) for s in ["SEV1", "sev4", " SEV-2 ", "SEV10"]] == [1, 4, 2, 10]
    assert {severity_rank(s) for s in [None, "", "P1", "critical", "SEV"]} == {LOWEST}


def test_same_time_and_severity_falls_back_to_id() -> None:
    queue = rebuild(1, [running("x", 0), *(waiting(n, 1, "SEV2") for n in "cab")])
    assert ids(queue.waiting) == ["a", "b", "c"]


def test_a_lowered_limit_starts_nobody() -> None:
    queue = rebuild(1, [running("a", 0), running("b", 1), running("c", 2), waiting("d", 3)])
    assert ids(queue.running) == ["a", "b", "c"] and ids(queue.waiting) == ["d"]


def test_rebuild_from_observed() -> None:
    rows = [waiting("a", 0.0004), waiting("b", 1, "SEV3"), waiting("c", 2, "SEV1"),
            waiting("d", 3), waiting("e", 4, "SEV3")]  # sub-ms: dropped
    queue = rebuild(2, rows)
    assert ids(queue.running) == ["c", "b"] and ids(queue.waiting) == ["e", "a", "d"]
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert rebuild(2, shuffled) == queue
    # duplicates: running wins, the earliest enqueue time is kept
    dupes = [*rows, running("b", 1, "SEV3"), waiting("d", 99)]
    rebuilt = rebuild(2, dupes)
    assert ids(rebuilt.running) == ids(queue.running)
    assert ids(rebuilt.waiting) == ids(queue.waiting)
    assert rebuild(2, []) == BulkheadQueue(2)


def execution(name: str, phase: str, steps: dict[str, dict[str, Any]], ns: str = "ops",
              severity: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"severity": severity} if severity else {},
            "status": {"phase": phase, "steps": steps}}


def test_occupancy_from_statuses() -> None:
    admitted = "2026-11-27T10:00:00.000Z"
    executions = [
        execution("a", "Running", {"call": {"phase": "Running", "circuit": "ai/default",
                                            "circuitAdmittedAt": admitted}}, severity="SEV1"),
        execution("b", "Running", {"call": {"phase": "Waiting", "reason": "BulkheadFull",
                                            "circuit": "ai/default",
                                            "circuitAdmittedAt": admitted}}),
        execution("c", "Succeeded", {"call": {"phase": "Running", "circuit": "ai/default",
                                              "circuitAdmittedAt": admitted}}),
        execution("d", "Running", {"call": {"phase": "Running", "circuit": "db/default",
                                            "circuitAdmittedAt": admitted}}),
        execution("e", "Running", {"call": {"phase": "Running", "circuit": "ai/default",
                                            "circuitAdmittedAt": admitted}}, ns="dev"),
    ]
    rows = rows_of(executions, "ops", ["ai"])
    assert rows == {"ai": [("ops/a/call", "running", T0, "SEV1"),
                           ("ops/b/call", "waiting", T0, None)]}
    assert rows_of(executions, "ops", ["ai"], exclude="a")["ai"] == [
        ("ops/b/call", "waiting", T0, None)]
    assert in_use(executions, "ops", "ai") == 1 and in_use(executions, "ops", "db") == 1


SEVERITIES = st.sampled_from([None, "SEV1", "SEV2", "SEV3", "SEV4"])
ROWS = st.lists(st.tuples(st.integers(0, 30), st.sampled_from(["running", "waiting"]),
                          st.integers(0, 5000), SEVERITIES), max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 5), ROWS)
def test_rebuild_properties(limit: int, raw: list[tuple[int, str, int, str | None]]) -> None:
    rows: list[BulkheadRow] = [
        (f"t{i:02d}", "running" if phase == "running" else "waiting",
         T0 + timedelta(milliseconds=ms), severity) for i, phase, ms, severity in raw]
    queue = rebuild(limit, rows)
    observed_running = {r[0] for r in rows if r[1] == "running"}
    assert len(queue.running) <= max(limit, len(observed_running))
    assert not queue.waiting or len(queue.running) >= limit
    granted = [e for e in queue.running if e.ticket.id not in observed_running]
    for entry in granted:
        assert all(other.order > entry.order for other in queue.waiting)
    assert rebuild(limit, list(reversed(rows))) == queue
