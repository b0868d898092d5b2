"""The operator's store of observed objects.

Cases: a running execution is kept whole; a finished one is kept slim (identity,
runbookRef, phase, times, concurrency key, trace id) and still parses as a
RunbookExecution; resourceVersions are compared for equality only (opaque): a body
from our own write or read is kept until the watch delivers that version, events
the watch brings before it are older, a newer generation is taken at once, a write
result the watch already passed never goes back, and a re-read after the watch
skipped our version unblocks it; caught_up tells whether the watch delivered a
version; deleting an
execution drops its Jobs and pods; the Jobs and pods of a finished execution are
not stored; a pod wearing a step Job's labels (job-name, execution annotation) but
not controlled by that Job's uid (none, another uid, not a Job) never replaces the
Job's own pod, and the reconciler's observation ignores it (its forged termination
message is not the step's outcome); a finished Job whose pod the watch has not shown
(a restart's listings race) gets its pod by one direct read, so its exit code and
outputs are not lost, and a pod really gone is judged from the Job after that one read;
a running Job without its pod makes no read.
"""

from __future__ import annotations

import json
from typing import Any

from runbook_operator.api.common import API_VERSION
from runbook_operator.api.execution import RunbookExecution
from runbook_operator.controllers.job_actions import JobActions
from runbook_operator.k8s.store import Store


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
    store.put_execution(execution("Pending", version="6"))
    store.put_fresh_execution(execution("Running", version="7"))  # our write
    store.put_execution(execution("Pending", version="6"))  # the watch lags: ignored
    assert store.executions[("ops", "run-1")]["status"]["phase"] == "Running"
    store.put_execution(execution("Running", version="7"))  # the watch reaches our write
    store.put_job(job("run-1-a-1"))
    assert set(store.jobs[("ops", "run-1")]) == {"run-1-a-1"}
    store.put_execution(execution("Failed", version="8"))
    store.put_job(job("run-1-b-1"))
    assert "run-1-b-1" not in store.jobs.get(("ops", "run-1"), {})
    store.put_execution(execution("Failed", version="9"), deleted=True)
    assert ("ops", "run-1") not in store.executions
    assert ("ops", "run-1") not in store.jobs


def step_pod(owner: dict[str, Any] | None, message: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "run-1-a-1-xyz", "namespace": "ops",
                            "labels": {"runbooks.dev/execution": "run-1",
                                       "job-name": "run-1-a-1"}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "step", "state": {"terminated": {
            "exitCode": 0, "message": message, "finishedAt": "2026-11-27T10:00:09Z"}}}]}}


def step_job() -> dict[str, Any]:
    body = job("run-1-a-1")
    body["metadata"]["uid"] = "job-uid"
    body["metadata"]["labels"].update({"runbooks.dev/step": "a", "runbooks.dev/attempt": "1"})
    body["metadata"]["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": "RunbookExecution",
                                            "uid": "u1", "controller": True}]
    return body


def test_a_pod_wearing_a_jobs_labels_is_not_its_pod() -> None:
    genuine = {"kind": "Job", "name": "run-1-a-1", "uid": "job-uid", "controller": True}
    forgeries = [None, {**genuine, "uid": "other"}, {**genuine, "controller": False},
                 {**genuine, "kind": "ReplicaSet"}]
    for forged in forgeries:
        store = Store()
        store.put_execution(execution("Running"))
        store.put_job(step_job())
        store.put_pod(step_pod(genuine, '{"real": true}'))
        store.put_pod(step_pod(forged, '{"forged": true}'))
        pod = store.pods[("ops", "run-1")]["run-1-a-1"]
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == \
            '{"real": true}', forged

        # Seen before its Job (no uid to compare yet): stored, but not observed.
        store = Store()
        store.put_execution(execution("Running"))
        store.put_pod(step_pod(forged, '{"forged": true}'))
        store.put_job(step_job())
        actions = JobActions.__new__(JobActions)
        actions.store = store
        (observed,) = actions.observed_jobs(("ops", "run-1"), "u1").values()
        assert observed.state == "Active" and observed.termination_message is None, forged
        store.put_pod(step_pod(genuine, '{"real": true}'))
        (observed,) = actions.observed_jobs(("ops", "run-1"), "u1").values()
        assert observed.state == "Succeeded" and observed.termination_message == '{"real": true}'


class PodsApi:
    """Stands in for CoreV1Api's pod listing: the pods it holds, and the selectors asked."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.selectors: list[str] = []

    def list_namespaced_pod(self, namespace: str, label_selector: str,
                            _preload_content: bool) -> Any:
        self.selectors.append(label_selector)
        return type("Response", (), {"data": json.dumps({"items": self.pods}).encode()})()


def actions_reading(store: Store, pods: list[dict[str, Any]]) -> tuple[JobActions, PodsApi]:
    api = PodsApi(pods)
    actions = JobActions.__new__(JobActions)
    actions.store = store
    actions.clients = type("Clients", (), {"core": api})()  # type: ignore[assignment]
    actions._pods_read = {}
    return actions, api


def finished_step_job() -> dict[str, Any]:
    body = step_job()
    body["status"] = {"conditions": [{"type": "Complete", "status": "True",
                                      "lastTransitionTime": "2026-11-27T10:00:10Z"}]}
    return body


def test_a_finished_jobs_pod_not_yet_watched_is_read_once() -> None:
    genuine = {"kind": "Job", "name": "run-1-a-1", "uid": "job-uid", "controller": True}
    store = Store()
    store.put_execution(execution("Running"))
    store.put_job(finished_step_job())
    actions, api = actions_reading(store, [step_pod(None, '{"forged": true}'),
                                           step_pod(genuine, '{"real": true}')])
    for _ in range(3):
        (observed,) = actions.observed_jobs(("ops", "run-1"), "u1").values()
        assert observed.state == "Succeeded" and observed.termination_message == '{"real": true}'
        assert observed.exit_code == 0
    assert api.selectors == ["batch.kubernetes.io/controller-uid=job-uid"]


def test_a_finished_job_whose_pod_is_gone_is_judged_from_the_job_after_one_read() -> None:
    store = Store()
    store.put_execution(execution("Running"))
    store.put_job(finished_step_job())
    actions, api = actions_reading(store, [])
    for _ in range(3):
        (observed,) = actions.observed_jobs(("ops", "run-1"), "u1").values()
        assert observed.state == "Succeeded" and observed.termination_message is None
    assert len(api.selectors) == 1


def test_a_running_job_without_its_pod_makes_no_read() -> None:
    store = Store()
    store.put_execution(execution("Running"))
    store.put_job(step_job())
    actions, api = actions_reading(store, [])
    (observed,) = actions.observed_jobs(("ops", "run-1"), "u1").values()
    assert observed.state == "Active" and api.selectors == []


KEY = ("ops", "run-1")


def phase(store: Store) -> str:
    return str(store.executions[KEY]["status"]["phase"])


def test_versions_are_opaque_and_ordered_by_the_watch() -> None:
    """Versions that do not sort as numbers (or as strings) still order right: a write's
    body is kept until the watch brings that same version, whatever lags behind it."""
    store = Store()
    store.put_execution(execution("Pending", version="zz-9"))
    store.put_fresh_execution(execution("Running", version="aa-1"))
    store.put_execution(execution("Queued", version="mm-5"))  # before our write: older
    assert phase(store) == "Running"
    store.put_execution(execution("Running", version="aa-1"))  # the watch reaches it
    store.put_execution(execution("Succeeded", version="bb-0"))  # and goes past it
    assert phase(store) == "Succeeded"


def test_a_write_the_watch_already_passed_does_not_go_back() -> None:
    store = Store()
    store.put_execution(execution("Running", version="b"))
    store.put_execution(execution("Succeeded", version="a"))  # the watch: a is newer
    store.put_fresh_execution(execution("Running", version="b"))  # a late write result
    assert phase(store) == "Succeeded"


def test_a_read_after_the_watch_moved_on_takes_the_watchs_latest() -> None:
    """Our write (v2) is pending; the watch skips it (a relist) and brings v3; a 409 and
    re-read of v3 then takes the watch's body and stops waiting for v2."""
    store = Store()
    store.put_execution(execution("Pending", version="v1"))
    store.put_fresh_execution(execution("Running", version="v2"))
    store.put_execution(execution("Failed", version="v3"))  # held back: v2 pending
    assert phase(store) == "Running"
    store.put_fresh_execution(execution("Failed", version="v3"))
    assert phase(store) == "Failed"
    store.put_execution(execution("Cancelled", version="v4"))
    assert phase(store) == "Cancelled"


def test_a_newer_generation_from_the_watch_is_taken_at_once() -> None:
    store = Store()
    body = execution("Running", version="w")
    store.put_fresh_execution(body)
    newer = execution("Running", version="x")
    newer["metadata"]["generation"] = int(body["metadata"].get("generation") or 0) + 1
    store.put_execution(newer)
    assert store.executions[KEY] is newer


def test_caught_up_is_by_equality_of_versions() -> None:
    store = Store()
    store.put_execution(execution("Running", version="7"))
    assert store.caught_up(KEY, "7") and not store.caught_up(KEY, "8")
    store.put_execution(execution("Running", version="8"))
    assert store.caught_up(KEY, "7") and store.caught_up(KEY, "8")
    assert not store.caught_up(("ops", "never-seen"), "1")  # not brought yet
    store.put_execution(execution("Running", version="9"), deleted=True)
    assert store.caught_up(KEY, "10")  # gone: nothing newer will come
