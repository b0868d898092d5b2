"""k8s.jobs and the store for staged Jobs (engine.staging).

Cases:
- a staged Job's pod template carries the gate ``runbooks.dev/dependencies``, reads
  each dependency's outputs through a fieldRef to its ``outputs.runbooks.dev/``
  annotation (no value baked in), and has no ``activeDeadlineSeconds`` (the
  operator keeps the timeout from the lift); a plain Job of the same step has none
  of that;
- observing: a staged Job is ``staged``; ``gated`` while its pod is unseen or still
  gated, not once the pod has lost the gate; its start is the pod's, not the Job's;
- the store's slim copies keep exactly that (the gate of the Job and of the pod);
- adoption: a staged Job matches the staged build and not the plain one, and a
  plain Job does not match the staged build (the gate is compared);
- ``Store.awaited``: the pod of a Job whose lift waits for it, once.
"""

from __future__ import annotations

from typing import Any

from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.k8s.adoption import foreign_reason
from runbook_operator.k8s.jobs import JobContext, build_job, observe_job
from runbook_operator.k8s.store import Store, slim_job, slim_pod

SPEC = RunbookSpec.model_validate({"steps": [
    {"name": "a", "image": "busybox:1.37"},
    {"name": "b", "image": "busybox:1.37", "dependsOn": ["a"], "timeout": "30s"}]})


def ctx() -> JobContext:
    return JobContext(execution="ex", namespace="ns", uid="u", runbook="rb", spec=SPEC,
                      params={}, secret_params=frozenset(), secret_name=None,
                      outputs={"a": {"n": 1}}, ttl_seconds=60)


def env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_staged_manifest() -> None:
    staged = build_job(ctx(), SPEC.steps[1], 1, "ex-b-1", staged=True)
    pod = staged["spec"]["template"]["spec"]
    assert pod["schedulingGates"] == [{"name": "runbooks.dev/dependencies"}]
    assert env(staged)["STEP_A_OUTPUTS"] == {"name": "STEP_A_OUTPUTS", "valueFrom": {
        "fieldRef": {"apiVersion": "v1",
                     "fieldPath": "metadata.annotations['outputs.runbooks.dev/a']"}}}
    assert "activeDeadlineSeconds" not in staged["spec"]
    plain = build_job(ctx(), SPEC.steps[1], 1, "ex-b-1")
    assert "schedulingGates" not in plain["spec"]["template"]["spec"]
    assert env(plain)["STEP_A_OUTPUTS"]["value"] == '{"n":1}'
    assert plain["spec"]["activeDeadlineSeconds"] == 30


def job_body(staged: bool) -> dict[str, Any]:
    job = build_job(ctx(), SPEC.steps[1], 1, "ex-b-1", staged=staged)
    job["metadata"]["uid"] = "job-uid"
    job["metadata"]["resourceVersion"] = "5"
    job["status"] = {"startTime": "2026-01-01T00:00:00Z", "active": 1}
    return job


def pod_body(gated: bool, started: str | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": "ex-b-1-abcde", "namespace": "ns",
                     "labels": {"batch.kubernetes.io/job-name": "ex-b-1",
                                "runbooks.dev/execution": "ex"},
                     "annotations": {"runbooks.dev/execution": "ex"},
                     "ownerReferences": [{"kind": "Job", "uid": "job-uid",
                                          "controller": True}]},
        "spec": {"schedulingGates": [{"name": "runbooks.dev/dependencies"}]} if gated
        else {},
        "status": {"phase": "Pending"}}
    if started:
        pod["status"] = {"phase": "Running", "startTime": started}
    return pod


def test_observing_a_staged_job() -> None:
    job = slim_job(job_body(staged=True))
    unseen = observe_job(job, None)
    assert unseen is not None and unseen.staged and unseen.gated and unseen.started_at is None
    gated = observe_job(job, slim_pod(pod_body(gated=True)))
    assert gated is not None and gated.gated and gated.state == "Active"
    lifted = observe_job(job, slim_pod(pod_body(gated=False, started="2026-01-01T00:05:00Z")))
    assert lifted is not None and lifted.staged and not lifted.gated
    assert lifted.started_at is not None and lifted.started_at.minute == 5  # the pod's start
    plain = observe_job(slim_job(job_body(staged=False)), None)
    assert plain is not None and not plain.staged and not plain.gated
    assert plain.started_at is not None and plain.started_at.minute == 0


def test_adoption_compares_the_gate() -> None:
    staged, plain = job_body(staged=True), job_body(staged=False)
    assert foreign_reason(build_job(ctx(), SPEC.steps[1], 1, "ex-b-1", staged=True),
                          staged) is None
    assert foreign_reason(build_job(ctx(), SPEC.steps[1], 1, "ex-b-1"), staged) is not None
    why = foreign_reason(build_job(ctx(), SPEC.steps[1], 1, "ex-b-1", staged=True), plain)
    assert why is not None
    # A planted gated Job that bakes its own "outputs" in is not the staged build.
    planted = job_body(staged=True)
    planted["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "STEP_A_OUTPUTS", "value": '{"n":2}'} if e["name"] == "STEP_A_OUTPUTS"
        else e for e in planted["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "STEP_A_OUTPUTS" in (foreign_reason(
        build_job(ctx(), SPEC.steps[1], 1, "ex-b-1", staged=True), planted) or "")


def test_the_store_files_and_awaits_staged_pods() -> None:
    store = Store()
    store.put_execution({"metadata": {"name": "ex", "namespace": "ns",
                                      "resourceVersion": "1"}})
    store.put_job(job_body(staged=True))
    pod = pod_body(gated=True)
    store.put_pod(pod)
    assert store.pods[("ns", "ex")]["ex-b-1"]["spec"]["schedulingGates"]
    assert not store.awaited(pod)
    store.awaiting.add(("ns", "ex-b-1"))
    assert store.awaited(pod) and not store.awaited(pod)
