"""Pre-staged Jobs (engine.staging) on the real control plane, outcomes through kwok.

The session's operator runs with staging on (the default). Cases:
- a DAG (start -> two branches -> join): each branch's pod exists, gated, before
  start's pod ends; the gate is lifted (the pod loses it and runs); start's outputs
  reach the branch as the annotation its env fieldRef reads; one Job and one pod
  per step, and the join staged too (once both branches' pods run);
- a step skipped by ``when``: its staged Job is deleted;
- cancel: the staged Jobs are deleted, nothing lifted;
- retries: attempt 2 is a plain Job (no gate), attempt 1 was staged;
- timeouts: a step gated longer than its timeout still runs (the timeout counts
  from the lift), and one running past it fails DeadlineExceeded;
- SIGKILL of the operator after the staged Job was made and before its gate was
  lifted (its dependency ends while no operator runs): after the restart the step
  runs exactly once, on its staged Job and pod;
- ``--prestage=false``: no Job carries a gate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube import Kube, PodWatch, step, wait_for

from operator_process import OperatorProcess  # hack/, on the path (conftest)

pytestmark = pytest.mark.integration

GATE = "runbooks.dev/dependencies"


def pods_of(kube: Kube, execution: str, step_name: str) -> list[Any]:
    core = kubernetes.client.CoreV1Api(kube.api)
    return [p for p in core.list_namespaced_pod(kube.ns).items
            if (p.metadata.annotations or {}).get("runbooks.dev/execution") == execution
            and (p.metadata.labels or {}).get("runbooks.dev/step") == step_name]


def gated_pod(kube: Kube, execution: str, step_name: str) -> Any:
    for pod in pods_of(kube, execution, step_name):
        if any(g.name == GATE for g in pod.spec.scheduling_gates or []):
            return pod
    return None


def job_names(kube: Kube, execution: str) -> set[str]:
    return {j.metadata.name for j in kube.jobs(execution)}


def gates(job: Any) -> list[str]:
    return [g.name for g in job.spec.template.spec.scheduling_gates or []]


def test_a_dag_runs_on_staged_jobs(kube: Kube, k8s_api: Any) -> None:
    kube.ready_runbook("staged", {"steps": [
        step("start", message='{"x": 1}', duration="4s"),
        step("b0", after=["start"], duration="3s"), step("b1", after=["start"], duration="3s"),
        step("join", after=["b0", "b1"])]})
    with PodWatch(k8s_api, kube.ns) as watch:
        kube.execute("staged-1", "staged")
        wait_for("b0's gated pod while start runs",
                 lambda: gated_pod(kube, "staged-1", "b0"))
        body = kube.wait_finished("staged-1")
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert watch.seen("created", "b0") < watch.seen("terminated", "start")
    assert watch.seen("created", "b1") < watch.seen("terminated", "start")
    assert job_names(kube, "staged-1") == {f"staged-1-{s}-1" for s in
                                           ("start", "b0", "b1", "join")}
    jobs = {j.metadata.labels["runbooks.dev/step"]: j for j in kube.jobs("staged-1")}
    assert gates(jobs["start"]) == [] and gates(jobs["b0"]) == [GATE]
    assert gates(jobs["join"]) == [GATE]
    env = {e.name: e for e in jobs["b0"].spec.template.spec.containers[0].env}
    assert env["STEP_START_OUTPUTS"].value_from.field_ref.field_path == \
        "metadata.annotations['outputs.runbooks.dev/start']"
    assert jobs["b0"].spec.active_deadline_seconds is None
    for name in ("b0", "b1", "join"):
        (pod,) = pods_of(kube, "staged-1", name)
        assert not pod.spec.scheduling_gates and pod.status.phase == "Succeeded"
        assert status["steps"][name]["attempts"] == 1
    (b0,) = pods_of(kube, "staged-1", "b0")
    assert json.loads(b0.metadata.annotations["outputs.runbooks.dev/start"]) == {"x": 1}
    (join,) = pods_of(kube, "staged-1", "join")
    assert join.metadata.annotations["outputs.runbooks.dev/b0"] == "{}"


def test_a_skipped_step_has_its_staged_job_deleted(kube: Kube) -> None:
    kube.ready_runbook("skip", {"steps": [
        step("probe", message='{"go": false}', duration="3s"),
        step("act", after=["probe"], when="steps.probe.outputs.go")]})
    kube.execute("skip-1", "skip")
    wait_for("act's staged Job", lambda: "skip-1-act-1" in job_names(kube, "skip-1"))
    body = kube.wait_finished("skip-1")
    assert body["status"]["steps"]["act"]["phase"] == "Skipped"
    assert body["status"]["steps"]["act"]["reason"] == "WhenFalse"
    wait_for("the staged Job deleted", lambda: job_names(kube, "skip-1") == {"skip-1-probe-1"})


def test_cancel_deletes_staged_jobs(kube: Kube) -> None:
    kube.ready_runbook("cancel-staged", {"steps": [
        step("long", duration="10m"), step("next", after=["long"])]})
    kube.execute("cs-1", "cancel-staged")
    wait_for("next's gated pod", lambda: gated_pod(kube, "cs-1", "next"))
    kube.patch("runbookexecutions", "cs-1", {"spec": {"cancel": True}})
    body = kube.wait_phase("cs-1", "Cancelled", timeout=60)
    assert body["status"]["steps"]["next"]["phase"] == "Skipped"
    wait_for("every Job deleted", lambda: not job_names(kube, "cs-1"))
    assert all(p.metadata.deletion_timestamp or p.spec.scheduling_gates
               for p in pods_of(kube, "cs-1", "next")), "a gate was lifted"


def test_retries_are_not_staged(kube: Kube) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "factor": 1, "jitter": 0}}
    kube.ready_runbook("retry-staged", {"steps": [
        step("a", duration="2s"),
        step("b", after=["a"], per_attempt={1: 1}, exit_code=0, retry=retry)]})
    kube.execute("rs-1", "retry-staged")
    body = kube.wait_finished("rs-1")
    assert body["status"]["phase"] == "Succeeded"
    assert body["status"]["steps"]["b"]["attempts"] == 2
    jobs = {j.metadata.name: j for j in kube.jobs("rs-1")}
    assert gates(jobs["rs-1-b-1"]) == [GATE] and gates(jobs["rs-1-b-2"]) == []


def test_the_timeout_is_not_spent_while_gated(kube: Kube) -> None:
    kube.ready_runbook("gated-timeout", {"steps": [
        step("slow", duration="8s"),
        step("quick", after=["slow"], duration="1s", timeout="5s"),
        step("stuck", after=["slow"], duration="10m", timeout="3s")]})
    kube.execute("gt-1", "gated-timeout")
    wait_for("quick's gated pod", lambda: gated_pod(kube, "gt-1", "quick"))
    body = kube.wait_finished("gt-1")
    steps = body["status"]["steps"]
    # quick waited ~8 s behind its gate, longer than its 5 s timeout, and ran.
    assert steps["quick"]["phase"] == "Succeeded", steps["quick"]
    assert steps["stuck"]["phase"] == "Failed"
    assert steps["stuck"]["reason"] == "DeadlineExceeded", steps["stuck"]
    wait_for("the timed-out Job deleted", lambda: "gt-1-stuck-1" not in job_names(kube, "gt-1"))


def test_sigkill_between_the_staged_create_and_the_lift(kube: Kube, operator: Any) -> None:
    kube.ready_runbook("kill-staged", {"steps": [
        step("a", duration="6s", message='{"v": "a"}'), step("b", after=["a"])]})
    kube.execute("ks-1", "kill-staged")
    wait_for("b's gated pod", lambda: gated_pod(kube, "ks-1", "b"))
    operator.kill()
    try:
        wait_for("a's pod to end while no operator runs", lambda: any(
            p.status.phase == "Succeeded" for p in pods_of(kube, "ks-1", "a")))
        assert gated_pod(kube, "ks-1", "b") is not None  # nobody lifted it meanwhile
    finally:
        operator.start()
    body = kube.wait_finished("ks-1")
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert body["status"]["steps"]["b"]["attempts"] == 1
    assert job_names(kube, "ks-1") == {"ks-1-a-1", "ks-1-b-1"}
    (pod,) = pods_of(kube, "ks-1", "b")  # one pod: the staged one, lifted once
    assert pod.metadata.annotations["outputs.runbooks.dev/a"] == '{"v":"a"}'
    assert pod.status.phase == "Succeeded"


@pytest.fixture
def unstaged(operator: Any, tmp_path: Path) -> Iterator[None]:
    """The session's operator replaced by one started with ``--prestage=false``."""
    operator.stop()
    off = OperatorProcess(operator.kubeconfig, tmp_path, extra_args=["--prestage=false"])
    off.start()
    try:
        yield
    finally:
        off.stop()
        operator.start()


def test_prestage_false_creates_plain_jobs(kube: Kube, unstaged: None) -> None:
    kube.ready_runbook("unstaged", {"steps": [step("a", duration="2s"),
                                              step("b", after=["a"])]})
    kube.execute("us-1", "unstaged")
    body = kube.wait_finished("us-1")
    assert body["status"]["phase"] == "Succeeded"
    assert all(gates(j) == [] for j in kube.jobs("us-1"))
    assert len(kube.jobs("us-1")) == 2
