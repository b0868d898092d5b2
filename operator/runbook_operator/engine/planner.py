"""The planner: from what is observed to what to do next, as a pure function.

``plan(observation) -> Plan`` reads the execution's status, its frozen runbook
spec and the Jobs observed on the cluster, and returns the next status, the Jobs
to create or delete, the Events to post and when to look again. It reads no
clock (``now`` is given) and draws no random numbers (jitter is hashed), so a
replayed or duplicated observation yields the same plan, and a plan carried out
twice changes nothing: Job names are deterministic and creation is idempotent.

The observed Jobs are authoritative over the status: a Job that exists for an
attempt the status does not know yet (the operator created it, then died before
writing status) is adopted, never created again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from runbook_operator.api.common import Condition, parse_duration
from runbook_operator.api.execution import (
    FINISHED_STEP_PHASES,
    MAX_HISTORY,
    HistoryEntry,
    StepPhase,
    StepStatus,
)
from runbook_operator.api.runbook import Step
from runbook_operator.engine import backoff
from runbook_operator.engine.cel import CelError, evaluate_bool
from runbook_operator.engine.dag import topological
from runbook_operator.engine.guards import Guards
from runbook_operator.engine.names import job_name
from runbook_operator.engine.operator_steps import OperatorSteps
from runbook_operator.engine.outputs import clean_text, parse_outputs
from runbook_operator.engine.plans import (  # the planner's API: its types live there
    MAX_SCANNED,
    MAX_TOTAL_OUTPUTS,
    POD_GRACE,
    AttemptEnded,
    AttemptStarted,
    CreateJob,
    DeleteJob,
    Event,
    Observation,
    ObservedJob,
    Plan,
    _clip,
)
from runbook_operator.engine.podsecurity import (
    allowance_hint,
    check_step_security,
)
from runbook_operator.engine.query_step import QuerySteps
from runbook_operator.engine.redact import Redactor, redact, redact_text
from runbook_operator.engine.staging import Staging
from runbook_operator.engine.timeutil import fmt, parse


def plan(obs: Observation) -> Plan:
    """The next step of one execution."""
    status = obs.status.model_copy(deep=True)
    result = Plan(status)
    if status.phase in ("Succeeded", "Failed", "Cancelled", "Pending", "Queued"):
        return result
    _Pass(obs, result).run()
    forms = secret_forms(obs)
    if forms:
        _scrub_plan(result, forms)
    return result


def secret_forms(obs: Observation) -> list[str]:
    """The values of secret parameters as they may appear in text (longest first)."""
    forms: set[str] = set()
    for param in obs.spec.params:
        value = obs.params.get(param.name)
        if param.secret and value is not None:
            forms |= {f for f in (str(value), json.dumps(value)) if len(f) >= 3}
    return sorted(forms, key=len, reverse=True)


def _scrub_plan(result: Plan, forms: Sequence[str]) -> None:
    """A container can echo a secret into its termination message: none of it is kept.

    The same Redactor as the logs' (built here from this execution's values alone:
    the planner stays pure), down to three-character secrets.
    """
    redactor = Redactor(forms, min_length=3)
    scrub = redactor.text
    status = result.status
    # Clipped again: a marker longer than the secret it replaces must not push a
    # message past the schema's maxLength (the status write would be refused).
    for st in status.steps.values():
        if st.message:
            st.message = _clip(scrub(st.message))
        if st.outputs:
            st.outputs = redactor.value(st.outputs)
    if status.message:
        status.message = _clip(scrub(status.message), 4096)
    for entry in status.history:
        if entry.message:
            entry.message = _clip(scrub(entry.message), 512)
    for condition in status.conditions:
        condition.message = _clip(scrub(condition.message), 4096)
    result.events = [replace(e, message=scrub(e.message)) for e in result.events]


class _Pass(Guards, QuerySteps, Staging, OperatorSteps):
    """One planning pass; mutates ``plan.status`` and collects actions."""

    def __init__(self, obs: Observation, result: Plan) -> None:
        self.obs = obs
        self.plan = result
        self.status = result.status
        self.now = obs.now
        self.dag = list(obs.spec.steps)
        self.finally_ = list(obs.spec.finally_)
        self.by_name: dict[str, Step] = {s.name: s for s in obs.spec.all_steps()}
        self.finally_names = {s.name for s in self.finally_}
        for step in obs.spec.all_steps():
            self.status.steps.setdefault(step.name, StepStatus())
        self._variables: dict[str, Any] | None = None
        self.bulkhead_rows = {p: list(rows) for p, rows in obs.bulkheads.items()}
        for name, st in obs.status.steps.items():
            # This execution's own running guarded steps hold slots too.
            since = parse(st.circuit_admitted_at)
            if st.circuit and st.phase == "Running" and since is not None:
                self.bulkhead_rows.setdefault(st.circuit.split("/", 1)[0], []).append(
                    (f"{obs.namespace}/{obs.name}/{name}", "running", since, obs.severity))
        self.fallback_of = {s.circuit.fallback: s.name for s in obs.spec.all_steps()
                            if s.circuit and s.circuit.on_open == "Fallback"
                            and s.circuit.fallback}
        """Fallback step -> the guarded step it stands in for."""
        self._outputs_used: int | None = None
        self.running_jobs = sum(
            1 for s in obs.spec.all_steps()
            if s.type == "run" and self.st(s.name).phase == "Running"
        )

    def st(self, name: str) -> StepStatus:
        return self.status.steps[name]

    # -- the pass --------------------------------------------------------------

    def run(self) -> None:
        self.adopt_jobs()
        self.observe_jobs()
        self.advance_operator_steps()
        stop = self.stop_reason()
        if stop in ("Cancelled", "Timeout") and not self.dag_finished():
            self.abort_dag(stop)
        self.start_due_retries(stop)
        self.schedule(self.dag, stop)
        self.stage_ahead(self.stop_reason())
        if self.dag_finished():
            self.schedule(self.finally_, None)
        self.sweep_staged(self.stop_reason(), self.by_name)
        self.finish_or_summarise()

    def adopt_jobs(self) -> None:
        """Jobs newer than the status knows were created by a pass whose status was lost."""
        for job in self.obs.jobs.values():
            st = self.status.steps.get(job.step)
            if st is None or job.attempt <= st.attempts or job.name in self.obs.foreign_jobs \
                    or job.name in self.obs.unverified_jobs or self.held_back(job):
                continue
            st.attempts = job.attempt
            st.job = job.name
            st.next_attempt_at = None
            step = self.by_name.get(job.step)
            if step is not None and step.circuit is not None:
                # The lost pass admitted it: its call must count all the same.
                ident = self.circuit_of(step)
                if ident is not None:
                    st.circuit = f"{ident[0]}/{ident[1]}"
                    st.circuit_trial = None
                    st.circuit_admitted_at = fmt(job.started_at or self.now)
            if st.phase != "Running":
                self.transition(job.step, "Running", None, f"attempt {job.attempt} (adopted Job)")
                self.running_jobs += 1
            self.plan.attempts.append(AttemptStarted(job.step, job.attempt, job.name,
                                                     job.started_at or self.now))
            st.started_at = st.started_at or fmt(job.started_at or self.now)

    def observe_jobs(self) -> None:
        for step in self.obs.spec.all_steps():
            st = self.st(step.name)
            if step.type != "run" or st.phase != "Running" or st.job is None:
                continue
            job = self.obs.jobs.get(st.job)
            if job is None and st.job in self.obs.lost_jobs:
                job = ObservedJob(name=st.job, step=step.name, attempt=st.attempts,
                                  state="Failed", reason="JobDeleted",
                                  message="the Job was deleted before it finished",
                                  finished_at=self.now, pod_terminated=True)
            late = self.staged_deadline(step, st, job) if job is not None else None
            if late is not None:  # timed out by the operator's clock (engine.staging)
                self.drop_job(late.name)
                job = late
            if job is None or job.state == "Active":
                continue
            if not job.pod_terminated and job.finished_at is not None:
                grace_end = job.finished_at + POD_GRACE
                if self.now < grace_end:
                    self.wake(grace_end)
                    continue
            self.running_jobs -= 1
            self.plan.attempts.append(AttemptEnded(step.name, st.attempts, job.name,
                                                   job.started_at, job.finished_at or self.now))
            if st.started_at is None and job.started_at is not None:
                st.started_at = fmt(job.started_at)  # never seen Running: the Job's start
            self.record_call(step, st, job, failed=job.state != "Succeeded")
            if job.state == "Succeeded":
                self.attempt_succeeded(step, job)
            else:
                self.attempt_failed(step, job)

    def attempt_succeeded(self, step: Step, job: ObservedJob) -> None:
        st = self.st(step.name)
        st.exit_code = job.exit_code if job.exit_code is not None else 0
        outputs, warning = parse_outputs(job.termination_message)
        warning = self.keep_outputs(st, redact(outputs)) or warning
        st.finished_at = fmt(job.finished_at or self.now)
        self.transition(step.name, "Succeeded", None,
                        warning or f"attempt {st.attempts} succeeded")
        if not warning:
            st.message = None  # the history says it; 500 steps' status stays small

    def keep_outputs(self, st: StepStatus, outputs: dict[str, Any]) -> str | None:
        """Record outputs unless the execution's outputs budget is spent; say so if it is."""
        if self._outputs_used is None:
            self._outputs_used = sum(_json_size(s.outputs) for s in self.status.steps.values()
                                     if s.outputs)
        if st.outputs:
            self._outputs_used -= _json_size(st.outputs)
        st.outputs = None
        if not outputs:
            return None
        size = _json_size(outputs)
        if self._outputs_used + size > MAX_TOTAL_OUTPUTS:
            return (f"outputs dropped: the execution's outputs already use "
                    f"{self._outputs_used} of {MAX_TOTAL_OUTPUTS} bytes")
        st.outputs = outputs
        self._outputs_used += size
        return None

    def attempt_failed(self, step: Step, job: ObservedJob) -> None:
        st = self.st(step.name)
        timed_out = job.timed_out
        st.exit_code = job.exit_code
        outputs, _ = parse_outputs(job.termination_message)
        self.keep_outputs(st, redact(outputs))
        # What a failing tool prints is the likeliest place for a credential.
        # Bounded before the scan and made valid UTF-8: the status must stay writable.
        detail = _clip(redact_text(clean_text(
            (job.termination_message or job.message or "")[:MAX_SCANNED])))
        failed_at = job.finished_at or self.now
        reason = "DeadlineExceeded" if timed_out else job.reason or "Failed"
        what = f"attempt {st.attempts} failed ({reason}"
        what += f", exit code {job.exit_code})" if job.exit_code is not None else ")"
        # A cancel or timeout stops DAG retries; finally steps keep their retry policy.
        stopping = step.name not in self.finally_names and \
            self.stop_reason() in ("Cancelled", "Timeout")
        retry = self.retry_of(step)
        if not stopping and backoff.should_retry(retry, st.attempts, job.exit_code, timed_out):
            assert retry is not None
            at = backoff.next_attempt_at(retry, st.attempts, failed_at,
                                         f"{self.obs.uid}/{step.name}/{st.attempts}")
            st.next_attempt_at = fmt(at)
            self.transition(step.name, "Retrying", reason,
                            f"{what}; attempt {st.attempts + 1} at {fmt(at)}"
                            + (f": {detail}" if detail else ""))
            self.wake(at)
            return
        st.finished_at = fmt(failed_at)
        self.transition(step.name, "Failed", reason, f"{what}" + (f": {detail}" if detail else ""),
                        warning=True)

    def stop_reason(self) -> str | None:
        """Why no new DAG step may start: Cancelled, Timeout, StepFailed, or None."""
        if self.status.reason in ("Cancelled", "Timeout"):
            return self.status.reason
        if self.obs.cancel:
            return "Cancelled"
        deadline = self.deadline()
        if deadline is not None and self.now >= deadline and not self.dag_finished():
            return "Timeout"
        if deadline is not None and self.now < deadline:
            self.wake(deadline)
        if self.failed_dag_step() is not None:
            return "StepFailed"
        return None

    def cancel_message(self) -> str:
        return _clip(self.obs.cancel_message or "cancelled by spec.cancel", 1000)

    def deadline(self) -> datetime | None:
        started = parse(self.status.started_at)
        if self.obs.spec.timeout is None or started is None:
            return None
        return started + parse_duration(self.obs.spec.timeout)

    def failed_dag_step(self) -> str | None:
        for step in self.dag:
            if self.st(step.name).phase == "Failed" and not step.continue_on_failure:
                return step.name
        return None

    def abort_dag(self, reason: str) -> None:
        """Cancel or time out: stop what runs, skip what has not started."""
        if self.status.reason != reason:
            self.status.reason = reason
            self.status.message = (self.cancel_message() if reason == "Cancelled"
                                   else f"execution timeout {self.obs.spec.timeout} reached")
            self.event("Execution" + reason, self.status.message, warning=True)
        for step in self.dag:
            st = self.st(step.name)
            if st.phase in FINISHED_STEP_PHASES:
                continue
            if st.phase == "Running" and step.type == "run" and st.job:
                self.plan.actions.append(DeleteJob(st.job))
                self.running_jobs -= 1
                job = self.obs.jobs.get(st.job)
                self.plan.attempts.append(AttemptEnded(step.name, st.attempts, st.job,
                                                       job.started_at if job else None,
                                                       self.now))
                self.release_permit(st)
            if st.phase in ("Running", "WaitingForApproval", "Retrying"):
                st.next_attempt_at = None
                st.finished_at = fmt(self.now)
                self.transition(step.name, "Failed", reason, self.status.message or reason,
                                warning=True)
            else:
                self.transition(step.name, "Skipped", reason, self.status.message or reason)

    # -- scheduling -------------------------------------------------------------

    def start_due_retries(self, stop: str | None) -> None:
        for step in self.obs.spec.all_steps():
            st = self.st(step.name)
            if st.phase != "Retrying":
                continue
            if stop is not None and step.name not in self.finally_names:
                st.finished_at = fmt(self.now)
                st.next_attempt_at = None
                self.transition(step.name, "Failed", st.reason, "no retry: the execution is "
                                f"stopping ({stop})", warning=True)
                continue
            due = parse(st.next_attempt_at) or self.now
            if self.now < due:
                self.wake(due)
            elif self.may_start(step):
                self.start_job(step, st.attempts + 1)

    def schedule(self, steps: list[Step], stop: str | None) -> None:
        dag = steps is self.dag
        for step in topological(steps):
            st = self.st(step.name)
            if st.phase == "Waiting" and step.type in ("run", "query"):  # a bulkhead's line
                if (stop is None or not dag) and step.type == "run":
                    self.start_job(step, 1)
                elif stop is None or not dag:
                    self.start_query(step, st)
                else:
                    self.transition(step.name, "Skipped", stop if stop != "StepFailed"
                                    else "UpstreamFailed", f"not run: {stop}")
                continue
            if st.phase != "Pending":
                continue
            guarded = self.fallback_of.get(step.name)
            if guarded is not None:
                g = self.st(guarded)
                if g.phase not in FINISHED_STEP_PHASES:
                    continue  # a fallback waits for the step it may stand in for
                if not (g.phase == "Skipped" and g.reason == "CircuitOpen"):
                    self.transition(step.name, "Skipped", "FallbackNotNeeded",
                                    f"{guarded} ran; its fallback is not needed")
                    continue
            deps = [self.st(d) for d in step.depends_on if d in self.status.steps]
            if any(d.phase not in FINISHED_STEP_PHASES for d in deps):
                continue
            if stop is not None:
                why = "UpstreamFailed" if stop == "StepFailed" else stop
                failed = self.failed_dag_step()
                msg = (f"not run: step {failed!r} failed" if stop == "StepFailed" and failed
                       else f"not run: {stop}")
                self.transition(step.name, "Skipped", why, msg)
                continue
            if step.when is not None:
                try:
                    go = evaluate_bool(step.when, self.variables())
                except CelError as exc:
                    st.finished_at = fmt(self.now)
                    self.transition(step.name, "Failed", "ExpressionError",
                                    _clip(str(exc)), warning=True)
                    if dag:
                        stop = self.stop_reason()
                    continue
                if not go:
                    self.transition(step.name, "Skipped", "WhenFalse",
                                    f"when {step.when!r} is false")
                    continue
            elif any(d.phase != "Succeeded" for d in deps):
                bad = [n for n in step.depends_on if self.st(n).phase != "Succeeded"]
                self.transition(step.name, "Skipped", "UpstreamFailed",
                                f"not run: {', '.join(bad)} did not succeed")
                continue
            self.start(step)
            if dag and self.st(step.name).phase == "Failed":
                stop = self.stop_reason()

    def start(self, step: Step) -> None:
        st = self.st(step.name)
        if step.type == "run":
            if self.may_start(step):
                self.start_job(step, 1)
        elif step.type == "wait":
            st.started_at = fmt(self.now)
            self.transition(step.name, "Running", "Waiting", f"waiting {step.wait.duration}"
                            if step.wait else "waiting")
            self.advance_wait(step, st, self.now)
        elif step.type == "query":
            self.start_query(step, st)
        else:
            st.started_at = fmt(self.now)
            message = step.approval.message if step.approval and step.approval.message else \
                f"waiting for an approval of step {step.name!r} in spec.approvals"
            self.transition(step.name, "WaitingForApproval", "AwaitingDecision", message)
            self.advance_approval(step, st, self.now)

    def start_job(self, step: Step, attempt: int) -> None:
        st = self.st(step.name)
        name = job_name(self.obs.name, step.name, attempt)
        refused = self.refused(step, attempt, name)
        if refused is not None:  # before the circuit: a Job that cannot exist takes no permit
            st.finished_at = fmt(self.now)
            st.next_attempt_at = None
            self.transition(step.name, "Failed", refused[0], refused[1], warning=True)
            return
        if step.circuit is not None and not self.admit(step, st):
            return
        st.attempts = attempt
        st.job = name
        st.next_attempt_at = None
        st.exit_code = None
        st.started_at = st.started_at or fmt(self.now)
        st.finished_at = None
        if attempt == 1 and self.staged_job(name) is not None:
            self.lift(step, name)
        else:
            self.plan.actions.append(CreateJob(step.name, attempt, name))
        self.plan.attempts.append(AttemptStarted(step.name, attempt, name, self.now))
        self.running_jobs += 1
        self.transition(step.name, "Running", "JobCreated", f"attempt {attempt}: Job {name}")

    def refused(self, step: Step, attempt: int, name: str) -> tuple[str, str] | None:
        """(reason, message) when this attempt's Job must not or cannot be created."""
        if self.obs.security is not None:
            annotations = step.pod_metadata.annotations if step.pod_metadata else None
            bad, _ = check_step_security([(step.name, step.security_context, annotations)],
                                         None, self.obs.namespace, self.obs.security)
            if bad:
                return "PrivilegedStep", _clip(f"{bad[0].field}: {bad[0].message}; "
                                               + allowance_hint(self.obs.namespace))
        foreign = self.obs.foreign_jobs.get(name)
        if foreign is not None:  # its outcome would be whoever made it's, not the step's
            return "ForeignJob", _clip(f"attempt {attempt}: Job {name} exists but is not the "
                                       f"Job the operator builds for this step ({foreign}); "
                                       "not adopted, the step does not run")
        failure = self.obs.create_failures.get(name)
        if failure is not None:
            return failure.reason, _clip(f"attempt {attempt}: Job {name}: {failure.message}")
        return None

    def stage_job(self, step: Step, name: str) -> None:
        self.plan.actions.append(CreateJob(step.name, 1, name, staged=True))

    def drop_job(self, name: str) -> None:
        if DeleteJob(name) not in self.plan.actions:
            self.plan.actions.append(DeleteJob(name))

    # -- finishing --------------------------------------------------------------

    def dag_finished(self) -> bool:
        return all(self.st(s.name).phase in FINISHED_STEP_PHASES for s in self.dag)

    def finish_or_summarise(self) -> None:
        steps = self.obs.spec.all_steps()
        done = sum(1 for s in steps if self.st(s.name).phase in FINISHED_STEP_PHASES)
        self.status.progress = f"{done}/{len(steps)}"
        if done < len(steps):
            waiting = any(self.st(s.name).phase == "WaitingForApproval" for s in steps)
            self.status.phase = "WaitingForApproval" if waiting else "Running"
            self.set_condition("Unknown", self.status.phase, "the execution is in progress")
            return
        failed_finally = next((s.name for s in self.finally_ if self.st(s.name).phase == "Failed"
                               and not s.continue_on_failure), None)
        failed = self.failed_dag_step()
        stop = self.stop_reason()
        if stop == "Cancelled":
            phase, reason = "Cancelled", self.obs.cancel_reason or "Cancelled"
            message = self.cancel_message()
        elif stop == "Timeout":
            phase, reason = "Failed", "Timeout"
            message = f"execution timeout {self.obs.spec.timeout} reached"
        elif failed is not None:
            phase, reason = "Failed", "StepFailed"
            message = f"step {failed!r} failed: {self.st(failed).message or ''}".strip()
        elif failed_finally is not None:
            phase, reason = "Failed", "FinallyFailed"
            message = f"finally step {failed_finally!r} failed: " \
                      f"{self.st(failed_finally).message or ''}".strip()
        else:
            phase, reason, message = "Succeeded", "Succeeded", "all steps finished"
        self.status.phase = phase  # type: ignore[assignment]
        self.status.reason = reason
        self.status.message = _clip(message, 4000)
        self.status.finished_at = fmt(self.now)
        self.set_condition("True" if phase == "Succeeded" else "False", reason, message)
        self.record("Execution" + phase, None, message)
        self.event("Execution" + phase, message, warning=phase != "Succeeded")
        self.plan.wake_at = None

    # -- bookkeeping --------------------------------------------------------------

    def transition(self, step: str, phase: StepPhase, reason: str | None, message: str,
                   warning: bool = False) -> None:
        st = self.st(step)
        self._variables = None
        st.phase = phase
        st.reason = reason
        st.message = _clip(message)
        event = "Step" + phase
        self.record(event, step, message)
        self.event(event, f"step {step}: {message}", warning=warning, step=step,
                   attempt=st.attempts or None)

    def record(self, event: str, step: str | None, message: str) -> None:
        history = self.status.history
        history.append(HistoryEntry(time=fmt(self.now), event=event, step=step,
                                    message=_clip(message, 512)))
        overflow = len(history) - MAX_HISTORY
        if overflow > 0:
            del history[:overflow]
            self.status.history_dropped += overflow

    def event(self, reason: str, message: str, warning: bool = False,
              step: str | None = None, attempt: int | None = None) -> None:
        self.plan.events.append(Event(reason, _clip(message), warning, step, attempt))

    def set_condition(self, value: Literal["True", "False", "Unknown"], reason: str,
                      message: str) -> None:
        current = next((c for c in self.status.conditions if c.type == "Succeeded"), None)
        if current is not None and current.status == value and current.reason == reason:
            return
        # The time of the last change of *status*: a new reason alone keeps it.
        since = current.last_transition_time if current is not None and \
            current.status == value else None
        condition = Condition(type="Succeeded", status=value, reason=reason,
                              message=_clip(message, 4000),
                              last_transition_time=since or fmt(self.now))
        self.status.conditions = [c for c in self.status.conditions if c.type != "Succeeded"]
        self.status.conditions.append(condition)

    def wake(self, at: datetime) -> None:
        if self.plan.wake_at is None or at < self.plan.wake_at:
            self.plan.wake_at = at

    def variables(self) -> dict[str, Any]:
        """What CEL expressions see: ``params``, ``steps`` and ``execution``."""
        if self._variables is None:
            self._variables = self._build_variables()
        return self._variables

    def _build_variables(self) -> dict[str, Any]:
        steps: dict[str, Any] = {}
        for name, st in self.status.steps.items():
            entry: dict[str, Any] = {"phase": st.phase, "attempts": st.attempts,
                                     "reason": st.reason or "", "outputs": st.outputs or {}}
            if st.exit_code is not None:
                entry["exitCode"] = st.exit_code
            steps[name] = entry
        execution = {
            "name": self.obs.name, "namespace": self.obs.namespace, "runbook": self.obs.runbook,
            "failed": self.failed_dag_step() is not None,
            "cancelled": self.stop_reason() == "Cancelled",
        }
        return {"params": dict(self.obs.params), "steps": steps, "execution": execution}


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))

