"""Step Jobs: the manifest the operator creates, and what it reads back.

Parameters reach the container only as environment variables (``PARAM_<NAME>``
and ``RUNBOOK_PARAMS``), never substituted into a command; secret parameters
come from a Secret owned by the execution, so they appear in no Job spec.
Pods run non-root with every capability dropped and seccomp RuntimeDefault; a
step's ``securityContext`` is merged over those defaults key by key
(``engine.podsecurity``). Labels carry names shortened to fit a label value
(``engine.names.label_value``); the full names are annotations beside them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from runbook_operator.api.common import API_VERSION, parse_duration
from runbook_operator.api.runbook import RunbookSpec, Step
from runbook_operator.engine.names import label_value
from runbook_operator.engine.params import env_name, env_value
from runbook_operator.engine.plans import ObservedJob
from runbook_operator.engine.podsecurity import (
    DEFAULT_CONTAINER_SECURITY,
    NON_ROOT_UID,
    container_security,
    pod_security,
)
from runbook_operator.engine.staging import GATE, outputs_field_path
from runbook_operator.engine.timeutil import parse

LABEL_EXECUTION = "runbooks.dev/execution"
LABEL_RUNBOOK = "runbooks.dev/runbook"
LABEL_STEP = "runbooks.dev/step"
LABEL_ATTEMPT = "runbooks.dev/attempt"
ANNOTATION_ATTEMPT = "runbooks.dev/attempt"
ANNOTATION_EXECUTION = "runbooks.dev/execution"
"""The execution's full name (its label may be shortened with a hash)."""
ANNOTATION_RUNBOOK = "runbooks.dev/runbook"
MANAGED_BY = {"app.kubernetes.io/managed-by": "runbook-operator"}

__all__ = ["DEFAULT_CONTAINER_SECURITY", "NON_ROOT_UID"]


@dataclass(frozen=True)
class JobContext:
    """What a step's Job needs to know about its execution."""

    execution: str
    namespace: str
    uid: str
    runbook: str
    spec: RunbookSpec
    params: Mapping[str, Any]
    secret_params: frozenset[str]
    secret_name: str | None
    outputs: Mapping[str, Mapping[str, Any] | None]
    ttl_seconds: int


def owner_reference(execution: str, uid: str) -> dict[str, Any]:
    """The controller reference that makes the garbage collector delete with the execution."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RunbookExecution",
        "name": execution,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def step_env(ctx: JobContext, step: Step, traceparent: str | None = None,
             staged: bool = False) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    public = {k: v for k, v in ctx.params.items() if k not in ctx.secret_params}
    for name, value in sorted(ctx.params.items()):
        if name in ctx.secret_params:
            if ctx.secret_name is not None:
                env.append({"name": env_name(name), "valueFrom": {"secretKeyRef": {
                    "name": ctx.secret_name, "key": name}}})
        else:
            env.append({"name": env_name(name), "value": env_value(value)})
    env.append({"name": "RUNBOOK_PARAMS", "value": json.dumps(public, separators=(",", ":"))})
    for dep in step.depends_on:
        var = f"STEP_{dep.upper().replace('-', '_')}_OUTPUTS"
        if staged:  # not known yet: the gate lift writes them (engine.staging)
            env.append({"name": var, "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": outputs_field_path(dep)}}})
            continue
        outputs = ctx.outputs.get(dep) or {}
        env.append({"name": var, "value": json.dumps(outputs, separators=(",", ":"))})
    env.append({"name": "RUNBOOK_EXECUTION", "value": ctx.execution})
    env.append({"name": "RUNBOOK_STEP", "value": step.name})
    if traceparent:  # the OpenTelemetry environment carrier: tools continue the trace
        env.append({"name": "TRACEPARENT", "value": traceparent})
    env += [e.to_k8s() for e in step.env]
    return env


def build_job(ctx: JobContext, step: Step, attempt: int, name: str,
              traceparent: str | None = None, default_timeout: str | None = None,
              staged: bool = False) -> dict[str, Any]:
    """The Job manifest of one attempt of one step; ``staged``: gated, its upstream
    outputs read from pod annotations, its timeout kept by the operator (``engine.staging``).
    """
    labels = {
        **MANAGED_BY,
        LABEL_EXECUTION: label_value(ctx.execution),
        LABEL_RUNBOOK: label_value(ctx.runbook),
        LABEL_STEP: step.name,
        LABEL_ATTEMPT: str(attempt),
    }
    names = {ANNOTATION_EXECUTION: ctx.execution, ANNOTATION_RUNBOOK: ctx.runbook}
    pod_labels = dict(step.pod_metadata.labels) if step.pod_metadata else {}
    pod_labels.update(labels)
    annotations = dict(step.pod_metadata.annotations) if step.pod_metadata else {}
    annotations[ANNOTATION_ATTEMPT] = str(attempt)
    annotations.update(names)
    container: dict[str, Any] = {
        "name": "step",
        "image": step.image,
        "env": step_env(ctx, step, traceparent, staged),
        "securityContext": container_security(step.security_context),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if step.command is not None:
        container["command"] = step.command
    if step.args is not None:
        container["args"] = step.args
    if step.working_dir:
        container["workingDir"] = step.working_dir
    if step.resources:
        container["resources"] = step.resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": pod_security(step.security_context),
    }
    if ctx.spec.service_account_name:
        pod_spec["serviceAccountName"] = ctx.spec.service_account_name
    if staged:
        pod_spec["schedulingGates"] = [{"name": GATE}]
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": ctx.ttl_seconds,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": pod_spec,
        },
    }
    timeout = step.timeout or default_timeout  # a CircuitPolicy's default for guarded steps
    if timeout and not staged:
        seconds = parse_duration(timeout).total_seconds()
        job_spec["activeDeadlineSeconds"] = max(1, int(seconds))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ctx.namespace,
            "labels": labels,
            "annotations": names,
            "ownerReferences": [owner_reference(ctx.execution, ctx.uid)],
        },
        "spec": job_spec,
    }


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether a Job has its Complete or Failed condition."""
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def pod_terminated(pod: Mapping[str, Any]) -> bool:
    """Whether a step pod's container has terminated (exit code and message known)."""
    return any(cs.get("name") == "step" and (cs.get("state") or {}).get("terminated")
               for cs in (pod.get("status") or {}).get("containerStatuses") or [])


def controlled_by(pod: Mapping[str, Any], job_uid: str | None) -> bool:
    """Whether ``pod``'s controller is the Job whose uid is ``job_uid``.

    Step pods are found by their ``job-name`` label and execution annotation, which
    anyone who may create pods in the namespace can copy onto a pod of their own
    whose termination message forges the step's outcome. The Job controller makes
    its pods' controller reference name the Job's uid, which a Job's name does not
    predict: the same bar the Job controller itself sets for counting a pod.
    """
    if not job_uid:
        return False
    return any(o.get("controller") and o.get("kind") == "Job" and o.get("uid") == job_uid
               for o in (pod.get("metadata") or {}).get("ownerReferences") or [])


def pod_outcome(pod: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The ``step`` container's terminated state when the pod has ended on its own.

    That is: the pod's phase is Succeeded or Failed, the container's exit code is
    known, and nobody is deleting the pod (a pod the Job controller kills at the
    deadline, or one of a cancelled run, is read from its Job instead). Jobs run
    with ``backoffLimit: 0`` and ``restartPolicy: Never``: one pod is one attempt,
    so its ending is the attempt's, seconds before the Job controller says so.
    """
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    if status.get("phase") not in ("Succeeded", "Failed"):
        return None
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if cs.get("name") == "step" and term and isinstance(term.get("exitCode"), int):
            return cast(Mapping[str, Any], term)
    return None


def is_staged(job: Mapping[str, Any]) -> bool:
    """Whether a Job was built gated (its pod template has the operator's gate)."""
    return _has_gate(((job.get("spec") or {}).get("template") or {}).get("spec"))


def pod_gated(pod: Mapping[str, Any]) -> bool:
    """Whether a pod still waits for the operator's gate."""
    return _has_gate(pod.get("spec"))


def _has_gate(spec: Any) -> bool:
    gates = (spec or {}).get("schedulingGates") if isinstance(spec, Mapping) else None
    return any(isinstance(g, Mapping) and g.get("name") == GATE for g in gates or [])


def observe_job(job: Mapping[str, Any], pod: Mapping[str, Any] | None) -> ObservedJob | None:
    """What the planner needs of a Job and its pod; None for a Job that is not a step's.

    The attempt has ended when its pod has (``pod_outcome``): Succeeded for exit
    code 0, Failed otherwise with the container's reason (``Error``,
    ``OOMKilled``), finished at the container's ``finishedAt``. Otherwise the Job's
    Complete or Failed condition decides, as for a timeout (``DeadlineExceeded``:
    the killed pod has no exit code) or a pod that vanished.
    """
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    step = labels.get(LABEL_STEP)
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, ""))
    except ValueError:
        return None
    if not step:
        return None
    status = job.get("status") or {}
    state = "Active"
    reason = message = None
    finished = None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            state = "Succeeded"
            finished = parse(cond.get("lastTransitionTime"))
        elif cond.get("type") == "Failed":
            state = "Failed"
            reason, message = cond.get("reason"), cond.get("message")
            finished = parse(cond.get("lastTransitionTime"))
    if state == "Succeeded":
        finished = parse(status.get("completionTime")) or finished
    staged = is_staged(job)
    started = parse(status.get("startTime"))
    if staged:  # the Job started when staged; the step when its pod did
        started = parse(((pod or {}).get("status") or {}).get("startTime"))
    exit_code = term_message = None
    terminated = False
    if pod is not None:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == "step" and term:
                terminated = True
                exit_code = term.get("exitCode")
                term_message = term.get("message")
    outcome = pod_outcome(pod)
    if outcome is not None and reason != "DeadlineExceeded":
        code = outcome["exitCode"]
        state = "Succeeded" if code == 0 else "Failed"
        reason = None if code == 0 else str(outcome.get("reason") or "Error")
        message = None
        finished = parse(outcome.get("finishedAt")) or finished
        started = started or parse(outcome.get("startedAt"))
    return ObservedJob(
        name=meta.get("name", ""),
        step=step,
        attempt=attempt,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        message=message,
        started_at=started,
        finished_at=finished,
        exit_code=exit_code,
        termination_message=term_message,
        pod_terminated=terminated,
        deadline_seconds=_int_or_none((job.get("spec") or {}).get("activeDeadlineSeconds")),
        staged=staged,
        gated=staged and (pod is None or pod_gated(pod)),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
