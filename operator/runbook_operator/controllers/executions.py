"""RunbookExecution reconciler: observe, plan, act.

Each pass reads the execution, its Jobs and pods from the store, asks the engine
for a plan and carries it out in a safe order: Jobs are created before the status
that mentions them is written, so a crash in between leaves a Job the next pass
adopts rather than a step that runs twice. The status is written as a merge
patch of what changed, guarded by the resourceVersion it was planned from.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from runbook_operator.api.common import GROUP, RUNBOOKS, VERSION
from runbook_operator.api.execution import (
    FINISHED_EXECUTION_PHASES,
    RunbookExecution,
    RunbookExecutionStatus,
    RunbookRefStatus,
    StepStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.controllers import circuits
from runbook_operator.controllers.admission import Admission
from runbook_operator.controllers.circuits import CircuitRegistry
from runbook_operator.controllers.job_actions import JobActions
from runbook_operator.controllers.queries import QueryChecks
from runbook_operator.controllers.retention import PLURAL, Retention
from runbook_operator.controllers.telemetry import Telemetry
from runbook_operator.engine import bulkhead, merge
from runbook_operator.engine.circuit import Transition
from runbook_operator.engine.history import appended
from runbook_operator.engine.outputs import clean_text
from runbook_operator.engine.params import (
    resolve_params,
    secret_forms,
    secret_names,
)
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import CreateFailure, Observation, ObservedJob, Plan
from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.severity import severity_of
from runbook_operator.engine.start import (
    cancelled_before_start,
    start_execution,
)
from runbook_operator.engine.timeutil import fmt
from runbook_operator.k8s.client import Clients, read_object, retrying
from runbook_operator.k8s.events import EventPoster
from runbook_operator.k8s.store import Key, Store
from runbook_operator.observability.logs import get_logger
from runbook_operator.observability.metrics import Metrics
from runbook_operator.observability.secrets import SECRETS
from runbook_operator.observability.tracing import (
    ExecutionInfo,
    ExecutionTracer,
)

log = logging.getLogger("runbook_operator.executions")
audit = get_logger("runbook_operator.audit")

__all__ = ["PLURAL", "ExecutionReconciler", "Outcome", "secret_literals"]


@dataclass
class Outcome:
    """What a pass wants from the loop: to run again now, or at a time."""

    again: bool = False
    wake_at: datetime | None = None
    others: list[Key] = field(default_factory=list)
    """Other executions to look at now (queued ones, when a slot frees)."""


class ExecutionReconciler(JobActions, Admission, Retention, Telemetry, QueryChecks):
    """One pass over one execution: observe, plan, act (Jobs, status), then telemetry."""

    def __init__(self, clients: Clients, store: Store, events: EventPoster,
                 job_ttl_seconds: int = 3600,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 metrics: Metrics | None = None, tracer: ExecutionTracer | None = None,
                 circuits: CircuitRegistry | None = None,
                 security: SecurityPolicy | None = None, prestage: bool = False) -> None:
        self.clients = clients
        self.prestage = prestage
        self.security = security or SecurityPolicy()
        self.circuits = circuits or CircuitRegistry()
        self.metrics = metrics or Metrics()
        self.tracer = tracer or ExecutionTracer()
        self.store = store
        self.events = events
        self.job_ttl_seconds = job_ttl_seconds
        self.clock = clock
        self._specs: dict[str, RunbookSpec] = {}
        self._start_lock = threading.Lock()
        self._job_seen: dict[str, float] = {}
        """When this process created, or last found by a direct read, a Job (monotonic)."""
        self._job_verdicts: dict[str, str | None] = {}
        """By Job uid: why an adopted Job is not the operator's, or None (``k8s.adoption``)."""
        self._made: dict[str, str] = {}
        """By name: the uid of each Job this process created."""
        self._pods_read: dict[str, dict[str, Any] | None] = {}
        """By Job uid: the pod a direct read found for a finished Job the pod watch had
        not shown yet, or None when it has none (``JobActions.pod_of``)."""

    # -- entry point ---------------------------------------------------------------

    def reconcile(self, key: Key) -> Outcome:
        body = self.store.executions.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            SECRETS.forget(key)
            return Outcome()
        try:
            execution = RunbookExecution.from_k8s(body)
        except ValidationError as exc:
            # The schema should have stopped this; never crash on a bad object.
            log.warning("execution %s/%s is not valid: %s", *key, exc)
            return Outcome()
        status = execution.status or RunbookExecutionStatus()
        if status.phase in FINISHED_EXECUTION_PHASES:
            SECRETS.forget(key)
            self.store.forget_children(key)
            return Outcome()
        if status.runbook_spec is None:
            return self.start(body, execution)
        return self.advance(body, execution, status)

    # -- start -----------------------------------------------------------------------

    def start(self, body: dict[str, Any], execution: RunbookExecution) -> Outcome:
        namespace = execution.metadata.namespace or ""
        runbook = self.read(RUNBOOKS, namespace, execution.spec.runbook_ref.name)
        source = None
        if execution.spec.resume_from is not None:
            # The run it resumes (spec.resumeFrom): the store first; the API when the
            # store has not seen it finish, or holds it slimmed (a finished execution's
            # frozen spec, params and steps are dropped there: store.py).
            key = (namespace, execution.spec.resume_from.execution)
            source = self.store.executions.get(key)
            held = (source or {}).get("status") or {}
            if held.get("phase") not in FINISHED_EXECUTION_PHASES or \
                    not held.get("runbookSpec"):
                source = self.read(PLURAL, *key)
        status = start_execution(execution.spec, runbook, namespace, self.clock(),
                                 self.security, source=source)
        previous = execution.status
        if execution.spec.cancel or (previous is not None and previous.cancel_requested):
            # Cancelled while pending or queued: it ends before any step exists.
            reason, why = "Cancelled", "cancelled by spec.cancel"
            if not execution.spec.cancel and previous is not None:
                reason = previous.cancel_reason or reason
                why = previous.cancel_requested or why
            status = cancelled_before_start(reason, why, self.clock(), status.runbook or
                                            RunbookRefStatus(name=execution.spec.runbook_ref.name))
        status.observed_generation = execution.metadata.generation
        status.trace_id = self.tracer.trace_id(execution.metadata.uid or "",
                                               execution.metadata.annotations)
        spec = RunbookSpec.model_validate(status.runbook_spec) if status.runbook_spec else None
        if spec is not None:
            resolved = resolve_params(spec.params, execution.spec.params)[0]
            SECRETS.learn((namespace, execution.metadata.name), secret_literals(spec, resolved))
            # What a run resolved its parameters to, for whoever debugs it; the log
            # pipeline removes the secret ones (learned just above).
            log.debug("execution %s/%s starts with params %s", namespace,
                      execution.metadata.name, json.dumps(resolved, default=str))
        if spec is not None and spec.concurrency and spec.concurrency.policy != "Allow":
            # One decision at a time, and each written before the next is made.
            with self._start_lock:
                status = self.admit_concurrency(body, execution, spec, status)
                if not self.write_status(body, status):
                    return Outcome(again=True)
            if status.phase == "Queued":
                return Outcome()
        elif not self.write_status(body, status):
            return Outcome(again=True)
        if status.phase in FINISHED_EXECUTION_PHASES:
            self.metrics.execution_finished(namespace, execution.spec.runbook_ref.name,
                                            status.phase, 0.0)
            self.tracer.execution_span(ExecutionInfo.from_body(body), phase=status.phase,
                                       started_at=status.finished_at,
                                       finished_at=status.finished_at, reason=status.reason,
                                       message=status.message)
            self.events.post(body, status.reason or "Failed", status.message or "", warning=True)
            return Outcome()
        self.events.post(body, "ExecutionStarted",
                         f"runbook {execution.spec.runbook_ref.name} started")
        return Outcome(again=True)


    # -- advance ---------------------------------------------------------------------

    def advance(self, body: dict[str, Any], execution: RunbookExecution,
                status: RunbookExecutionStatus) -> Outcome:
        key = (execution.metadata.namespace or "", execution.metadata.name)
        if (execution.metadata.uid or "") not in self._specs and len(status.history) > 1:
            # First look at a run already under way: a restart, noted on its trace.
            self.tracer.note_restart(execution.metadata.uid or "", fmt(self.clock()))
        spec = self.frozen_spec(execution.metadata.uid or "", status)
        params, _ = resolve_params(spec.params, execution.spec.params)
        SECRETS.learn(key, secret_literals(spec, params))  # before anything is logged
        jobs = self.observed_jobs(key, execution.metadata.uid)
        lost, recheck_in = self.lost_jobs(key[0], status, jobs)
        observation = Observation(
            severity=severity_of(execution.spec.to_k8s()),
            name=execution.metadata.name,
            namespace=key[0],
            uid=execution.metadata.uid or "",
            spec=spec,
            params=params,
            status=status,
            jobs=jobs,
            lost_jobs=lost,
            now=self.clock(),
            cancel=execution.spec.cancel or bool(status.cancel_requested),
            cancel_reason=None if execution.spec.cancel else status.cancel_reason,
            cancel_message=None if execution.spec.cancel else status.cancel_requested,
            approvals=execution.spec.approvals,
            runbook=execution.spec.runbook_ref.name,
            security=self.security,
            checks=self.query_checks(key[0], execution.spec.runbook_ref.name, spec, params,
                                     status),
            prestage=self.prestage,
        )
        guarded = sorted({s.circuit.policy for s in spec.all_steps() if s.circuit})
        token = f"{key[0]}/{key[1]}"
        committed = not guarded
        failures: dict[str, CreateFailure] = {}
        made: set[str] = set()
        try:
            # A Job the API refuses comes back as an observation: the pass is planned
            # again knowing it, so the status written never names a Job that does not
            # exist; so does an adopted Job the operator would not have built (each
            # round adds a refused or foreign name; a pass has finitely many Jobs).
            for _ in range(2 * len(spec.all_steps()) + 2):
                if guarded:
                    result = self.plan_with_circuits(key[0], guarded, token, observation)
                else:
                    result = plan(observation)
                foreign = self.foreign_adoptions(execution, spec, params, observation,
                                                 result, made)
                if foreign:
                    self.circuits.rollback(token)
                    observation = replace(
                        observation,
                        foreign_jobs={**observation.foreign_jobs, **{
                            n: why for n, why in foreign.items() if why is not None}},
                        unverified_jobs=observation.unverified_jobs | {
                            n for n, why in foreign.items() if why is None})
                    continue
                # No lock from here to the commit: other passes plan meanwhile against
                # what this one reserved (its trial permits and bulkhead slots).
                refused, created = self.carry_out(body, execution, spec, params, result)
                made |= {a.name for a in created}
                if not refused:
                    break
                failures.update(refused)
                self.circuits.rollback(token)
                # What this round did is observed by the next: the refusals, the Jobs
                # it created (adopted, never created twice) and the Secret's name.
                observation = replace(
                    observation, create_failures=dict(failures),
                    jobs={**observation.jobs, **{
                        a.name: ObservedJob(a.name, a.step, a.attempt, "Active",
                                            staged=a.staged, gated=a.staged)
                        for a in created if a.name not in observation.jobs}},
                    status=observation.status.model_copy(update={
                        "params_secret": result.status.params_secret}))
            else:
                raise RuntimeError(f"Job creates refused in every round: {sorted(failures)}")
            if not self.write_status(body, result.status):
                return Outcome(again=True)  # the circuits never saw this pass
            if guarded:
                self.commit_circuits(key[0], guarded, token, result)
                committed = True
        finally:
            if not committed:
                self.circuits.rollback(token)
        self.record_metrics(key[0], execution.spec.runbook_ref.name, spec, status, result,
                            observation.now)
        self.record_spans(body, execution, status, result.status, spec, result.attempts)
        for event in result.events:
            self.events.post(body, event.reason, event.message, event.warning)
            # The audit trail as logs too (redacted by the logging pipeline).
            (audit.warning if event.warning else audit.info)(
                event.reason, runbook=execution.spec.runbook_ref.name, message=event.message,
                **{k: v for k, v in (("step", event.step), ("attempt", event.attempt),
                                     ("trace_id", status.trace_id)) if v is not None})
        others: list[Key] = []
        if result.status.phase in FINISHED_EXECUTION_PHASES:
            self.store.forget_children(key)
            self._specs.pop(execution.metadata.uid or "", None)
            self.apply_retention(key[0], execution.spec.runbook_ref.name)
            others = self.queued_peers(key[0], execution.spec.runbook_ref.name)
        if guarded and any(_left_bulkhead(st, result.status.steps.get(n))
                           for n, st in status.steps.items()):
            # A slot freed, or the line moved up: the others in line look again.
            others += self.circuits.waiters(key[0], guarded, key)
        wake_at = result.wake_at
        if recheck_in is not None:  # a missing Job to look for again
            recheck = self.clock() + timedelta(seconds=recheck_in + 0.1)
            wake_at = min(wake_at, recheck) if wake_at else recheck
        return Outcome(wake_at=wake_at, others=others)

    def plan_with_circuits(self, namespace: str, policies: list[str], token: str,
                           observation: Observation) -> Plan:
        """Plan against the shared circuits and reserve what the plan takes.

        Under the policies' short locks, and only for in-memory work: the view of the
        circuits (with what other passes hold), the bulkhead lines, the plan. The
        registry's circuits change only in :meth:`commit_circuits`, once the status
        that records the pass is written: a pass lost to a conflict neither counts
        its calls nor keeps a HalfOpen permit (:meth:`CircuitRegistry.rollback`).
        """
        for name in policies:
            if not self.circuits.known(namespace, name):
                body = self.read(circuits.PLURAL, namespace, name)  # I/O: before the locks
                if body is not None:
                    self.circuits.observe_policy(body)
        with self.circuits.locked(namespace, policies):
            now = self.clock()  # under the locks: passes on one circuit see time in order
            view = self.circuits.view(namespace, policies, token, now)
            rows = bulkhead.rows_of(list(self.store.executions.values()), namespace,
                                    policies, exclude=observation.name)
            for policy, held in view.held_slots.items():
                rows.setdefault(policy, []).extend(held)
            result = plan(replace(observation, now=now, policies=view.specs,
                                  invalid_policies=view.invalid, circuits=view.circuits,
                                  bulkheads=rows))
            self.circuits.reserve(namespace, token, result.ops, result.slots)
            steps = {s.name: s for s in observation.spec.all_steps()}
            self.circuits.note_waiting(namespace, (namespace, observation.name), policies, {
                c.policy for n, st in result.status.steps.items()
                if st.reason == "BulkheadFull" and st.phase in ("Waiting", "Retrying")
                and n in steps and (c := steps[n].circuit) is not None})
        self.report_transitions(namespace, view.transitions)
        return result

    def commit_circuits(self, namespace: str, policies: list[str], token: str,
                        result: Plan) -> None:
        """A written pass's circuit operations onto the circuits as they are now; then
        the metrics and the policies' Events of what changed."""
        with self.circuits.locked(namespace, policies):
            changed, transitions = self.circuits.commit(namespace, token, result.ops,
                                                        self.clock())
        for policy, key, outcome in result.calls:
            self.metrics.circuit_call(namespace, policy, key, outcome)
        for (policy, key), state in changed.items():
            self.metrics.set_circuit_failure_rate(
                namespace, policy, key, (state.failure_rate or 0.0) / 100)
        self.report_transitions(namespace, transitions)
        executions = list(self.store.executions.values())  # a snapshot: the loop writes it
        for policy, spec in self.circuits.specs(namespace, policies).items():
            if spec.bulkhead is not None:
                self.metrics.set_bulkhead_available(
                    namespace, policy, spec.bulkhead.max_concurrent
                    - bulkhead.in_use(executions, namespace, policy))

    def report_transitions(self, namespace: str,
                           transitions: list[tuple[str, str, Transition]]) -> None:
        """Circuit transitions as metrics and as Events on their CircuitPolicy."""
        for policy, key, transition in transitions:
            self.metrics.circuit_transition(namespace, policy, key, transition.from_,
                                            transition.to)
            body = self.circuits.body(namespace, policy)
            if body is not None:
                self.events.post(body, "Circuit" + transition.to,
                                 f"circuit {key}: {transition.from_} -> {transition.to}: "
                                 f"{transition.reason}", warning=transition.to == "Open")


    def frozen_spec(self, uid: str, status: RunbookExecutionStatus) -> RunbookSpec:
        """The execution's frozen runbook spec, parsed once per execution (it never changes)."""
        spec = self._specs.get(uid)
        if spec is None:
            spec = RunbookSpec.model_validate(status.runbook_spec)
            if len(self._specs) > 10000:
                self._specs.clear()
            self._specs[uid] = spec
        return spec


    # -- status ----------------------------------------------------------------------

    def write_status(self, body: dict[str, Any], status: RunbookExecutionStatus) -> bool:
        """Merge-patch what changed. False when the object moved on (409): plan again."""
        old = body.get("status") or {}
        # Every write says which spec it acted on (an approval or cancel bumps it).
        status.observed_generation = (body.get("metadata") or {}).get("generation")
        for condition in status.conditions:
            condition.observed_generation = status.observed_generation
        new = status.to_k8s()
        patch = merge.diff(old, new)
        if not patch:
            return True
        meta = body["metadata"]
        payload = {"metadata": {"resourceVersion": meta.get("resourceVersion")},
                   "status": patch}
        try:
            updated = self._patch(meta["namespace"], meta["name"], payload)
        except ApiException as exc:
            if exc.status == 409:
                log.info("status of %s/%s changed since it was read (resourceVersion %s); "
                         "re-reading", meta["namespace"], meta["name"],
                         meta.get("resourceVersion"))
                self.refresh(meta["namespace"], meta["name"])
                return False
            if exc.status == 404:
                return True
            raise
        self.store.put_fresh_execution(updated)
        return True

    def record_failures(self, key: Key, streak: dict[str, Any] | None) -> None:
        """Write ``status.reconcileFailures`` (None: clear it) of a running execution."""
        body = self.store.executions.get(key)
        status = (body or {}).get("status") or {}
        if body is None or status.get("phase") in FINISHED_EXECUTION_PHASES or \
                status.get("reconcileFailures") == streak:
            return
        try:
            updated = self._patch(key[0], key[1], {"status": {"reconcileFailures": streak}})
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.store.put_fresh_execution(updated)

    def fail_internal(self, key: Key, summary: str, count: int) -> bool:
        """Mark an execution whose passes keep raising ``summary`` as Failed (InternalError).

        Built from the raw object, not the models: what broke the pass may be in them.
        Returns whether the status was written (or there is nothing left to write).
        """
        body = self.store.executions.get(key)
        status = (body or {}).get("status") or {}
        if body is None or status.get("phase") in FINISHED_EXECUTION_PHASES:
            return True
        now = fmt(self.clock())
        message = clean_text(SECRETS.text(
            f"the operator failed to reconcile this execution {count} times in a row: "
            f"{summary}; running Jobs were left to finish. Report this with the "
            "operator's log; a new execution may succeed"))[:1024]
        patch = {"status": {
            **appended(status, {"time": now, "event": "ExecutionFailed",
                                "message": message[:512]}),
            "phase": "Failed", "reason": "InternalError", "message": message,
            "finishedAt": now,
            "observedGeneration": (body.get("metadata") or {}).get("generation"),
            "conditions": [{"type": "Succeeded", "status": "False", "reason": "InternalError",
                            "message": message, "lastTransitionTime": now}]}}
        meta = body["metadata"]
        try:
            updated = self._patch(meta["namespace"], meta["name"], patch)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        self.store.put_fresh_execution(updated)
        self.store.forget_children(key)
        self._specs.pop(meta.get("uid") or "", None)
        runbook = ((body.get("spec") or {}).get("runbookRef") or {}).get("name") or ""
        self.metrics.execution_finished(key[0], str(runbook), "Failed", None)
        self.events.post(body, "InternalError", message, warning=True)
        audit.error("InternalError", runbook=runbook, message=message)
        return True

    @retrying
    def _patch(self, namespace: str, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.clients.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, payload)
        return result

    def refresh(self, namespace: str, name: str) -> None:
        fresh = self.read(PLURAL, namespace, name)
        if fresh is not None:
            self.store.put_fresh_execution(fresh)

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A direct read of one of our objects (None when it does not exist).

        Used where the watch may lag: a just-created Runbook or CircuitPolicy, or an
        execution whose status moved on.
        """
        return read_object(self.clients, plural, namespace, name)


def secret_literals(spec: RunbookSpec, params: dict[str, Any]) -> list[str]:
    """The forms in which secret parameter values may appear in text (as given, as JSON)."""
    out: list[str] = []
    for name in secret_names(spec.params):
        value = params.get(name)
        if value is not None:
            out += secret_forms(value)
    return out


def _left_bulkhead(before: StepStatus, after: StepStatus | None) -> bool:
    """Whether a step gave up a bulkhead slot or its place in a bulkhead's line."""
    if after is None:
        return False
    if before.circuit and before.phase == "Running":
        return after.phase != "Running"
    return before.reason == "BulkheadFull" and after.reason != "BulkheadFull"


