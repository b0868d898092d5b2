"""k8s.jobs: the Job manifest of a step, for long names and with a securityContext.

Cases:
- execution and Runbook names of 253 characters: labels at most 63 characters
  (hashed), the full names in annotations on the Job and its pod template, Job
  name within 63; the store files the Job and its pod under the full name;
- a step's securityContext is merged over the restricted defaults at container
  and pod level; without one, the defaults as they are;
- a secret parameter is a secretKeyRef to the Secret named in the context, and
  its value appears nowhere in the manifest;
- a timed-out attempt is a timeout whatever the Job controller's reason: a
  Job failed ``BackoffLimitExceeded`` with no exit code after running its whole
  ``activeDeadlineSeconds`` (the controller racing its own pod kills) is timed
  out; one with an exit code, or failing before its deadline, is not;
- the step pod's termination ends the attempt before the Job's condition: exit 0
  is Succeeded at the container's finishedAt, exit 3 Failed with the container's
  reason and message; a pod still Running, one whose phase is not terminal yet,
  and one being deleted (killed at the deadline) leave the Job to decide; a Job
  failed DeadlineExceeded stays a timeout whatever its pod says;
- every step Job has backoffLimit 0 and restartPolicy Never: one pod, one attempt.
"""

from __future__ import annotations

import json

from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.names import job_name
from runbook_operator.engine.podsecurity import DEFAULT_CONTAINER_SECURITY
from runbook_operator.k8s.jobs import JobContext, build_job, observe_job
from runbook_operator.k8s.store import Store


def context(execution: str, runbook: str, spec: RunbookSpec,
            params: dict[str, str] | None = None, secret_name: str | None = None
            ) -> JobContext:
    params = params or {}
    return JobContext(execution=execution, namespace="ns", uid="u", runbook=runbook,
                      spec=spec, params=params,
                      secret_params=frozenset(p.name for p in spec.params if p.secret),
                      secret_name=secret_name, outputs={}, ttl_seconds=60)


def test_long_names() -> None:
    spec = RunbookSpec.model_validate({"steps": [{"name": "a", "image": "x"}]})
    execution, runbook = "e" * 253, "r" * 253
    name = job_name(execution, "a", 1)
    job = build_job(context(execution, runbook, spec), spec.steps[0], 1, name)
    meta = job["metadata"]
    assert len(name) <= 63 and meta["name"] == name
    assert all(len(v) <= 63 for v in meta["labels"].values())
    template = job["spec"]["template"]["metadata"]
    for notes in (meta["annotations"], template["annotations"]):
        assert notes["runbooks.dev/execution"] == execution
        assert notes["runbooks.dev/runbook"] == runbook
    store = Store()
    store.put_execution({"metadata": {"namespace": "ns", "name": execution,
                                      "resourceVersion": "1"}, "status": {}})
    assert store.put_job(job) == ("ns", execution)
    pod = {"metadata": {"namespace": "ns", "name": name + "-x",
                        "labels": {**template["labels"], "job-name": name},
                        "annotations": template["annotations"]}}
    assert store.put_pod(pod) == ("ns", execution)


def test_security_contexts() -> None:
    spec = RunbookSpec.model_validate({"steps": [
        {"name": "a", "image": "x"},
        {"name": "b", "image": "x", "securityContext": {"readOnlyRootFilesystem": True}}]})
    plain = build_job(context("e", "r", spec), spec.steps[0], 1, "e-a-1")
    pod = plain["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"] == DEFAULT_CONTAINER_SECURITY
    assert pod["securityContext"]["runAsNonRoot"] is True
    merged = build_job(context("e", "r", spec), spec.steps[1], 1, "e-b-1")
    sc = merged["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc == {**DEFAULT_CONTAINER_SECURITY, "readOnlyRootFilesystem": True}


def test_secret_parameters_by_reference() -> None:
    spec = RunbookSpec.model_validate({"params": [{"name": "token", "secret": True}],
                                       "steps": [{"name": "a", "image": "x"}]})
    job = build_job(context("e", "r", spec, {"token": "s3cr3t-value"}, "e-params-abcde"),
                    spec.steps[0], 1, "e-a-1")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PARAM_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "e-params-abcde",
                                                               "key": "token"}
    assert "s3cr3t-value" not in json.dumps(job)


def failed_job(reason: str, ran_seconds: int, deadline: int | None) -> dict[str, object]:
    spec = {"activeDeadlineSeconds": deadline} if deadline is not None else {}
    return {"metadata": {"name": "ex-call-1",
                         "labels": {"runbooks.dev/step": "call", "runbooks.dev/attempt": "1"}},
            "spec": spec,
            "status": {"startTime": "2026-01-01T00:00:00Z", "conditions": [
                {"type": "Failed", "status": "True", "reason": reason,
                 "lastTransitionTime": f"2026-01-01T00:00:{ran_seconds:02d}Z"}]}}


def pod_exited(code: int) -> dict[str, object]:
    return {"status": {"containerStatuses": [
        {"name": "step", "state": {"terminated": {"exitCode": code}}}]}}


def test_a_job_that_ran_out_its_deadline_timed_out_whatever_its_reason() -> None:
    def timed_out(reason: str, ran: int, deadline: int | None,
                  pod: dict[str, object] | None = None) -> bool:
        job = observe_job(failed_job(reason, ran, deadline), pod)
        assert job is not None
        return job.timed_out

    assert timed_out("DeadlineExceeded", 2, 2)
    assert timed_out("BackoffLimitExceeded", 3, 2)       # the controller's race
    assert timed_out("BackoffLimitExceeded", 2, 2)
    assert not timed_out("BackoffLimitExceeded", 1, 2)   # failed early: a failure
    assert not timed_out("BackoffLimitExceeded", 3, None)  # no timeout at all
    assert not timed_out("BackoffLimitExceeded", 3, 2, pod_exited(1))  # exited on its own
    assert not timed_out("BackoffLimitExceeded", 3, True)  # type: ignore[arg-type]


def active_job() -> dict[str, object]:
    return {"metadata": {"name": "ex-call-1",
                         "labels": {"runbooks.dev/step": "call", "runbooks.dev/attempt": "1"}},
            "spec": {}, "status": {"startTime": "2026-01-01T00:00:00Z", "active": 1}}


def ended_pod(code: int, phase: str | None = None, deleting: bool = False,
              message: str | None = None) -> dict[str, object]:
    term: dict[str, object] = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                               "startedAt": "2026-01-01T00:00:01Z",
                               "finishedAt": "2026-01-01T00:00:04Z"}
    if message is not None:
        term["message"] = message
    meta = {"name": "ex-call-1-abcde"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:05Z"
    return {"metadata": meta, "status": {
        "phase": phase or ("Succeeded" if code == 0 else "Failed"),
        "containerStatuses": [{"name": "step", "state": {"terminated": term}}]}}


def test_the_pods_termination_ends_the_attempt() -> None:
    ok = observe_job(active_job(), ended_pod(0))
    assert ok is not None and ok.state == "Succeeded" and ok.exit_code == 0
    assert ok.finished_at is not None and ok.finished_at.isoformat() == "2026-01-01T00:00:04+00:00"
    bad = observe_job(active_job(), ended_pod(3, message="disk full"))
    assert bad is not None and (bad.state, bad.reason, bad.exit_code) == ("Failed", "Error", 3)
    assert bad.termination_message == "disk full" and not bad.timed_out
    # The Job controller's later condition changes nothing of the outcome.
    failed = failed_job("BackoffLimitExceeded", 9, None)
    later = observe_job(failed, ended_pod(3))
    assert later is not None and (later.state, later.reason) == ("Failed", "Error")
    assert later.finished_at == bad.finished_at


def test_the_job_decides_when_the_pod_has_not_ended_on_its_own() -> None:
    running = {"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [
        {"name": "step", "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}}
    for pod in (None, running, ended_pod(0, phase="Running"), ended_pod(137, deleting=True)):
        job = observe_job(active_job(), pod)
        assert job is not None and job.state == "Active", pod
    killed = observe_job(failed_job("DeadlineExceeded", 2, 2), ended_pod(137))
    assert killed is not None and killed.timed_out and killed.reason == "DeadlineExceeded"
    gone = observe_job(failed_job("DeadlineExceeded", 2, 2), None)
    assert gone is not None and gone.timed_out


def test_one_pod_is_one_attempt() -> None:
    spec = RunbookSpec.model_validate({"steps": [{"name": "a", "image": "x",
                                                  "timeout": "30s"}]})
    job = build_job(context("e", "r", spec), spec.steps[0], 1, "e-a-1")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
