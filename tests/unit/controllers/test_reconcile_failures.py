"""A reconcile that keeps raising: the execution fails with InternalError, nothing wedges.

Cases:
- error_summary is one line (type and first line), clipped; transient() is true
  for the cluster's errors (5xx, 429, connection) and false for a 4xx or a bug;
- Operator.handle: the same error N times in a row calls fail_internal with the
  summary and the count, then forgets the key; a different error restarts the
  count; a transient error never fails the run; a success clears the count;
  while one key keeps failing, another key is handled at once (never slowed);
- ExecutionReconciler.fail_internal writes phase Failed, reason InternalError,
  the summary, finishedAt, the Succeeded=False condition, observedGeneration and
  a history entry, from a raw body whose frozen spec cannot even be parsed; a
  finished execution is left alone.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.controllers.executions import ExecutionReconciler, Outcome
from runbook_operator.controllers.main import Operator, error_summary, transient
from runbook_operator.controllers.store import Key, Store
from runbook_operator.controllers.workqueue import WorkQueue
from runbook_operator.k8s.events import EventPoster
from runbook_operator.observability.metrics import Metrics
from runbook_operator.settings import OperatorSettings


def test_summary_and_transient() -> None:
    assert error_summary(ValueError("bad\nmore")) == "ValueError: bad"
    assert error_summary(RecursionError()) == "RecursionError"
    assert len(error_summary(ValueError("x" * 1000))) == 300
    assert transient(ApiException(status=503)) and transient(ApiException(status=429))
    assert transient(ConnectionRefusedError()) and not transient(ApiException(status=422))
    assert not transient(KeyError("x"))


class FakeReconciler:
    def __init__(self, errors: dict[Key, list[BaseException]]) -> None:
        self.errors = errors
        self.failed: list[tuple[Key, str, int]] = []
        self.handled: list[Key] = []

    def reconcile(self, key: Key) -> Outcome:
        self.handled.append(key)
        queue = self.errors.get(key) or []
        if queue:
            raise queue.pop(0)
        return Outcome()

    def fail_internal(self, key: Key, summary: str, count: int) -> bool:
        self.failed.append((key, summary, count))
        return True


def operator(reconciler: FakeReconciler, limit: int = 3) -> Operator:
    op = Operator.__new__(Operator)
    op.settings = OperatorSettings(max_reconcile_failures=limit)
    op.metrics = Metrics()
    op.executions = reconciler  # type: ignore[assignment]
    op.failures = {}
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
    assert fake.failed == [] and op.failures[key] == ("RecursionError: deep", 2)
    asyncio.run(handle_times(op, key, 1))
    assert fake.failed == [(key, "RecursionError: deep", 3)]
    assert key not in op.failures


def test_a_different_error_restarts_the_count_and_success_clears_it() -> None:
    key = ("ns", "x")
    fake = FakeReconciler({key: [ValueError("a"), ValueError("a"), ValueError("b"),
                                 ValueError("b")]})
    op = operator(fake)
    asyncio.run(handle_times(op, key, 4))
    assert fake.failed == [] and op.failures[key] == ("ValueError: b", 2)
    asyncio.run(handle_times(op, key, 1))
    assert key not in op.failures


def test_transient_errors_never_fail_a_run() -> None:
    key = ("ns", "x")
    fake = FakeReconciler({key: [ApiException(status=503)] * 10})
    op = operator(fake)
    asyncio.run(handle_times(op, key, 10))
    assert fake.failed == [] and op.failures[key][1] == 10


def test_other_executions_are_not_slowed() -> None:
    bad, good = ("ns", "bad"), ("ns", "good")
    fake = FakeReconciler({bad: [ValueError("x")] * 100})
    op = operator(fake, limit=1000)

    async def run() -> None:
        op.queue = WorkQueue()
        worker = asyncio.create_task(op.queue.work(op.handle))
        op.queue.add(bad)
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        op.queue.add(good)
        while good not in fake.handled:
            await asyncio.sleep(0.001)
        assert asyncio.get_running_loop().time() - started < 0.5
        worker.cancel()

    asyncio.run(run())


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
