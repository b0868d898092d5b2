"""k8s.adoption: a Job found under a step's name is adopted only if it is the operator's build.

Cases:
- any Job the operator builds (hypothesis: steps with images, commands, args, env
  of values and field refs, securityContexts, timeouts, secret and public params,
  outputs, a service account) matches itself after plausible API server and Job
  controller defaulting (selector, controller labels, imagePullPolicy,
  terminationMessagePath, dnsPolicy, completions, the deprecated serviceAccount
  alias, empty lists dropped, fieldRef apiVersion), and with or without its
  TRACEPARENT (tracing on in one process, off in the next);
- any change to a security-relevant field of it (hypothesis over the fields: image,
  command, args, an env value or a new env var, a secretKeyRef, securityContext,
  serviceAccountName, a volume, a volume mount, an extra or init container,
  terminationMessagePath/Policy, activeDeadlineSeconds, backoffLimit, completions,
  a success policy, managedBy (another controller writing its status), suspend,
  restartPolicy, host namespaces, hostAliases, the pod's annotations, the Job's
  name) mismatches, naming the field;
- the run's controller reference: only a controller reference to the
  RunbookExecution kind of the runbooks.dev group with the run's uid counts;
- the params Secret's name is taken from a Job only in the operator's generateName
  form: a Job made by a pass whose status write was lost reads that pass's Secret
  and still matches; one reading any other Secret does not;
- the planner: a foreign Job newer than the status is not adopted, and the step
  whose attempt it names fails ``ForeignJob`` (history and a Warning event naming
  the Job) when it comes due, its forged outputs never in the status; a Job not
  checkable yet (``unverified_jobs``) is not adopted and fails nothing.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.api.common import API_VERSION
from runbook_operator.api.execution import ApprovalDecision, RunbookExecutionStatus
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.names import job_name
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import Observation, ObservedJob
from runbook_operator.engine.timeutil import fmt
from runbook_operator.k8s.adoption import foreign_reason, owned_by_execution, params_secret_in
from runbook_operator.k8s.jobs import JobContext, build_job

TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
ENV_NAME = st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.startswith(("PARAM_", "STEP_", "RUNBOOK_", "TRACEPARENT")))


@st.composite
def built_jobs(draw: st.DrawFn) -> dict[str, Any]:
    env = draw(st.dictionaries(ENV_NAME, st.one_of(
        TEXT.map(lambda v: {"value": v}),
        st.just({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})), max_size=3))
    step: dict[str, Any] = {
        "name": "b", "image": draw(TEXT), "dependsOn": ["a"],
        "env": [{"name": k, **v} for k, v in env.items()]}
    if draw(st.booleans()):
        step["command"] = draw(st.lists(TEXT, min_size=1, max_size=3))
    if draw(st.booleans()):
        step["args"] = draw(st.lists(TEXT, max_size=3))
    if draw(st.booleans()):
        step["timeout"] = f"{draw(st.integers(1, 10_000))}s"
    if draw(st.booleans()):
        step["securityContext"] = {"runAsUser": draw(st.integers(1, 65535)),
                                   "readOnlyRootFilesystem": draw(st.booleans())}
    spec_body: dict[str, Any] = {
        "params": [{"name": "p"}, {"name": "s", "secret": True}],
        "steps": [{"name": "a", "image": "x"}, step]}
    if draw(st.booleans()):
        spec_body["serviceAccountName"] = "runbook-runner"
    spec = RunbookSpec.model_validate(spec_body)
    ctx = JobContext(
        execution="run-1", namespace="ns", uid="u1", runbook="rb", spec=spec,
        params={"p": draw(TEXT), "s": "hush"}, secret_params=frozenset({"s"}),
        secret_name="run-1-params-ab1cd",
        outputs={"a": draw(st.dictionaries(TEXT, TEXT, max_size=2))}, ttl_seconds=60)
    traceparent = draw(st.sampled_from([None, "00-" + "1" * 32 + "-" + "2" * 16 + "-01"]))
    return build_job(ctx, spec.steps[1], 2, job_name("run-1", "b", 2), traceparent)


def defaulted(job: dict[str, Any]) -> dict[str, Any]:
    """``job`` as the API server stores it and the Job controller leaves it."""
    out = copy.deepcopy(job)
    out["metadata"].update(uid="job-uid", resourceVersion="7", generation=1)
    spec = out["spec"]
    spec.update(completions=1, parallelism=1, completionMode="NonIndexed", suspend=False,
                podReplacementPolicy="TerminatingOrFailed", manualSelector=False,
                selector={"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}})
    template = spec["template"]
    template["metadata"]["labels"].update({"batch.kubernetes.io/controller-uid": "job-uid",
                                           "batch.kubernetes.io/job-name": "x",
                                           "controller-uid": "job-uid", "job-name": "x"})
    pod = template["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler",
               terminationGracePeriodSeconds=30, enableServiceLinks=True,
               hostNetwork=False)
    if "serviceAccountName" in pod:
        pod["serviceAccount"] = pod["serviceAccountName"]
    for container in pod["containers"]:
        container.update(imagePullPolicy="IfNotPresent", resources={},
                         terminationMessagePath="/dev/termination-log")
        for entry in container["env"]:
            ref = (entry.get("valueFrom") or {}).get("fieldRef")
            if ref is not None:
                ref["apiVersion"] = "v1"
            if entry.get("value") == "":
                del entry["value"]  # omitempty
    return out


def container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


def pod(job: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = job["spec"]["template"]["spec"]
    return p


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(built_jobs(), st.booleans())
def test_an_operator_built_job_matches_itself_after_defaulting(job: dict[str, Any],
                                                               drop_trace: bool) -> None:
    observed = defaulted(job)
    if drop_trace:
        container(observed)["env"] = [e for e in container(observed)["env"]
                                      if e["name"] != "TRACEPARENT"]
    assert foreign_reason(job, observed) is None
    assert foreign_reason(job, job) is None


TAMPERING: dict[str, Any] = {
    "image": lambda j: container(j).update(image="evil:latest"),
    "command": lambda j: container(j).update(command=["sh", "-c", "echo forged"]),
    "args": lambda j: container(j).update(args=["--forge"]),
    "env value": lambda j: container(j)["env"][0].update(value="forged"),
    "env added": lambda j: container(j)["env"].append({"name": "LD_PRELOAD", "value": "/x"}),
    "secret ref": lambda j: next(e for e in container(j)["env"] if e.get("valueFrom"))
    .update(valueFrom={"secretKeyRef": {"name": "mine", "key": "s"}}),
    "securityContext": lambda j: container(j)["securityContext"].update(privileged=True),
    "pod securityContext": lambda j: pod(j)["securityContext"].update(runAsNonRoot=False),
    "serviceAccountName": lambda j: pod(j).update(serviceAccountName="admin"),
    "volume": lambda j: pod(j).update(volumes=[{"name": "v", "emptyDir": {}}]),
    "volumeMount": lambda j: container(j).update(volumeMounts=[{"name": "v",
                                                                "mountPath": "/v"}]),
    "extra container": lambda j: pod(j)["containers"].append({"name": "side", "image": "x"}),
    "init container": lambda j: pod(j).update(initContainers=[{"name": "i", "image": "x"}]),
    "terminationMessagePath": lambda j: container(j).update(terminationMessagePath="/tmp/m"),
    "terminationMessagePolicy": lambda j: container(j).update(terminationMessagePolicy="File"),
    "activeDeadlineSeconds": lambda j: j["spec"].update(activeDeadlineSeconds=99_999),
    "backoffLimit": lambda j: j["spec"].update(backoffLimit=5),
    "completions": lambda j: j["spec"].update(completions=3),
    "successPolicy": lambda j: j["spec"].update(successPolicy={"rules": [
        {"succeededCount": 1}]}),
    "restartPolicy": lambda j: pod(j).update(restartPolicy="OnFailure"),
    "managedBy": lambda j: j["spec"].update(managedBy="example.com/mine"),
    "suspend": lambda j: j["spec"].update(suspend=True),
    "hostNetwork": lambda j: pod(j).update(hostNetwork=True),
    "hostAliases": lambda j: pod(j).update(hostAliases=[{"ip": "1.2.3.4",
                                                         "hostnames": ["api"]}]),
    "pod annotations": lambda j: j["spec"]["template"]["metadata"]["annotations"].update(
        {"container.apparmor.security.beta.kubernetes.io/step": "unconfined"}),
    "lifecycle": lambda j: container(j).update(lifecycle={"preStop": {"exec": {
        "command": ["true"]}}}),
    "name": lambda j: j["metadata"].update(name="run-1-b-9"),
}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(built_jobs(), st.sampled_from(sorted(TAMPERING)))
def test_any_change_to_a_security_relevant_field_mismatches(job: dict[str, Any],
                                                            field: str) -> None:
    observed = defaulted(job)
    TAMPERING[field](observed)
    why = foreign_reason(job, observed)
    assert why is not None, field


def test_the_reason_names_the_field() -> None:
    spec = RunbookSpec.model_validate({"steps": [{"name": "a", "image": "busybox:1.37",
                                                  "command": ["true"]}]})
    ctx = JobContext(execution="r", namespace="ns", uid="u", runbook="rb", spec=spec,
                     params={}, secret_params=frozenset(), secret_name=None, outputs={},
                     ttl_seconds=1)
    job = build_job(ctx, spec.steps[0], 1, "r-a-1")
    observed = defaulted(job)
    container(observed)["image"] = "evil:1"
    assert foreign_reason(job, observed) == \
        "pod.containers.0:step.image: 'evil:1' instead of 'busybox:1.37'"


def test_only_a_controller_reference_to_the_run_counts() -> None:
    good = {"apiVersion": API_VERSION, "kind": "RunbookExecution", "name": "r", "uid": "u1",
            "controller": True}
    def job(*refs: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"ownerReferences": list(refs)}}
    assert owned_by_execution(job(good), "u1")
    assert owned_by_execution(job({**good, "apiVersion": "runbooks.dev/v2"}), "u1")
    for bad in ({**good, "controller": False}, {**good, "kind": "ConfigMap"},
                {**good, "apiVersion": "v1"}, {**good, "uid": "u2"},
                {k: v for k, v in good.items() if k != "controller"}):
        assert not owned_by_execution(job(bad), "u1"), bad
    assert not owned_by_execution(job(good), None)


def test_the_params_secret_is_taken_only_in_the_generated_form() -> None:
    def job(name: str) -> dict[str, Any]:
        return {"spec": {"template": {"spec": {"containers": [{"env": [
            {"name": "PARAM_S", "valueFrom": {"secretKeyRef": {"name": name, "key": "s"}}}]}]}}}}
    assert params_secret_in(job("run-1-params-x7k2q"), "run-1-params-") == "run-1-params-x7k2q"
    for other in ("mine", "run-1-params-", "run-1-params-toolong", "run-1-params-AB12C"):
        assert params_secret_in(job(other), "run-1-params-") is None, other


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(built_jobs())
def test_a_job_of_a_lost_pass_may_read_that_pass_params_secret(job: dict[str, Any]) -> None:
    # The pass that made it created its own params Secret; the status never said so.
    observed = defaulted(job)
    ref = next(e for e in container(observed)["env"] if e.get("valueFrom"))
    ref["valueFrom"]["secretKeyRef"]["name"] = "run-1-params-zz9zz"
    assert foreign_reason(job, observed, "run-1-params-") is None
    assert foreign_reason(job, observed) is not None  # without the prefix: exact
    for other in ("mine", "run-1-params-zz9zz-x", "run-2-params-zz9zz"):
        ref["valueFrom"]["secretKeyRef"]["name"] = other
        assert foreign_reason(job, observed, "run-1-params-") is not None, other


def test_a_foreign_job_is_never_adopted_and_its_step_fails() -> None:
    spec = RunbookSpec.model_validate({"steps": [
        {"name": "gate", "type": "approval"},
        {"name": "b", "image": "x", "dependsOn": ["gate"]},
        {"name": "c", "image": "x", "dependsOn": ["b"], "when": "steps.b.outputs.go"}]})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    name = job_name("run-1", "b", 1)
    planted = ObservedJob(name=name, step="b", attempt=1, state="Succeeded",
                          exit_code=0, termination_message=json.dumps({"go": True}),
                          pod_terminated=True, started_at=now, finished_at=now)
    status = RunbookExecutionStatus.model_validate({
        "phase": "Running", "startedAt": fmt(now), "runbookSpec": spec.to_k8s()})
    obs = Observation(name="run-1", namespace="ns", uid="u1", spec=spec, params={},
                      status=status, jobs={name: planted}, now=now,
                      foreign_jobs={name: "pod.containers.0:step.image: 'evil'"})
    first = plan(obs)
    assert first.status.steps["b"].phase == "Pending"  # not adopted, not due yet
    assert first.status.steps["b"].job is None
    decided = plan(Observation(**{**obs.__dict__, "status": first.status, "approvals": [
        ApprovalDecision(step="gate", decision="Approve", by="me")]}))
    b = decided.status.steps["b"]
    assert (b.phase, b.reason) == ("Failed", "ForeignJob"), b
    assert name in (b.message or "") and not b.outputs
    assert not decided.actions, "the step does not run"
    assert decided.status.steps["c"].phase == "Skipped"
    assert any(e.reason == "StepFailed" and e.warning and name in e.message
               for e in decided.events)
    assert any(h.event == "StepFailed" and name in (h.message or "")
               for h in decided.status.history)
    assert decided.status.phase == "Failed"
    # Not checkable yet (an upstream step unfinished): not adopted, nothing fails.
    waiting = plan(Observation(**{**obs.__dict__, "foreign_jobs": {},
                                  "unverified_jobs": frozenset({name})}))
    assert (waiting.status.steps["b"].phase, waiting.status.steps["b"].job) == ("Pending", None)
    assert waiting.status.phase == "WaitingForApproval"
    # Without the verdict, the same observation adopts the planted Job and its outputs.
    trusting = plan(Observation(**{**obs.__dict__, "foreign_jobs": {}}))
    assert trusting.status.steps["b"].outputs == {"go": True}
