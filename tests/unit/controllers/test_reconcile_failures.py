"""A reconcile that keeps raising: the execution fails with InternalError, nothing wedges.

Cases:
- error_summary is one line (type and first line), clipped; is_transient() is true
  for the cluster's errors (5xx, 429, status 0/None, connection) and false for a
  4xx, a too-large answer or a bug;
- engine.failures: the streak grows only with the same summary; the backoff doubles
  to a minute; only a non-transient streak at the limit fails the run; a streak
  recorded in a status is read back, a malformed one is ignored;
- Operator.handle: the same error N times in a row calls fail_internal with the
  summary and the count, then forgets the key; a different error restarts the
  count; a transient error never fails the run; a success clears the count (and
  the recorded streak); a streak recorded by an earlier leader is continued, not
  restarted; a NotLeading refusal is neither counted nor retried; the failing run's
  own streak write does not queue it ahead of its backoff, a spec change does; while one key
  keeps failing, another key is handled before its retry;
- ExecutionReconciler.fail_internal writes phase Failed, reason InternalError,
  the summary, finishedAt, the Succeeded=False condition, observedGeneration and
  a history entry, from a raw body whose frozen spec cannot even be parsed; a
  finished execution is left alone.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from runbook_operator.controllers.executions import ExecutionReconciler, Outcome
from runbook_operator.controllers.main import Operator, error_summary
from runbook_operator.controllers.workqueue import WorkQueue
from runbook_operator.engine import failures
from runbook_operator.engine.failures import Streak
from runbook_operator.k8s.client import NotLeading, is_transient
from runbook_operator.k8s.events import EventPoster
from runbook_operator.k8s.store import Key, Store
from runbook_operator.observability.metrics import Metrics
from runbook_operator.settings import OperatorSettings


def test_summary_and_transient() -> None:
    assert error_summary(ValueError("bad\nmore")) == "ValueError: bad"
    assert error_summary(RecursionError()) == "RecursionError"
    assert len(error_summary(ValueError("x" * 1000))) == 300
    assert is_transient(ApiException(status=503)) and is_transient(ApiException(status=429))
    assert is_transient(ApiException(status=0)) and is_transient(ApiException())
    assert is_transient(ConnectionRefusedError()) and not is_transient(ApiException(status=422))
    too_large = ApiException(status=500)
    too_large.body = "etcdserver: request is too large"
    assert not is_transient(too_large) and not is_transient(ApiException(status=413))
    assert not is_transient(KeyError("x"))


@given(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=30))
def test_a_streak_counts_only_identical_errors_in_a_row(errors: list[str]) -> None:
    streak = None
    for error in errors:
        streak = failures.next_streak(streak, error)
    tail = 0
    for error in reversed(errors):
        if error != errors[-1]:
            break
        tail += 1
    assert streak == Streak(errors[-1], tail)


def test_backoff_and_verdict() -> None:
    assert [failures.retry_delay(Streak("x", n)) for n in (1, 2, 3, 8, 9, 500)] == \
        [0.5, 1.0, 2.0, 60.0, 60.0, 60.0]
    assert failures.verdict(Streak("x", 5), 5, transient=False) == "fail"
    assert failures.verdict(Streak("x", 4), 5, transient=False) == "retry"
    assert failures.verdict(Streak("x", 50), 5, transient=True) == "retry"


@pytest.mark.parametrize("raw", [None, "x", {"error": "e"}, {"error": 1, "count": 2},
                                 {"error": "e", "count": 0}, {"error": "e", "count": True},
                                 {"error": "e", "count": "3"}])
def test_a_malformed_recorded_streak_is_ignored(raw: Any) -> None:
    assert failures.recorded({"reconcileFailures": raw}) is None


def test_a_recorded_streak_is_read() -> None:
    assert failures.recorded({"reconcileFailures": {"error": "e", "count": 3}}) == \
        Streak("e", 3)


class FakeReconciler:
    def __init__(self, errors: dict[Key, list[BaseException]]) -> None:
        self.errors = errors
        self.failed: list[tuple[Key, str, int]] = []
        self.handled: list[Key] = []
        self.recorded: list[tuple[Key, dict[str, Any] | None]] = []

    def reconcile(self, key: Key) -> Outcome:
        self.handled.append(key)
        queue = self.errors.get(key) or []
        if queue:
            raise queue.pop(0)
        return Outcome()

    def fail_internal(self, key: Key, summary: str, count: int) -> bool:
        self.failed.append((key, summary, count))
        return True

    def record_failures(self, key: Key, streak: dict[str, Any] | None) -> None:
        self.recorded.append((key, streak))


def operator(reconciler: FakeReconciler, limit: int = 3, store: Store | None = None
             ) -> Operator:
    op = Operator.__new__(Operator)
    op.settings = OperatorSettings(max_reconcile_failures=limit)
    op.metrics = Metrics()
    op.executions = reconciler  # type: ignore[assignment]
    op.store = store or Store()
    op.failures = {}
    op._failed_generation = {}
    return op


async def handle_times(op: Operator, key: Key, n: int) -> None:
    op.queue = WorkQueue()
    for _ in range(n):
        await op.handle(key)


def test_same_error_n_times_fails_the_execution() -> None:
    key = ("ns", "poison")
    fake = FakeReconciler({key: [RecursionError("deep")] * 3})
    op = operator(fake)
    asyncio.run(handle_times(op, key, 2))
    assert fake.failed == [] and op.failures[key] == Streak("RecursionError: deep", 2)
    assert fake.recorded[-1] == (key, {"error": "RecursionError: deep", "count": 2})
    asyncio.run(handle_times(op, key, 1))
    assert fake.failed == [(key, "RecursionError: deep", 3)]
    assert key not in op.failures


def test_a_failing_runs_own_streak_write_does_not_skip_its_backoff() -> None:
    key = ("ns", "poison")
    store = Store()
    store.put_execution({"metadata": {"namespace": "ns", "name": "poison", "generation": 3},
                         "status": {"phase": "Running"}})
    fake = FakeReconciler({key: [RecursionError("deep")]})
    op = operator(fake, store=store)
    asyncio.run(handle_times(op, key, 1))
    own_write = {"metadata": {"namespace": "ns", "name": "poison", "generation": 3},
                 "status": {"reconcileFailures": {"error": "RecursionError: deep",
                                                  "count": 1}}}
    assert not op.wanted(key, own_write)
    cancelled = {"metadata": {"namespace": "ns", "name": "poison", "generation": 4}}
    assert op.wanted(key, cancelled)
    assert op.wanted(("ns", "healthy"), own_write)


def test_a_new_leader_continues_the_recorded_streak() -> None:
    key = ("ns", "poison")
    store = Store()
    store.put_execution({"metadata": {"namespace": "ns", "name": "poison"},
                         "status": {"phase": "Running", "reconcileFailures": {
                             "error": "RecursionError: deep", "count": 2}}})
    fake = FakeReconciler({key: [RecursionError("deep")]})
    op = operator(fake, store=store)
    asyncio.run(handle_times(op, key, 1))
    assert fake.failed == [(key, "RecursionError: deep", 3)]


def test_a_different_error_restarts_the_count_and_success_clears_it() -> None:
    key = ("ns", "x")
    store = Store()
    fake = FakeReconciler({key: [ValueError("a"), ValueError("a"), ValueError("b"),
                                 ValueError("b")]})
    op = operator(fake, store=store)
    asyncio.run(handle_times(op, key, 4))
    assert fake.failed == [] and op.failures[key] == Streak("ValueError: b", 2)
    store.put_execution({"metadata": {"namespace": "ns", "name": "x"},
                         "status": {"reconcileFailures": {"error": "ValueError: b",
                                                          "count": 2}}})
    asyncio.run(handle_times(op, key, 1))
    assert key not in op.failures
    assert fake.recorded[-1] == (key, None)


def test_transient_errors_never_fail_a_run() -> None:
    key = ("ns", "x")
    fake = FakeReconciler({key: [ApiException(status=503)] * 10})
    op = operator(fake)
    asyncio.run(handle_times(op, key, 10))
    assert fake.failed == [] and op.failures[key].count == 10
    assert fake.recorded == []  # nothing to carry over: not a poison input


def test_a_refused_write_of_a_replica_that_stopped_leading_is_dropped() -> None:
    key = ("ns", "x")
    fake = FakeReconciler({key: [NotLeading("no")] * 10})
    op = operator(fake, limit=1)

    async def run() -> None:
        op.queue = WorkQueue()
        await op.handle(key)
        assert len(op.queue) == 0

    asyncio.run(run())
    assert fake.failed == [] and key not in op.failures


def test_other_executions_are_handled_before_a_failing_ones_retry() -> None:
    bad, good = ("ns", "bad"), ("ns", "good")
    fake = FakeReconciler({bad: [ValueError("x")] * 100})
    op = operator(fake, limit=1000)

    async def run() -> None:
        op.queue = WorkQueue()
        worker = asyncio.create_task(op.queue.work(op.handle))
        op.queue.add(bad)
        op.queue.add(good)
        deadline = time.monotonic() + 30
        while good not in fake.handled:
            assert time.monotonic() < deadline, "the good key was never handled"
            await asyncio.sleep(0.001)
        worker.cancel()

    asyncio.run(run())
    # The failing key's retry waits its backoff; the good key did not wait behind it.
    assert fake.handled[:2] == [bad, good]


class FakeCustom:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str,
                                              plural: str, name: str,
                                              body: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(body)
        return {"metadata": {"namespace": namespace, "name": name, "resourceVersion": "9"},
                "spec": {"runbookRef": {"name": "rb"}}, "status": body["status"]}


def test_fail_internal_writes_the_status_from_a_raw_body() -> None:
    custom = FakeCustom()
    clients: Any = SimpleNamespace(custom=custom)
    store = Store()
    body = {"metadata": {"namespace": "ns", "name": "x", "uid": "u", "generation": 4,
                         "resourceVersion": "8"},
            "spec": {"runbookRef": {"name": "rb"}},
            "status": {"phase": "Running", "runbookSpec": {"steps": "not a list"},
                       "history": [{"time": "t", "event": "ExecutionStarted"}]}}
    store.put_execution(body)
    reconciler = ExecutionReconciler(clients, store, EventPoster(clients, enabled=False),
                                     clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    assert reconciler.fail_internal(("ns", "x"), "ValidationError: 1 error", 5)
    (patch,) = custom.patches
    status = patch["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InternalError"
    assert "5 times in a row: ValidationError: 1 error" in status["message"]
    assert status["finishedAt"].startswith("2026-12-01T00:00:00")
    assert status["observedGeneration"] == 4
    assert status["conditions"][0]["status"] == "False"
    assert [h["event"] for h in status["history"]] == ["ExecutionStarted", "ExecutionFailed"]
    assert store.finished(("ns", "x"))
    assert reconciler.fail_internal(("ns", "x"), "again", 5)
    assert len(custom.patches) == 1
