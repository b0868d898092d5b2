"""Job actions of an execution pass: observe its Jobs, create and delete them, the params Secret.

Why it exists: the reconciler decides nothing here. These are the pass's I/O on
Jobs and Secrets, apart from the reconcile flow (``executions.py``): what the
store shows of an execution's Jobs (``observed_jobs``, ``lost_jobs`` confirmed by
a direct read), and carrying out a plan's actions, Jobs created before the status
that names them; what the API refuses goes back to the planner as an observation.
``JobActions`` is a mixin of ``ExecutionReconciler``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, cast

from kubernetes.client.exceptions import ApiException

from runbook_operator.api.execution import (
    FINISHED_STEP_PHASES,
    RunbookExecution,
    RunbookExecutionStatus,
    StepStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.names import generate_prefix, job_name, label_value
from runbook_operator.engine.params import env_value, secret_names
from runbook_operator.engine.plans import (
    CreateFailure,
    CreateJob,
    DeleteJob,
    LiftGate,
    Observation,
    ObservedJob,
    Plan,
)
from runbook_operator.engine.staging import GATE, output_annotations
from runbook_operator.k8s.adoption import foreign_reason, owned_by_execution
from runbook_operator.k8s.client import read_raw, retrying
from runbook_operator.k8s.jobs import (
    ANNOTATION_EXECUTION,
    LABEL_EXECUTION,
    MANAGED_BY,
    JobContext,
    build_job,
    controlled_by,
    is_staged,
    job_finished,
    observe_job,
    owner_reference,
    pod_gated,
)
from runbook_operator.k8s.store import Key

if TYPE_CHECKING:
    from runbook_operator.api.runbook import Step
    from runbook_operator.controllers.circuits import CircuitRegistry
    from runbook_operator.k8s.client import Clients
    from runbook_operator.k8s.store import Store
    from runbook_operator.observability.tracing import ExecutionTracer

JOB_LOST_GRACE = 10.0
"""Seconds a Job may be missing from the watch cache before a direct read checks it."""


class JobActions:
    """Jobs and the params Secret of a pass (a mixin of ``ExecutionReconciler``)."""

    if TYPE_CHECKING:
        clients: Clients
        store: Store
        tracer: ExecutionTracer
        circuits: CircuitRegistry
        job_ttl_seconds: int
        _job_seen: dict[str, float]
        _job_verdicts: dict[str, str | None]
        _pods_read: dict[str, dict[str, Any] | None]
        _made: dict[str, str]

    def lost_jobs(self, namespace: str, status: RunbookExecutionStatus,
                  observed: dict[str, ObservedJob]) -> tuple[frozenset[str], float | None]:
        """Jobs of running steps confirmed gone by a direct read, and when to look again.

        A Job missing from the watch cache may only be late; it counts as lost only
        after a grace period and a 404 from the apiserver, so cache lag can never
        make a step run twice.
        """
        lost = set()
        recheck_in: float | None = None
        now = time.monotonic()
        for st in status.steps.values():
            name = st.job
            if st.phase != "Running" or not name or name in observed:
                continue
            since_seen = now - self._job_seen.get(name, float("-inf"))
            if since_seen < JOB_LOST_GRACE:
                recheck_in = min(recheck_in or JOB_LOST_GRACE, JOB_LOST_GRACE - since_seen)
                continue
            if self.job_exists(namespace, name):
                self._job_seen[name] = now
                recheck_in = min(recheck_in or JOB_LOST_GRACE, JOB_LOST_GRACE)
            else:
                lost.add(name)
        if len(self._job_seen) > 100_000:
            self._job_seen.clear()
        return frozenset(lost), recheck_in

    @retrying
    def job_exists(self, namespace: str, name: str) -> bool:
        try:
            self.clients.batch.read_namespaced_job(name, namespace)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def observed_jobs(self, key: Key, uid: str | None) -> dict[str, ObservedJob]:
        jobs: dict[str, ObservedJob] = {}
        pods = self.store.pods.get(key, {})
        for name, job in self.store.jobs.get(key, {}).items():
            if uid and not owned_by_execution(job, uid):
                continue  # a Job of an earlier execution with the same name, or no run's
            job_uid = (job.get("metadata") or {}).get("uid")
            pod = pods.get(name)
            if pod is not None and not controlled_by(pod, job_uid):
                pod = None  # a pod wearing the Job's labels: its ending is not the step's
            if pod is None and job_uid and job_finished(job):
                pod = self.pod_of(key[0], job_uid)
            observed = observe_job(job, pod)
            if observed is not None:
                jobs[name] = observed
        return jobs

    def pod_of(self, namespace: str, job_uid: str) -> dict[str, Any] | None:
        """The pod of a finished Job that the pod watch has not shown, read directly once.

        After a restart the Job watch can list a Job that finished while no operator
        ran before the pod watch lists its pod. Judged from the Job alone, the step
        would lose its exit code, termination message and outputs for good, so the
        pod is read by the Job controller's uid label. One read per Job: a pod that
        is really gone (deleted, or the node lost) is remembered as None, and the
        step is then judged from the Job's conditions.
        """
        if job_uid in self._pods_read:
            return self._pods_read[job_uid]
        found: dict[str, Any] | None = None
        for pod in self.list_pods(namespace, f"batch.kubernetes.io/controller-uid={job_uid}"):
            if controlled_by(pod, job_uid):
                found = pod
        if len(self._pods_read) > 10_000:
            self._pods_read.clear()
        self._pods_read[job_uid] = found
        return found

    @retrying
    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        response = self.clients.core.list_namespaced_pod(namespace, label_selector=selector,
                                                         _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def carry_out(self, body: dict[str, Any], execution: RunbookExecution, spec: RunbookSpec,
                  params: dict[str, Any], result: Plan
                  ) -> tuple[dict[str, CreateFailure], list[CreateJob]]:
        """Create and delete the plan's Jobs (and the params Secret before any Job).

        Returns the Jobs the API refused, by name, for the next plan to decide on,
        and the Jobs created; the plan's status is not changed, but for the Secret's
        generated name.
        """
        creates = [a for a in result.actions if isinstance(a, CreateJob)]
        namespace = execution.metadata.namespace or ""
        secrets = secret_names(spec.params) & {k for k, v in params.items() if v is not None}
        secret_name = result.status.params_secret
        if creates and secrets and not secret_name:
            # Created before any Job names it and recorded in the status written next.
            secret_name = self.create_params_secret(execution,
                                                    {k: params[k] for k in secrets})
            result.status.params_secret = secret_name
        ctx = self.job_context(execution, spec, params, result, secret_name)
        steps = {s.name: s for s in spec.all_steps()}
        refused: dict[str, CreateFailure] = {}
        created: list[CreateJob] = []
        for action in result.actions:
            if isinstance(action, CreateJob):
                manifest = self.manifest(execution, ctx, steps[action.step], action.attempt,
                                         action.name, staged=action.staged)
                staged = None
                if action.attempt == 1 and not action.staged:
                    # Its staged Job may exist unseen (a restart, the Job watch behind):
                    # then that one is the step's, and the next pass lifts its gate.
                    staged = self.manifest(execution, ctx, steps[action.step], 1,
                                           action.name, staged=True)
                problem = self.create_job(namespace, manifest, execution.metadata.uid or "",
                                          staged)
                if problem is not None:
                    refused[action.name] = problem
                else:
                    created.append(action)
                    held = self.store.jobs.get((namespace, execution.metadata.name), {})
                    if staged is not None and is_staged(held.get(action.name) or {}):
                        # The step starts on its staged Job found at the create: lift
                        # it now, with the outputs the plan gives it.
                        step = steps[action.step]
                        self.lift_gate((namespace, execution.metadata.name), LiftGate(
                            step.name, action.name, output_annotations(step, ctx.outputs)))
            elif isinstance(action, DeleteJob):
                self.delete_job(namespace, action.name)
                held = self.store.jobs.get((namespace, execution.metadata.name), {})
                if is_staged(held.get(action.name) or {}):
                    held.pop(action.name, None)  # not deleted again before the watch says so
            elif isinstance(action, LiftGate):
                self.lift_gate((namespace, execution.metadata.name), action)
        return refused, created

    def lift_gate(self, key: Key, action: LiftGate) -> None:
        """One JSON patch of the staged pod: the gate removed, the outputs written.

        The patch tests that the pod still has exactly the gate, so a repeated lift
        changes nothing (422). A pod the Job controller has not made yet is awaited:
        its watch event plans the pass again (``Store.awaiting``).
        """
        job = self.store.jobs.get(key, {}).get(action.name)
        pod = self.store.pods.get(key, {}).get(action.name)
        job_uid = ((job or {}).get("metadata") or {}).get("uid")
        if pod is None or not controlled_by(pod, job_uid):
            self.store.awaiting.add((key[0], action.name))
            # Read again: a pod event between the first read and the line above saw
            # nothing awaited, but had stored the pod first.
            pod = self.store.pods.get(key, {}).get(action.name)
            if pod is None or not controlled_by(pod, job_uid):
                return
            self.store.awaiting.discard((key[0], action.name))
        if not pod_gated(pod):
            return
        name = pod["metadata"]["name"]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/spec/schedulingGates", "value": [{"name": GATE}]},
            {"op": "remove", "path": "/spec/schedulingGates"}]
        ops += [{"op": "add", "path": "/metadata/annotations/" + _pointer(k), "value": v}
                for k, v in sorted(action.annotations.items())]
        updated = self.patch_pod(key[0], name, ops)
        if updated is not None:
            self.store.put_pod(updated)

    @retrying
    def patch_pod(self, namespace: str, name: str, ops: list[dict[str, Any]]
                  ) -> dict[str, Any] | None:
        """The pod after the patch; None when it is gone or the gate already lifted."""
        try:
            response = self.clients.core.patch_namespaced_pod(
                name, namespace, ops, _preload_content=False,
                _content_type="application/json-patch+json")
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return None
            raise
        return cast(dict[str, Any], json.loads(response.data))

    def job_context(self, execution: RunbookExecution, spec: RunbookSpec,
                    params: dict[str, Any], result: Plan, secret_name: str | None
                    ) -> JobContext:
        """What every Job of this pass is built from (the plan's outputs, the Secret)."""
        secrets = secret_names(spec.params) & {k for k, v in params.items() if v is not None}
        return JobContext(
            execution=execution.metadata.name, namespace=execution.metadata.namespace or "",
            uid=execution.metadata.uid or "", runbook=execution.spec.runbook_ref.name,
            spec=spec, params=params, secret_params=frozenset(secrets),
            secret_name=secret_name,
            outputs={n: s.outputs for n, s in result.status.steps.items()},
            ttl_seconds=self.job_ttl_seconds,
        )

    def manifest(self, execution: RunbookExecution, ctx: JobContext, step: Step,
                 attempt: int, name: str, staged: bool = False) -> dict[str, Any]:
        """The Job the operator builds for one attempt of one step, now."""
        traceparent = self.tracer.traceparent(
            execution.metadata.uid or "", execution.metadata.annotations, step.name, attempt)
        default_timeout = None
        if step.circuit is not None and step.timeout is None:
            policy = self.circuits.specs(ctx.namespace, [step.circuit.policy])
            default_timeout = policy[step.circuit.policy].timeout if policy else None
        return build_job(ctx, step, attempt, name, traceparent, default_timeout, staged)

    def foreign_adoptions(self, execution: RunbookExecution, spec: RunbookSpec,
                          params: dict[str, Any], observation: Observation, result: Plan,
                          created: set[str]) -> dict[str, str | None]:
        """Jobs the plan adopted that the operator would not have built, with why.

        Adopted: a step's Job in the planned status that the status it was planned from
        did not name, found on the cluster and not created by this pass. Each is read
        once (the store keeps no Job specs) and compared with the Job built now for its
        step and attempt, from the plan's outputs (the lost pass that created it saw
        the same ones: they are read again from the same Jobs). A Job's template cannot
        change, so the verdict is kept by uid. None for a Job that cannot be checked
        yet: an upstream step has not finished in the plan (its pod not seen yet), so
        the outputs the Job was given are not known; it is checked again next pass.
        """
        known = {st.job for st in observation.status.steps.values() if st.job}
        steps = {s.name: s for s in spec.all_steps()}
        foreign: dict[str, str | None] = {}
        for step_name, st in result.status.steps.items():
            name = st.job
            seen = observation.jobs.get(name or "")
            if name is None or seen is None or name in known or name in created \
                    or name in observation.foreign_jobs or step_name not in steps:
                continue
            job = self.store.jobs.get((observation.namespace, observation.name), {}).get(name)
            if job is not None and self._made.get(name) == (job.get("metadata") or {}).get(
                    "uid"):
                continue  # this process built it (a staged Job whose gate is lifted now)
            if any((result.status.steps.get(d) or StepStatus()).phase
                   not in FINISHED_STEP_PHASES for d in steps[step_name].depends_on):
                foreign[name] = None
                continue
            why = self.verify_job(execution, spec, params, result, steps[step_name], seen)
            if why is not None:
                foreign[name] = why
        return foreign

    def verify_job(self, execution: RunbookExecution, spec: RunbookSpec,
                   params: dict[str, Any], result: Plan, step: Step, seen: ObservedJob
                   ) -> str | None:
        namespace = execution.metadata.namespace or ""
        job = self.read_job(namespace, seen.name)
        if job is None:
            return None  # gone: the planner finds it lost, as any vanished Job
        uid = str((job.get("metadata") or {}).get("uid") or "")
        if uid in self._job_verdicts:
            return self._job_verdicts[uid]
        # A lost status write may have lost the Secret's name with it: any Secret of
        # the run's generated form then stands in (``foreign_reason``), a name that
        # cannot exist ("*") until the Job's own is found there.
        ctx = self.job_context(execution, spec, params, result,
                               result.status.params_secret or _secret_prefix(execution) + "*")
        expected = self.manifest(execution, ctx, step, seen.attempt,
                                 job_name(execution.metadata.name, step.name, seen.attempt),
                                 staged=seen.staged)
        why = foreign_reason(expected, job, _secret_prefix(execution))
        if len(self._job_verdicts) > 10_000:
            self._job_verdicts.clear()
        self._job_verdicts[uid] = why
        return why

    @retrying
    def read_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Job as the API server stores it, as JSON (the client's models would drop
        fields they do not know, and those must be compared too)."""
        return read_raw(self.clients.batch.read_namespaced_job, name, namespace)

    @retrying
    def create_job(self, namespace: str, manifest: dict[str, Any], owner_uid: str,
                   staged: dict[str, Any] | None = None) -> CreateFailure | None:
        """Create a Job; on a 409 the Job found is taken only if this execution controls
        it and it is the Job just built (``k8s.adoption``): a Job planted under the
        step's name fails the step ``ForeignJob``.

        Returns None on success, or why the Job cannot be the step's.
        """
        name = manifest["metadata"]["name"]
        self._job_seen[name] = time.monotonic()
        try:
            response = self.clients.batch.create_namespaced_job(namespace, manifest,
                                                                _preload_content=False)
            created = json.loads(response.data)
            if len(self._made) > 100_000:
                self._made.clear()
            self._made[name] = str((created.get("metadata") or {}).get("uid"))
            self.store.put_job(created)  # the next pass sees it before the watch does
            return None
        except ApiException as exc:
            if exc.status == 409:
                existing = self.read_job(namespace, name)
                if existing is None:  # deleted meanwhile: once more, errors go to the pass
                    self.clients.batch.create_namespaced_job(namespace, manifest)
                    return None
                if not owned_by_execution(existing, owner_uid):
                    return CreateFailure("JobCreateFailed",
                                         f"a Job named {name} exists and belongs to "
                                         "something else")
                # Made by a pass whose status write was lost: it may read the params
                # Secret that pass created, not the one this pass did.
                prefix = generate_prefix(
                    manifest["metadata"]["annotations"][ANNOTATION_EXECUTION], "-params-")
                if staged is not None and is_staged(existing):
                    manifest = staged  # the step's staged Job, made before a restart
                why = foreign_reason(manifest, existing, prefix)
                if why is None:
                    self.store.put_job(existing)  # the next pass sees it (and lifts it)
                    return None
                return CreateFailure("ForeignJob", f"a Job named {name} exists but is not "
                                     f"the Job the operator builds for this step ({why}); "
                                     "not adopted, the step does not run")
            if exc.status in (400, 403, 404, 422):
                return CreateFailure("JobCreateFailed", "the apiserver refused the Job "
                                     f"({exc.status}): {_api_message(exc)}")
            raise

    @retrying
    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.clients.batch.delete_namespaced_job(name, namespace,
                                                     propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    @retrying
    def create_params_secret(self, execution: RunbookExecution,
                             values: dict[str, Any]) -> str:
        """Secret parameters live in a Secret owned by the execution, not in Job specs.

        Its name is chosen by the apiserver (``generateName``): a Secret planted under
        a name the operator would pick cannot exist, so a run never reads a Secret it
        did not create, and the operator needs no right to read Secrets at all.
        """
        owner = owner_reference(execution.metadata.name, execution.metadata.uid or "")
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": {"generateName": _secret_prefix(execution),
                         "namespace": execution.metadata.namespace,
                         "labels": {**MANAGED_BY,
                                    LABEL_EXECUTION: label_value(execution.metadata.name)},
                         "annotations": {ANNOTATION_EXECUTION: execution.metadata.name},
                         "ownerReferences": [owner]},
            "stringData": {k: env_value(v) for k, v in values.items()},
        }
        created = self.clients.core.create_namespaced_secret(execution.metadata.namespace, body)
        name: str = created.metadata.name
        return name


def _secret_prefix(execution: RunbookExecution) -> str:
    """The params Secret's ``generateName`` (``create_params_secret``)."""
    return generate_prefix(execution.metadata.name, "-params-")


def _pointer(key: str) -> str:
    """``key`` as one JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.reason))
    except ValueError:
        return str(exc.reason)
