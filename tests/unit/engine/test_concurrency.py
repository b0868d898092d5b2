"""Runbook concurrency decisions (pure).

Cases: Allow always starts; Forbid refuses at max and names the running ones;
Queue queues at max, and a queued execution starts only when it is first in line
(SEV1 before SEV4, then the oldest); Replace names the running ones to cancel;
hypothesis: with Queue, at most `max` executions are ever told to start at once;
the key is CEL over params (an error says concurrency.key); the status after a
decision: Start keeps it (with the key), Forbid fails ConcurrencyForbidden, Queue
and Replace queue it with a history entry.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import RunbookExecutionStatus
from runbook_operator.api.runbook import Concurrency
from runbook_operator.engine.concurrency import (
    Decision,
    Peer,
    admitted,
    concurrency_key,
    decide,
)


def policy(kind: str, max_: int = 1) -> Concurrency:
    return Concurrency(policy=kind, max=max_)  # type: ignore[arg-type]


ME = Peer("me", False, "2026-11-27T10:00:05Z", "SEV3")
RUNNING = Peer("old", True, "2026-11-27T10:00:00Z", "SEV3")


def test_allow_and_none_start() -> None:
    assert decide(None, ME, [RUNNING]).verdict == "Start"
    assert decide(policy("Allow"), ME, [RUNNING]).verdict == "Start"


def test_forbid() -> None:
    d = decide(policy("Forbid"), ME, [RUNNING])
    assert d.verdict == "Forbid" and "old" in d.message
    assert decide(policy("Forbid", 2), ME, [RUNNING]).verdict == "Start"


def test_queue_order_severity_first() -> None:
    queued_sev4_older = Peer("q4", False, "2026-11-27T09:00:00Z", "SEV4")
    sev1 = Peer("urgent", False, "2026-11-27T10:00:09Z", "SEV1")
    assert decide(policy("Queue"), ME, [RUNNING]).verdict == "Queue"
    # slot free: the SEV1 goes before the older SEV4
    assert decide(policy("Queue"), sev1, [queued_sev4_older]).verdict == "Start"
    assert decide(policy("Queue"), queued_sev4_older, [sev1]).verdict == "Queue"
    # equal severity: the oldest first
    later = Peer("later", False, "2026-11-27T10:00:10Z", "SEV3")
    assert decide(policy("Queue"), ME, [later]).verdict == "Start"
    assert decide(policy("Queue"), later, [ME]).verdict == "Queue"


def test_replace_names_the_running() -> None:
    d = decide(policy("Replace"), ME, [RUNNING])
    assert d.verdict == "Replace" and d.replace == ("old",)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 3), st.lists(st.tuples(st.sampled_from(["SEV1", "SEV2", "SEV4", None]),
                                             st.integers(0, 50)), min_size=1, max_size=8))
def test_queue_never_starts_more_than_max(max_: int, items: list[tuple[str | None, int]]) -> None:
    peers = [Peer(f"e{i}", False, f"2026-11-27T10:00:{t:02d}Z", sev)
             for i, (sev, t) in enumerate(items)]
    starters = [p for p in peers
                if decide(policy("Queue", max_), p, [q for q in peers if q is not p]).verdict
                == "Start"]
    assert len(starters) == min(max_, len(peers))


def test_key_and_status_after_a_decision() -> None:
    keyed = Concurrency(policy="Queue", max=1, key="params.host")
    assert concurrency_key(keyed, {"host": "db1"}) == ("db1", None)
    key, problem = concurrency_key(keyed, {})
    assert key == "" and problem is not None and problem.startswith("concurrency.key")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    running = RunbookExecutionStatus(phase="Running")
    started = admitted(Decision("Start", "ok"), running, "db1", now, "rb")
    assert (started.phase, started.concurrency_key) == ("Running", "db1")
    forbidden = admitted(Decision("Forbid", "busy"), running, "db1", now, "rb")
    assert (forbidden.phase, forbidden.reason) == ("Failed", "ConcurrencyForbidden")
    queued = admitted(Decision("Replace", "replacing old", ("old",)), running, "db1", now, "rb")
    assert (queued.phase, queued.reason, queued.concurrency_key) == ("Queued", "Replacing", "db1")
    assert [h.event for h in queued.history] == ["ExecutionQueued"]
