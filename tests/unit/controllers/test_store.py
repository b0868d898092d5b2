"""The operator's store of observed objects.

Cases: a running execution is kept whole; a finished one is kept slim (identity,
runbookRef, phase, times, concurrency key, trace id) and still parses as a
RunbookExecution; an older resourceVersion never replaces a newer one; deleting an
execution drops its Jobs and pods; the Jobs and pods of a finished execution are
not stored.
"""

from __future__ import annotations

import json
from typing import Any

from runbook_operator.api.execution import RunbookExecution
from runbook_operator.controllers.store import Store


def execution(phase: str, version: str = "5") -> dict[str, Any]:
    return {
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
        "metadata": {"name": "run-1", "namespace": "ops", "uid": "u1",
                     "resourceVersion": version, "creationTimestamp": "2026-11-27T10:00:00Z",
                     "managedFields": [{"manager": "kubectl"}] * 20},
        "spec": {"runbookRef": {"name": "restart"}, "params": {"severity": "SEV2"}},
        "status": {"phase": phase, "startedAt": "2026-11-27T10:00:01Z",
                   "finishedAt": "2026-11-27T10:01:00Z", "concurrencyKey": "db",
                   "traceID": "a" * 32, "runbookSpec": {"steps": [{"name": "x" * 1000}]},
                   "steps": {"a": {"phase": "Succeeded"}},
                   "history": [{"event": "StepStarted", "message": "y" * 500}] * 100},
    }


def job(name: str, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ops", "resourceVersion": version,
                         "labels": {"runbooks.dev/execution": "run-1"}}, "status": {}}


def test_running_is_whole_and_finished_is_slim() -> None:
    store = Store()
    running = execution("Running")
    store.put_execution(running)
    assert store.executions[("ops", "run-1")] is running
    store.put_execution(execution("Succeeded", version="6"))
    slim = store.executions[("ops", "run-1")]
    assert slim["status"] == {"phase": "Succeeded", "startedAt": "2026-11-27T10:00:01Z",
                              "finishedAt": "2026-11-27T10:01:00Z", "concurrencyKey": "db",
                              "traceID": "a" * 32}
    assert slim["spec"] == {"runbookRef": {"name": "restart"}}
    assert "managedFields" not in slim["metadata"]
    assert len(json.dumps(slim)) < len(json.dumps(execution("Succeeded"))) / 50
    parsed = RunbookExecution.from_k8s(slim)
    assert parsed.status is not None and parsed.status.phase == "Succeeded"
    assert store.finished(("ops", "run-1"))


def test_versions_deletion_and_children() -> None:
    store = Store()
    store.put_execution(execution("Running", version="7"))
    store.put_execution(execution("Pending", version="6"))  # older: ignored
    assert store.executions[("ops", "run-1")]["status"]["phase"] == "Running"
    store.put_job(job("run-1-a-1"))
    assert set(store.jobs[("ops", "run-1")]) == {"run-1-a-1"}
    store.put_execution(execution("Failed", version="8"))
    store.put_job(job("run-1-b-1"))
    assert "run-1-b-1" not in store.jobs.get(("ops", "run-1"), {})
    store.put_execution(execution("Failed", version="9"), deleted=True)
    assert ("ops", "run-1") not in store.executions
    assert ("ops", "run-1") not in store.jobs
