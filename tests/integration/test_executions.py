"""The execution engine against the real control plane, step outcomes driven through kwok.

Cases (issue 3): a 3-step chain; fan-out and join with and without parallelism
(a pod watch: never more step pods not terminated than the parallelism, and the
join's pod only after every branch's pod ended); a failed step's reason is its
container's (``Error``), read at the pod's exit; a decision tree on outputs; a failing step with
finally; retries with backoff gaps; step and execution timeouts; cancel; invalid
and valid parameters; editing the Runbook mid-run; SIGKILL of the operator at
several points; approvals and waits; retention; example runbooks end to end.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kube import JobWatch, Kube, PodWatch, step, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def steps_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return body["status"]["steps"]


def test_three_step_chain_succeeds_with_owned_jobs(kube: Kube, kubectl: Any) -> None:
    kube.ready_runbook("chain", {"steps": [step("a"), step("b", after=["a"]),
                                           step("c", after=["b"])]})
    kube.execute("chain-1", "chain")
    body = kube.wait_finished("chain-1")
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "3/3"
    assert [status["steps"][s]["phase"] for s in "abc"] == ["Succeeded"] * 3
    for name in "abc":
        st = status["steps"][name]
        assert st["attempts"] == 1 and st["exitCode"] == 0
        assert st["job"] == f"chain-1-{name}-1"
        assert st["startedAt"] and st["finishedAt"]
    assert status["runbook"]["generation"] == 1 and status["runbookSpec"]["steps"]
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "True"
    jobs = kube.jobs("chain-1")
    assert sorted(j.metadata.name for j in jobs) == ["chain-1-a-1", "chain-1-b-1", "chain-1-c-1"]
    for job in jobs:
        (owner,) = job.metadata.owner_references
        assert owner.kind == "RunbookExecution" and owner.uid == body["metadata"]["uid"]
        assert owner.controller is True
        pod = job.spec.template.spec
        assert pod.security_context.run_as_non_root is True
        assert pod.containers[0].security_context.capabilities.drop == ["ALL"]
        assert job.spec.backoff_limit == 0 and job.spec.ttl_seconds_after_finished
    # a.started < b.started < c.started: the chain ran in order
    created = sorted(jobs, key=lambda j: j.metadata.creation_timestamp)
    assert [j.metadata.labels["runbooks.dev/step"] for j in created] == ["a", "b", "c"]
    out = kubectl("get", "rbx", "chain-1", "-n", kube.ns)
    assert "Succeeded" in out and "3/3" in out and "chain" in out
    wanted = {"ExecutionStarted", "StepRunning", "StepSucceeded", "ExecutionSucceeded"}
    # Events are posted off the reconcile path, so they may trail the status a little.
    wait_for("the execution's Events",
             lambda: wanted <= {e.reason for e in kube.events("chain-1")})


@pytest.mark.parametrize("parallelism", [4, 2])
def test_fan_out_and_join_respects_parallelism(kube: Kube, k8s_api: Any,
                                               parallelism: int) -> None:
    branches = [step(f"b{i}", after=["start"], duration="3s") for i in range(4)]
    kube.ready_runbook("fan", {"parallelism": parallelism, "steps": [
        step("start"), *branches, step("join", after=[f"b{i}" for i in range(4)])]})
    # Parallelism is about step pods that have not terminated: the operator acts on a
    # pod's ending, before the Job controller marks its Job Complete.
    with PodWatch(k8s_api, kube.ns) as pods:
        kube.execute("fan-1", "fan")
        body = kube.wait_finished("fan-1")
    assert body["status"]["phase"] == "Succeeded"
    assert {f"b{i}" for i in range(4)} <= set(pods.steps.values())
    if parallelism == 4:
        assert pods.max_running >= 4, "all four branches should run at the same time"
    else:
        assert pods.max_running <= 2, f"{pods.max_running} step pods ran at once with " \
            "parallelism 2"
        assert pods.max_running == 2
    # the join's pod was let run only after every branch's pod had terminated (it may
    # exist before, gated: a staged Job, docs/staging.md)
    join_free = pods.seen("ungated", "join")
    assert all(pods.seen("terminated", f"b{i}") < join_free for i in range(4))


def test_decision_tree_branches_on_outputs(kube: Kube) -> None:
    kube.ready_runbook("tree", {"steps": [
        step("probe", exit_code=1, message='{"healthy": false}', continueOnFailure=True),
        step("clear-cache", after=["probe"], when="!steps.probe.outputs.healthy"),
        step("all-good", after=["probe"], when="steps.probe.outputs.healthy"),
    ]})
    kube.execute("tree-1", "tree")
    body = kube.wait_finished("tree-1")
    steps = steps_of(body)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert steps["probe"]["phase"] == "Failed" and steps["probe"]["outputs"] == {"healthy": False}
    assert steps["clear-cache"]["phase"] == "Succeeded"
    assert steps["all-good"]["phase"] == "Skipped" and steps["all-good"]["reason"] == "WhenFalse"


def test_failing_step_fails_execution_and_runs_finally(kube: Kube) -> None:
    kube.ready_runbook("failing", {
        "steps": [step("a"), step("b", after=["a"], exit_code=3, message="disk full"),
                  step("c", after=["b"]), step("d", after=["c"])],
        "finally": [step("report")],
    })
    kube.execute("failing-1", "failing")
    body = kube.wait_finished("failing-1")
    status, steps = body["status"], steps_of(body)
    assert status["phase"] == "Failed" and status["reason"] == "StepFailed"
    assert "'b'" in status["message"]
    assert steps["b"]["phase"] == "Failed" and steps["b"]["exitCode"] == 3
    assert "disk full" in steps["b"]["message"]
    assert steps["b"]["reason"] == "Error"  # the container's reason: acted on at its exit
    for later in ("c", "d"):
        assert steps[later]["phase"] == "Skipped" and steps[later]["reason"] == "UpstreamFailed"
    assert steps["report"]["phase"] == "Succeeded"
    assert {j.metadata.name for j in kube.jobs("failing-1")} == {
        "failing-1-a-1", "failing-1-b-1", "failing-1-report-1"}


def test_retries_with_backoff_until_success(kube: Kube, k8s_api: Any) -> None:
    retry = {"limit": 3, "backoff": {"initial": "1s", "factor": 2, "max": "1m", "jitter": 0}}
    kube.ready_runbook("flaky", {"steps": [
        step("flaky", per_attempt={1: 1, 2: 1}, exit_code=0, retry=retry)]})
    with JobWatch(k8s_api, kube.ns) as watch:
        kube.execute("flaky-1", "flaky")
        body = kube.wait_finished("flaky-1")
    st = steps_of(body)["flaky"]
    assert body["status"]["phase"] == "Succeeded"
    assert st["attempts"] == 3
    names = [f"flaky-1-flaky-{n}" for n in (1, 2, 3)]
    assert sorted(j.metadata.name for j in kube.jobs("flaky-1")) == names
    # gap between attempt n failing (its pod's container finishedAt, which the backoff
    # counts from) and attempt n+1 being created ~ 1s, 2s (no jitter); object
    # timestamps have one-second resolution, hence the slack below.
    ended = {}
    for pod in kubernetes.client.CoreV1Api(k8s_api).list_namespaced_pod(kube.ns).items:
        term = pod.status.container_statuses[0].state.terminated
        ended[pod.metadata.labels["job-name"]] = term.finished_at
    for n, expected in ((1, 1.0), (2, 2.0)):
        gap = (watch.created[names[n]] - ended[names[n - 1]]).total_seconds()
        assert expected - 1.0 <= gap <= expected + 10.0, f"gap after attempt {n}: {gap}s"
    history = [h["event"] for h in body["status"]["history"] if h.get("step") == "flaky"]
    assert history.count("StepRetrying") == 2


def test_step_timeout_fails_with_deadline_exceeded(kube: Kube) -> None:
    kube.ready_runbook("slow-step", {"steps": [step("slow", duration="10m", timeout="2s")]})
    kube.execute("slow-step-1", "slow-step")
    body = kube.wait_finished("slow-step-1")
    st = steps_of(body)["slow"]
    assert body["status"]["phase"] == "Failed"
    assert st["phase"] == "Failed" and st["reason"] == "DeadlineExceeded"
    (job,) = kube.jobs("slow-step-1")
    assert job.spec.active_deadline_seconds == 2


def test_execution_timeout_cancels_and_runs_finally(kube: Kube) -> None:
    kube.ready_runbook("slow-run", {"timeout": "3s", "steps": [step("long", duration="10m"),
                                                               step("after", after=["long"])],
                                    "finally": [step("cleanup")]})
    kube.execute("slow-run-1", "slow-run")
    body = kube.wait_finished("slow-run-1")
    status, steps = body["status"], steps_of(body)
    assert status["phase"] == "Failed" and status["reason"] == "Timeout"
    assert steps["long"]["phase"] == "Failed" and steps["long"]["reason"] == "Timeout"
    assert steps["after"]["phase"] == "Skipped"
    assert steps["cleanup"]["phase"] == "Succeeded"
    wait_for("the timed-out Job to be deleted",
             lambda: "slow-run-1-long-1" not in {j.metadata.name for j in kube.jobs("slow-run-1")})


def test_cancel_stops_running_jobs(kube: Kube) -> None:
    kube.ready_runbook("cancellable", {"steps": [step("long", duration="10m")],
                                       "finally": [step("notify")]})
    kube.execute("cancel-1", "cancellable")
    wait_for("the step to run", lambda: steps_of(kube.execution("cancel-1")).get("long", {})
             .get("phase") == "Running" if kube.execution("cancel-1").get("status") else None)
    asked = time.monotonic()
    kube.patch("runbookexecutions", "cancel-1", {"spec": {"cancel": True}})
    body = kube.wait_phase("cancel-1", "Cancelled", timeout=30)
    elapsed = time.monotonic() - asked
    print(f"cancel took {elapsed:.2f}s")
    assert steps_of(body)["long"]["reason"] == "Cancelled"
    assert steps_of(body)["notify"]["phase"] == "Succeeded"
    wait_for("the cancelled Job to be deleted",
             lambda: "cancel-1-long-1" not in {j.metadata.name for j in kube.jobs("cancel-1")})


def test_invalid_params_fail_before_any_job(kube: Kube) -> None:
    kube.ready_runbook("typed", {
        "params": [{"name": "provider", "enum": ["openai", "anthropic"], "default": "openai"},
                   {"name": "replicas", "type": "integer", "required": True},
                   {"name": "token", "secret": True}],
        "steps": [step("use")]})
    kube.execute("typed-bad", "typed", {"provider": "bogus", "replicas": "three"})
    body = kube.wait_finished("typed-bad")
    status = body["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidParams"
    assert "provider" in status["message"] and "replicas" in status["message"]
    assert kube.jobs("typed-bad") == []

    kube.execute("typed-good", "typed", {"replicas": 3, "token": "s3cr3t-canary"})
    body = kube.wait_finished("typed-good")
    assert body["status"]["phase"] == "Succeeded"
    (job,) = kube.jobs("typed-good")
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env["PARAM_PROVIDER"].value == "openai"
    assert env["PARAM_REPLICAS"].value == "3"
    assert json.loads(env["RUNBOOK_PARAMS"].value) == {"provider": "openai", "replicas": 3}
    # the secret travels by reference only
    assert env["PARAM_TOKEN"].value is None
    # in the Secret the operator created and recorded (its name chosen by the apiserver)
    assert env["PARAM_TOKEN"].value_from.secret_key_ref.name == \
        body["status"]["paramsSecret"]
    assert "s3cr3t-canary" not in json.dumps(job.to_dict(), default=str)
    assert "s3cr3t-canary" not in json.dumps(kube.execution("typed-good")["status"])


def test_editing_runbook_mid_run_changes_nothing(kube: Kube) -> None:
    kube.ready_runbook("frozen", {"steps": [step("first", duration="3s"),
                                            step("second", after=["first"])]})
    kube.execute("frozen-1", "frozen")
    wait_for("first step running", lambda: kube.jobs("frozen-1"))
    kube.patch("runbooks", "frozen", {"spec": {"steps": [
        step("first", duration="3s"), step("second", after=["first"], image="alpine:3.21"),
        step("third", after=["second"])]}})
    body = kube.wait_finished("frozen-1")
    assert body["status"]["phase"] == "Succeeded"
    assert set(steps_of(body)) == {"first", "second"}
    assert body["status"]["runbook"]["generation"] == 1
    images = {j.metadata.name: j.spec.template.spec.containers[0].image
              for j in kube.jobs("frozen-1")}
    assert images == {"frozen-1-first-1": "busybox:1.37", "frozen-1-second-1": "busybox:1.37"}


def test_operator_killed_repeatedly_loses_and_repeats_nothing(kube: Kube, operator: Any) -> None:
    retry = {"limit": 2, "backoff": {"initial": "1s", "factor": 1, "max": "2s", "jitter": 0.5}}
    kube.ready_runbook("crashy", {"parallelism": 2, "steps": [
        step("s1", duration="1s"),
        step("s2", after=["s1"], per_attempt={1: 4}, exit_code=0, retry=retry),
        step("s3", after=["s1"], duration="2s"),
        step("s4", after=["s2", "s3"], per_attempt={1: 4, 2: 4}, exit_code=0, retry=retry),
        step("s5", after=["s4"]),
        step("s6", after=["s5"], duration="1s"),
    ]})
    kube.execute("crashy-1", "crashy")
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        phase = (kube.execution("crashy-1").get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed", "Cancelled"):
            break
        time.sleep(rng.uniform(0.3, 2.0))
        operator.restart()
        kills += 1
    body = kube.wait_finished("crashy-1", timeout=120)
    assert kills >= 3, "the operator should have been killed several times mid-run"
    steps = steps_of(body)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    expected_attempts = {"s1": 1, "s2": 2, "s3": 1, "s4": 3, "s5": 1, "s6": 1}
    assert {n: s["attempts"] for n, s in steps.items()} == expected_attempts
    expected_jobs = {f"crashy-1-{n}-{a}" for n, k in expected_attempts.items()
                     for a in range(1, k + 1)}
    assert {j.metadata.name for j in kube.jobs("crashy-1")} == expected_jobs


def test_approval_approved_rejected_and_timed_out(kube: Kube) -> None:
    kube.ready_runbook("gated", {"steps": [
        step("prepare"),
        {"name": "approve", "type": "approval", "dependsOn": ["prepare"],
         "approval": {"timeout": "4s"}},
        step("act", after=["approve"]),
    ]})
    for name in ("gated-yes", "gated-no", "gated-late"):
        kube.execute(name, "gated")
    for name in ("gated-yes", "gated-no"):
        kube.wait_phase(name, "WaitingForApproval")
    kube.patch("runbookexecutions", "gated-yes", {"spec": {"approvals": [
        {"step": "approve", "decision": "Approve", "comment": "go", "by": "alice"}]}})
    kube.patch("runbookexecutions", "gated-no", {"spec": {"approvals": [
        {"step": "approve", "decision": "Reject", "comment": "not now"}]}})
    yes, no, late = (kube.wait_finished(n) for n in ("gated-yes", "gated-no", "gated-late"))
    assert yes["status"]["phase"] == "Succeeded"
    assert steps_of(yes)["approve"]["reason"] == "Approved"
    assert "alice" in steps_of(yes)["approve"]["message"]
    assert no["status"]["phase"] == "Failed" and steps_of(no)["approve"]["reason"] == "Rejected"
    assert steps_of(no)["act"]["phase"] == "Skipped"
    assert late["status"]["phase"] == "Failed"
    assert steps_of(late)["approve"]["reason"] == "ApprovalTimeout"


def test_wait_step_waits(kube: Kube) -> None:
    kube.ready_runbook("pause", {"steps": [
        {"name": "settle", "type": "wait", "wait": {"duration": "2s"}},
        step("check", after=["settle"])]})
    kube.execute("pause-1", "pause")
    body = kube.wait_finished("pause-1")
    settle = steps_of(body)["settle"]
    assert body["status"]["phase"] == "Succeeded" and settle["reason"] == "Waited"
    from datetime import datetime
    started = datetime.fromisoformat(settle["startedAt"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(settle["finishedAt"].replace("Z", "+00:00"))
    assert (finished - started).total_seconds() >= 2.0
    assert kube.jobs("pause-1")[0].metadata.name == "pause-1-check-1"


def test_retention_deletes_oldest_finished(kube: Kube) -> None:
    kube.ready_runbook("kept", {"history": {"successfulLimit": 2, "failedLimit": 1},
                                "steps": [step("only")]})
    for i in range(4):
        kube.execute(f"kept-{i}", "kept")
        kube.wait_finished(f"kept-{i}")
    wait_for("retention to delete the two oldest",
             lambda: kube.get("runbookexecutions", "kept-0") is None
             and kube.get("runbookexecutions", "kept-1") is None)
    assert kube.get("runbookexecutions", "kept-2") is not None
    assert kube.get("runbookexecutions", "kept-3") is not None


@pytest.mark.parametrize("example", ["system-health-check", "smoke-test"])
def test_example_runbooks_run_end_to_end(kube: Kube, example: str) -> None:
    doc = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    account = doc["spec"].get("serviceAccountName")
    if account:  # the examples run as a dedicated, least-privileged account
        kube.core.create_namespaced_service_account(kube.ns, {"metadata": {"name": account}})
    kube.ready_runbook(example, doc["spec"])
    kube.execute(f"{example}-1", example)
    body = kube.wait_finished(f"{example}-1", timeout=180)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert all(s["phase"] in ("Succeeded", "Skipped") for s in steps_of(body).values())


def test_job_deleted_behind_the_operators_back_fails_the_attempt(kube: Kube) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}
    kube.ready_runbook("vanish", {"steps": [
        step("long", per_attempt={1: 0}, duration="10m", retry=retry)]})
    kube.execute("vanish-1", "vanish")
    wait_for("the first Job", lambda: kube.jobs("vanish-1"))
    kube.batch.delete_namespaced_job("vanish-1-long-1", kube.ns,
                                     propagation_policy="Background")
    # The attempt fails as JobDeleted and the retry policy applies: attempt 2 starts.
    body = wait_for("a second attempt", lambda: (
        b := kube.execution("vanish-1"))["status"]["steps"]["long"]["attempts"] == 2 and b,
        timeout=90)
    history = [h for h in body["status"]["history"] if h.get("step") == "long"]
    assert any(h["event"] == "StepRetrying" and "JobDeleted" in h["message"]
               for h in history), history
