"""Issue 10, the engine's half, on the real control plane: nothing the operator is handed
makes it create a privileged pod, read a planted Secret, wedge a run or leak a secret.

Cases:
- pod security: a step's securityContext is merged over the restricted defaults
  in the created Job; a privileged step makes the Runbook Ready=False
  (PrivilegedStep, naming step and field) and its execution Failed with that
  reason and no Job; a service account outside the allowlist is
  ServiceAccountNotAllowed; an operator started with --allow-privileged-namespace
  for the namespace runs the same privileged step (and root implies
  runAsNonRoot false); a run started there whose privileged step comes after the
  allowance was withdrawn fails that step (PrivilegedStep) without a Job; the
  same class through other fields: a pod annotation setting an unconfined AppArmor
  profile, an SELinux spc_t type, capabilities added as "sys_admin", is refused
  naming each field, and root as a string "0" is InvalidStep at apply;
- names: executions named with 63, 64 and 253 characters (of a Runbook named with
  253) succeed; label values are at most 63 characters with the full names in
  annotations; Job names of exactly 63 and 64 characters;
- poison: termination messages nested 2,000 deep, with a \\ud800 escape and of
  20 KB leave the step Succeeded with "outputs ignored" and the run goes on; an
  execution whose frozen spec was corrupted fails with InternalError (status,
  condition, Event) after a few passes while another execution runs normally;
- secret parameters: with a Secret planted under the name the operator used to
  give it, the Job reads the Secret named in status.paramsSecret, created by the
  operator (owner uid) and holding the real value; the planted one is untouched;
- planted pods: a pod someone else creates wearing a step Job's labels and the
  execution annotation, ending at once with a forged termination message, is not
  the step's pod: the step ends with the real pod's outputs;
- planted Jobs (no admission policies here): a Job created before the operator's,
  under the next step's name, with the run as controller and the step's labels but
  another command and a forged termination message, is not adopted: that step fails
  ForeignJob naming the Job (history, Warning Event), its forged outputs never reach
  the status, the `when` branch on them is skipped and the run fails;
- the operator's own Job is still adopted after a lost status write: with the
  operator stopped once it has created a step's Job (a secret and a public
  param, an upstream step's outputs in its env), the status is set back to
  before that Job (the step Pending, no params Secret recorded); the restarted
  operator compares the Job as the API server stores it with the one it builds
  (reading the params Secret the lost pass created), adopts it (as newer than
  the status or met at create; the same uid),
  creates no second Job, and the run Succeeds with the step's real outputs;
- redaction: an operator logging at DEBUG logs each run's resolved parameters
  with the secret values [REDACTED] by the production log pipeline, and writes
  them nowhere else;
- CircuitPolicy validity: a contradictory policy gets Ready=False
  (ContradictorySettings) with observedGeneration, its guarded step fails with
  CircuitPolicyInvalid; fixed, it becomes Ready=True at the new generation;
- observedGeneration: an execution's status follows its generation when the spec
  changes (cancel).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_json_logs
from kube import OUTCOME, Kube, planted_job, step, wait_for

from operator_process import OperatorProcess
from runbook_operator.engine.names import job_name, label_value

pytestmark = pytest.mark.integration


@contextmanager
def operator_with(cluster: Any, operator: OperatorProcess, log_dir: Path,
                  *args: str) -> Iterator[OperatorProcess]:
    """In place of the session's operator, one started with ``args``."""
    proc = OperatorProcess(cluster.kubeconfig, log_dir, extra_args=list(args))
    operator.stop()  # one operator at a time
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        operator.start()


def ready(kube: Kube, kind: str, name: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = kube.get(kind, name) or {}
        for c in (body.get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == status:
                return body
        return None
    return wait_for(f"{kind} {name} Ready={status}", probe, timeout=60)


# -- pod security ------------------------------------------------------------------------


def test_security_context_is_merged_over_the_defaults(kube: Kube) -> None:
    kube.ready_runbook("merged", {"steps": [step("a", securityContext={
        "readOnlyRootFilesystem": True, "runAsUser": 1000})]})
    kube.execute("merged-1", "merged")
    assert kube.wait_finished("merged-1")["status"]["phase"] == "Succeeded"
    (job,) = kube.jobs("merged-1")
    pod = job.spec.template.spec
    sc = pod.containers[0].security_context
    assert sc.read_only_root_filesystem is True and sc.run_as_user == 1000
    assert sc.run_as_non_root is True and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"] and sc.seccomp_profile.type == "RuntimeDefault"
    assert pod.security_context.run_as_non_root is True


def test_privileged_steps_are_refused(kube: Kube) -> None:
    kube.runbook("root", {"steps": [step("ok"), step("escalate", after=["ok"],
                                                      securityContext={"privileged": True})]})
    body = ready(kube, "runbooks", "root", "False")
    (cond,) = body["status"]["conditions"]
    assert cond["reason"] == "PrivilegedStep"
    assert "escalate" in cond["message"] and "securityContext.privileged" in cond["message"]
    kube.execute("root-1", "root")
    status = kube.wait_finished("root-1")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PrivilegedStep")
    assert "securityContext.privileged" in status["message"]
    assert kube.jobs("root-1") == []

    kube.runbook("sa", {"serviceAccountName": "cluster-admin-ish", "steps": [step("a")]})
    (cond,) = ready(kube, "runbooks", "sa", "False")["status"]["conditions"]
    assert cond["reason"] == "ServiceAccountNotAllowed" and "runbook-runner" in cond["message"]


def test_the_privileged_class_through_other_fields_is_refused(kube: Kube) -> None:
    apparmor = "container.apparmor.security.beta.kubernetes.io/step"
    kube.runbook("sideways", {"steps": [
        step("a", podMetadata={"annotations": {apparmor: "unconfined"}}),
        step("b", securityContext={"seLinuxOptions": {"type": "spc_t"}}),
        step("c", securityContext={"capabilities": {"add": ["sys_admin"]}})]})
    body = ready(kube, "runbooks", "sideways", "False")
    (cond,) = body["status"]["conditions"]
    assert cond["reason"] == "PrivilegedStep", cond
    for field in (f"podMetadata.annotations[{apparmor}]", "securityContext.seLinuxOptions.type",
                  "securityContext.capabilities.add"):
        assert field in cond["message"], cond["message"]
    kube.execute("sideways-1", "sideways")
    status = kube.wait_finished("sideways-1")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "PrivilegedStep")
    assert kube.jobs("sideways-1") == []

    kube.runbook("typo", {"steps": [step("a", securityContext={"runAsUser": "0"})]})
    (cond,) = ready(kube, "runbooks", "typo", "False")["status"]["conditions"]
    assert cond["reason"] == "InvalidStep" and "securityContext.runAsUser" in cond["message"]


def test_an_allowed_namespace_may_run_privileged_steps(kube: Kube, cluster: Any,
                                                       operator: OperatorProcess,
                                                       tmp_path: Path) -> None:
    with operator_with(cluster, operator, tmp_path / "allowed",
                       "--allow-privileged-namespace", kube.ns):
        kube.ready_runbook("root", {"steps": [step("as-root", securityContext={
            "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}})]})
        kube.execute("root-1", "root")
        assert kube.wait_finished("root-1")["status"]["phase"] == "Succeeded"
        (job,) = kube.jobs("root-1")
        sc = job.spec.template.spec.containers[0].security_context
        assert sc.run_as_user == 0 and sc.run_as_non_root is False
        assert sc.capabilities.add == ["NET_ADMIN"] and sc.capabilities.drop == ["ALL"]
        # A run started while allowed, whose privileged step comes after the
        # allowance is withdrawn (the session's operator has none).
        kube.ready_runbook("later", {"steps": [step("first", duration="8s"), step(
            "privileged", after=["first"], securityContext={"privileged": True})]})
        kube.execute("later-1", "later")
        kube.wait_phase("later-1", "Running")
    status = kube.wait_finished("later-1")["status"]
    st = status["steps"]["privileged"]
    assert (status["phase"], st["phase"], st["reason"]) == ("Failed", "Failed", "PrivilegedStep")
    assert [j.metadata.name for j in kube.jobs("later-1")] == ["later-1-first-1"]
    assert_json_logs(tmp_path / "allowed")


# -- names -------------------------------------------------------------------------------


def test_names_up_to_253_characters_run(kube: Kube) -> None:
    runbook = "r" * 253
    kube.ready_runbook(runbook, {"steps": [step("a"), step("b", after=["a"])]})
    names = ["x" * 63, "y" * 64, "z" * 253,
             "j" * (63 - len("-a-1")),  # Job name of exactly 63 characters
             "k" * (64 - len("-a-1"))]  # and of 64: shortened with a hash
    for name in names:
        kube.execute(name, runbook)
    for name in names:
        status = kube.wait_finished(name)["status"]
        assert status["phase"] == "Succeeded", (len(name), status)
        jobs = kube.jobs(name)  # by the shortened label: the selector finds them all
        assert sorted(j.metadata.name for j in jobs) == sorted(
            st["job"] for st in status["steps"].values())
        for job in jobs:
            assert len(job.metadata.name) <= 63
            assert job.metadata.labels["runbooks.dev/execution"] == label_value(name)
            assert job.metadata.labels["runbooks.dev/runbook"] == label_value(runbook)
            assert job.metadata.annotations["runbooks.dev/execution"] == name
            assert job.metadata.annotations["runbooks.dev/runbook"] == runbook
            assert all(len(v) <= 63 for v in job.metadata.labels.values())
    assert kube.execution("j" * 59)["status"]["steps"]["a"]["job"] == "j" * 59 + "-a-1"
    hashed = kube.execution("k" * 60)["status"]["steps"]["a"]["job"]
    assert len(hashed) == 63 and hashed.endswith("-1") and hashed != "k" * 60 + "-a-1"


# -- poison inputs -----------------------------------------------------------------------


def test_poison_termination_messages_never_stop_a_run(kube: Kube) -> None:
    nested = "[" * 2000 + "]" * 2000  # 4,000 bytes: json.loads hit the recursion limit
    kube.ready_runbook("poison", {"steps": [
        step("deep", message=nested), step("surrogate", message='{"a": "\\ud800"}'),
        step("huge", message=json.dumps({"a": "x" * 20000})),
        step("after", after=["deep", "surrogate", "huge"])]})
    kube.execute("poison-1", "poison")
    status = kube.wait_finished("poison-1")["status"]
    assert status["phase"] == "Succeeded", status
    for name, why in (("deep", "nested deeper"), ("surrogate", "not valid UTF-8"),
                      ("huge", "more than 4096")):
        st = status["steps"][name]
        assert st["phase"] == "Succeeded" and "outputs" not in st
        assert st["message"].startswith("outputs ignored") and why in st["message"], st


def test_a_reconcile_that_keeps_failing_fails_the_execution(kube: Kube,
                                                            operator: OperatorProcess) -> None:
    kube.ready_runbook("slow", {"steps": [step("a", duration="120s")]})
    kube.execute("corrupt-1", "slow")
    kube.wait_phase("corrupt-1", "Running")
    wait_for("the Job", lambda: kube.jobs("corrupt-1"))
    # A status the operator cannot parse: a fresh process has no cached spec to use.
    operator.stop()
    kube.custom.patch_namespaced_custom_object_status(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions", "corrupt-1",
        {"status": {"runbookSpec": {"steps": "not a list"}}})
    operator.start()
    kube.ready_runbook("fine", {"steps": [step("a"), step("b", after=["a"])]})
    kube.execute("fine-1", "fine")
    assert kube.wait_finished("fine-1", timeout=60)["status"]["phase"] == "Succeeded"
    status = kube.wait_finished("corrupt-1", timeout=90)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InternalError")
    assert "times in a row: ValidationError" in status["message"]
    assert status["conditions"][0]["reason"] == "InternalError"
    wait_for("the InternalError Event", lambda: any(
        e.reason == "InternalError" and e.type == "Warning" for e in kube.events("corrupt-1")))


# -- secret parameters and redaction -----------------------------------------------------


def test_a_planted_secret_is_never_read(kube: Kube) -> None:
    planted = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "plant-1-params",
                            "labels": {"app.kubernetes.io/managed-by": "runbook-operator"}},
               "stringData": {"token": "planted-value"}}
    kube.core.create_namespaced_secret(kube.ns, planted)
    kube.ready_runbook("plant", {"params": [{"name": "token", "secret": True}],
                                 "steps": [step("use")]})
    kube.execute("plant-1", "plant", {"token": "the-real-token"})
    body = kube.wait_finished("plant-1")
    assert body["status"]["phase"] == "Succeeded"
    name = body["status"]["paramsSecret"]
    assert name != "plant-1-params" and name.startswith("plant-1-params-")
    (job,) = kube.jobs("plant-1")
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env["PARAM_TOKEN"].value_from.secret_key_ref.name == name
    secret = kube.core.read_namespaced_secret(name, kube.ns)
    assert [o.uid for o in secret.metadata.owner_references] == [body["metadata"]["uid"]]
    assert base64.b64decode(secret.data["token"]).decode() == "the-real-token"
    again = kube.core.read_namespaced_secret("plant-1-params", kube.ns)
    assert base64.b64decode(again.data["token"]).decode() == "planted-value"
    assert not again.metadata.owner_references


def test_a_planted_pod_is_not_the_steps_pod(kube: Kube) -> None:
    kube.ready_runbook("forge", {"steps": [
        step("check", duration="20s", message='{"healthy": false}'),
        step("act", after=["check"], when="steps.check.outputs.healthy")]})
    kube.execute("forge-1", "forge")
    # The check's Job (act's may be staged beside it, gated).
    (job,) = wait_for("the check's Job", lambda: [
        j for j in kube.jobs("forge-1") if (j.metadata.labels or {}).get(
            "runbooks.dev/step") == "check"])
    name = job.metadata.name
    kube.core.create_namespaced_pod(kube.ns, {
        "metadata": {"name": "forged", "labels": {
            "runbooks.dev/execution": "forge-1", "runbooks.dev/step": "check",
            "job-name": name, "batch.kubernetes.io/job-name": name},
            "annotations": {"runbooks.dev/execution": "forge-1",
                            OUTCOME + "message": '{"healthy": true}'}},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "step", "image": "busybox:1.37", "command": ["true"]}]}})
    wait_for("the forged pod to end", lambda: (
        kube.core.read_namespaced_pod("forged", kube.ns).status.phase == "Succeeded"))
    status = kube.wait_finished("forge-1")["status"]
    assert status["steps"]["check"]["outputs"] == {"healthy": False}, status["steps"]
    assert status["steps"]["act"]["phase"] == "Skipped"


def test_a_planted_job_is_not_adopted(kube: Kube) -> None:
    kube.ready_runbook("plant", {"steps": [
        {"name": "gate", "type": "approval"},
        step("check", after=["gate"], message='{"healthy": false}'),
        step("act", after=["check"], when="steps.check.outputs.healthy")]})
    kube.execute("plant-1", "plant")
    run = kube.wait_phase("plant-1", "WaitingForApproval")
    name = job_name("plant-1", "check", 1)
    kube.batch.create_namespaced_job(kube.ns, planted_job(
        "plant-1", run["metadata"]["uid"], "check", 1, name, '{"healthy": true}'))
    wait_for("the planted Job to complete", lambda: any(
        c.type == "Complete" and c.status == "True"
        for c in kube.batch.read_namespaced_job(name, kube.ns).status.conditions or []))
    kube.patch("runbookexecutions", "plant-1", {"spec": {"approvals": [
        {"step": "gate", "decision": "Approve", "by": "me"}]}})
    status = kube.wait_finished("plant-1")["status"]
    check = status["steps"]["check"]
    assert (check["phase"], check.get("reason")) == ("Failed", "ForeignJob"), check
    assert name in check["message"] and "not the Job the operator builds" in check["message"]
    assert "outputs" not in check, check
    assert status["steps"]["act"]["phase"] == "Skipped"
    assert status["phase"] == "Failed"
    assert any(h.get("step") == "check" and name in (h.get("message") or "")
               for h in status["history"])
    assert any(e.type == "Warning" and e.reason == "StepFailed" and name in e.message
               for e in kube.events("plant-1"))
    # The operator never ran the step: the only Job under its name is the planted one.
    (job,) = [j for j in kube.jobs("plant-1")
              if j.metadata.labels.get("runbooks.dev/step") == "check"]
    assert job.spec.template.spec.containers[0].command[0] == "sh"


def test_the_operators_own_job_is_adopted_after_a_lost_status_write(
        kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("lost", {
        "params": [{"name": "token", "secret": True}, {"name": "region"}],
        "steps": [step("first", message='{"zone": "b"}'),
                  step("check", after=["first"], duration="3s",
                       message='{"healthy": true}',
                       env=[{"name": "POD", "valueFrom": {"fieldRef": {
                           "fieldPath": "metadata.name"}}}]),
                  step("act", after=["check"], when="steps.check.outputs.healthy")]})
    kube.execute("lost-1", "lost", {"token": "s3cr3t-value", "region": "eu"})
    name = job_name("lost-1", "check", 1)
    (made,) = wait_for("the check Job", lambda: [j for j in kube.jobs("lost-1")
                                                 if j.metadata.name == name])
    operator.stop()
    try:
        # The status write that named check's Job (and the params Secret), lost: the
        # next pass finds the Job newer than the status, or meets it at create.
        kube.custom.patch_namespaced_custom_object_status(
            "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions", "lost-1",
            {"status": {"paramsSecret": None, "steps": {
                "check": {"phase": "Pending", "attempts": 0, "job": None, "startedAt": None,
                          "reason": None, "message": None}}}})
        status = kube.execution("lost-1")["status"]
        assert status["steps"]["check"]["phase"] == "Pending" and "paramsSecret" not in status
    finally:
        operator.start()
    status = kube.wait_finished("lost-1")["status"]
    assert status["phase"] == "Succeeded", status
    check = status["steps"]["check"]
    assert (check["attempts"], check["job"], check["outputs"]) == (1, name, {"healthy": True})
    # Taken as it was, never made again.
    assert kube.batch.read_namespaced_job(name, kube.ns).metadata.uid == made.metadata.uid
    assert sorted(j.metadata.name for j in kube.jobs("lost-1")) == [
        "lost-1-act-1", "lost-1-check-1", "lost-1-first-1"]


def test_secret_params_are_redacted_in_debug_logs(kube: Kube, cluster: Any,
                                                  operator: OperatorProcess,
                                                  tmp_path: Path) -> None:
    canary = "canary-0b7c-debug"
    with operator_with(cluster, operator, tmp_path / "debug", "--log-level", "DEBUG") as proc:
        kube.ready_runbook("debug", {"params": [{"name": "password_like", "secret": True},
                                                {"name": "value", "secret": True}],
                                     "steps": [step("a"), step("b", after=["a"])]})
        kube.execute("debug-1", "debug", {"password_like": "unused-1234", "value": canary})
        assert kube.wait_finished("debug-1")["status"]["phase"] == "Succeeded"
        text = proc.log_path.read_text()
    records = [json.loads(line) for line in text.splitlines()]
    (start,) = [r for r in records if "starts with params" in r["event"]]
    # The line exists, names the execution, and the pipeline removed both values.
    assert "debug-1" in start["event"] and start["event"].count("[REDACTED]") == 2
    assert canary not in text and "unused-1234" not in text
    assert_json_logs(tmp_path / "debug")


# -- CircuitPolicy validity and observedGeneration -----------------------------------------


def test_an_invalid_policy_says_so_and_fails_its_steps(kube: Kube) -> None:
    kube.circuit_policy("bad", openDuration="10m", maxOpenDuration="1m")
    body = ready(kube, "circuitpolicies", "bad", "False")
    (cond,) = body["status"]["conditions"]
    assert cond["reason"] == "ContradictorySettings" and "maxOpenDuration" in cond["message"]
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 1
    kube.ready_runbook("guarded", {"steps": [step("call", circuit={"policy": "bad"})]})
    kube.execute("guarded-1", "guarded")
    st = kube.wait_finished("guarded-1")["status"]["steps"]["call"]
    assert (st["phase"], st["reason"]) == ("Failed", "CircuitPolicyInvalid")
    assert "maxOpenDuration 1m is shorter" in st["message"]
    kube.patch("circuitpolicies", "bad", {"spec": {"maxOpenDuration": "1h"}})
    body = ready(kube, "circuitpolicies", "bad", "True")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2


def test_execution_observed_generation_follows_the_spec(kube: Kube) -> None:
    kube.ready_runbook("long", {"steps": [step("a", duration="120s")]})
    kube.execute("long-1", "long")
    body = kube.wait_phase("long-1", "Running")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    kube.patch("runbookexecutions", "long-1", {"spec": {"cancel": True}})
    body = kube.wait_finished("long-1")
    assert body["status"]["phase"] == "Cancelled"
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"] == 2
