"""Telemetry of an execution pass: Prometheus metrics and OpenTelemetry spans.

Why it exists: what a pass changed is counted and traced once, apart from the
reconcile flow (``executions.py``): finished steps and executions, retries and
step-to-step latency as metrics; one span per finished attempt and one for the
execution. ``Telemetry`` is a mixin of ``ExecutionReconciler``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_operator.api.execution import (
    FINISHED_EXECUTION_PHASES,
    FINISHED_STEP_PHASES,
    RunbookExecution,
    RunbookExecutionStatus,
    StepStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.approvals import may_decide
from runbook_operator.engine.plans import AttemptEnded, AttemptRecord, AttemptStarted, Plan
from runbook_operator.engine.timeutil import fmt, parse
from runbook_operator.observability.tracing import (
    ExecutionInfo,
    approval_event,
    circuit_rejection_event,
)

if TYPE_CHECKING:
    from runbook_operator.observability.metrics import Metrics
    from runbook_operator.observability.tracing import ExecutionTracer


class Telemetry:
    """Metrics and spans of a pass (a mixin of ``ExecutionReconciler``)."""

    if TYPE_CHECKING:
        metrics: Metrics
        tracer: ExecutionTracer
        clock: Callable[[], datetime]

    def record_metrics(self, namespace: str, runbook: str, spec: RunbookSpec,
                       before: RunbookExecutionStatus, result: Plan, now: datetime) -> None:
        """Count what this pass changed (once: a transition is only new in one pass)."""
        after = result.status
        ended = {r.step: r for r in result.attempts if isinstance(r, AttemptEnded)}
        for name, st in after.steps.items():
            old = before.steps.get(name)
            if st.phase in FINISHED_STEP_PHASES and (old is None or old.phase != st.phase):
                # Every finished step is one sample: a step that ended before it was
                # seen Running takes its start from its Job (the planner's record).
                self.metrics.step_finished(namespace, runbook, name, st.phase,
                                           step_duration(st, old, ended.get(name)))
        steps = {s.name: s for s in spec.all_steps()}
        for record in result.attempts:
            if not isinstance(record, AttemptStarted):
                continue
            if record.attempt > 1:
                self.metrics.step_retried(namespace, runbook, record.step)
                continue
            deps = [after.steps[d].finished_at for d in steps[record.step].depends_on
                    if d in after.steps]
            ready_at = max((t for t in (parse(d) for d in deps) if t), default=None)
            if ready_at is not None:
                self.metrics.step_transition((record.at - ready_at).total_seconds())
        if after.phase in FINISHED_EXECUTION_PHASES and before.phase != after.phase:
            self.metrics.execution_finished(namespace, runbook, after.phase,
                                            _seconds(after.started_at, after.finished_at))

    def record_spans(self, body: dict[str, Any], execution: RunbookExecution,
                     before: RunbookExecutionStatus, after: RunbookExecutionStatus,
                     spec: RunbookSpec | None = None,
                     attempts: Sequence[AttemptRecord] = ()) -> None:
        """One span per finished attempt and one for the execution.

        Phases and messages come from the statuses before and after the pass; when an
        attempt started, from the planner's records (``Plan.attempts``).
        """
        records = {(r.step, r.attempt): r for r in attempts if isinstance(r, AttemptEnded)}
        if not self.tracer.enabled:
            return
        info = ExecutionInfo.from_body(body)
        for name, st in after.steps.items():
            old = before.steps.get(name)
            if old is None or (old.phase == st.phase and old.attempts == st.attempts):
                continue
            if st.reason == "CircuitOpen" and st.phase in ("Failed", "Skipped"):
                # The call was never made: a span of no duration says who refused it.
                policy, _, key = (st.circuit or "").partition("/")
                self.tracer.step_span(
                    info, name, st.attempts + 1, phase=st.phase, started_at=st.finished_at,
                    finished_at=st.finished_at, reason=st.reason, message=st.message,
                    circuit="rejected", attributes={"runbook.circuit.policy": policy,
                                                    "runbook.circuit.key": key},
                    events=[circuit_rejection_event(st.finished_at, policy, key,
                                                    reason=st.message)])
                continue
            ended = st.phase in ("Succeeded", "Failed", "Retrying") or st.attempts > old.attempts
            if not ended or old.phase not in ("Running", "WaitingForApproval"):
                continue
            events = []
            if old.phase == "WaitingForApproval":
                step = next((s for s in spec.all_steps() if s.name == name), None) \
                    if spec else None
                # The decision the planner acted on: one it may take (see engine.approvals).
                decision = next((a for a in reversed(execution.spec.approvals)
                                 if a.step == name and (step is None or may_decide(step, a))),
                                None)
                if decision is not None:
                    events.append(approval_event(st.finished_at, decision.decision,
                                                 decision.by, decision.comment))
            same_attempt = st.attempts == old.attempts
            self.tracer.step_span(
                info, name, old.attempts, phase=st.phase if same_attempt else "Retrying",
                started_at=_started(records.get((name, old.attempts))) or old.started_at,
                finished_at=(st.finished_at if same_attempt else None) or fmt(self.clock()),
                job=old.job, exit_code=st.exit_code, reason=st.reason, message=st.message,
                next_attempt_at=st.next_attempt_at, events=events, **_circuit_of(old))
        if after.phase in FINISHED_EXECUTION_PHASES and before.phase != after.phase:
            self.tracer.execution_span(info, phase=after.phase, started_at=after.started_at,
                                       finished_at=after.finished_at, reason=after.reason,
                                       message=after.message)


def step_duration(st: StepStatus, old: StepStatus | None,
                  end: AttemptEnded | None) -> float | None:
    """Seconds from a finished step's start to its end, for its one duration sample.

    From the status' times (the first attempt's start to the end); a step that ended
    before it was seen Running takes its start from its Job (``end``). The end comes
    from the pod, in whole seconds, so a step that ends within the second it started
    can read as ending before its start: that is a step shorter than a second, never
    a reason to drop its sample.
    """
    started = st.started_at or (old.started_at if old else None) or _started(end)
    finished = st.finished_at or (fmt(end.finished_at) if end else None)
    seconds = _seconds(started, finished)
    if (seconds is None or seconds < 0) and end is not None and end.started_at is not None:
        seconds = (end.finished_at - end.started_at).total_seconds()  # one clock: the pod's
    return None if seconds is None else max(0.0, seconds)


def _started(record: AttemptEnded | None) -> str | None:
    """When an ended attempt's Job started, as the planner observed it."""
    return fmt(record.started_at) if record is not None and record.started_at else None


def _seconds(start: str | None, end: str | None) -> float | None:
    a, b = parse(start), parse(end)
    return (b - a).total_seconds() if a and b else None


def _circuit_of(st: StepStatus) -> dict[str, Any]:
    """The circuit decision of an admitted attempt, for its span."""
    if not st.circuit or not st.circuit_admitted_at:
        return {}
    policy, _, key = st.circuit.partition("/")
    return {"circuit": "trial" if st.circuit_trial else "allowed",
            "attributes": {"runbook.circuit.policy": policy, "runbook.circuit.key": key}}
