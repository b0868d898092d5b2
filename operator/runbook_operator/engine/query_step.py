"""The query-step half of a planning pass: start a query step, apply its checks.

Why it exists: the planner decides a whole pass; a query step has its own small
state machine (``engine.query.apply_check``) and its own durable counts
(``StepStatus.query``), kept here so the planner only dispatches to it. Pure like
the planner: the check itself was made by the shell, which hands it over in
``Observation.checks`` (by step name, for the check numbered ``query.checks + 1``);
a check whose status write is lost is made again, never counted twice.
``QuerySteps`` is a mixin of the planner's pass.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_operator.api.execution import QueryStatus, StepPhase, StepStatus
from runbook_operator.api.runbook import Retry, Step
from runbook_operator.engine.query import QueryState, apply_check, step_deadline
from runbook_operator.engine.timeutil import fmt, parse

if TYPE_CHECKING:
    from runbook_operator.engine.plans import Observation, ObservedJob


def due_checks(steps: list[Step], statuses: dict[str, StepStatus],
               now: datetime) -> list[tuple[Step, int]]:
    """The query steps whose next check is due, with that check's number (for the shell)."""
    due = []
    for step in steps:
        st = statuses.get(step.name)
        if step.type != "query" or step.query is None or st is None or st.phase != "Running":
            continue
        q = st.query or QueryStatus()
        at = parse(q.next_check_at)
        if at is None or now >= at:
            due.append((step, q.checks + 1))
    return due


def _state(q: QueryStatus) -> QueryState:
    return QueryState(checks=q.checks, successes=q.successes, failures=q.failures,
                      errors=q.errors, next_check_at=parse(q.next_check_at),
                      last_outcome=q.last_outcome)


class QuerySteps:
    """Query-step decisions of one pass (a mixin of ``planner._Pass``)."""

    if TYPE_CHECKING:
        obs: Observation
        now: datetime

        def st(self, name: str) -> StepStatus: ...

        def transition(self, step: str, phase: StepPhase, reason: str | None, message: str,
                       warning: bool = False) -> None: ...

        def wake(self, at: datetime) -> None: ...

        def keep_outputs(self, st: StepStatus, outputs: dict[str, Any]) -> str | None: ...

        def retry_of(self, step: Step) -> Retry | None: ...

        def admit(self, step: Step, st: StepStatus) -> bool: ...

        def record_call(self, step: Step, st: StepStatus, job: ObservedJob,
                        failed: bool) -> None: ...

    def start_query(self, step: Step, st: StepStatus) -> None:
        """Start checking; a guarded step is one call through its circuit (``Guards``):
        an open circuit acts as ``onOpen`` says before any check."""
        if step.circuit is not None and not self.admit(step, st):
            return
        st.started_at = fmt(self.now)
        st.query = QueryStatus(next_check_at=fmt(self.now))
        source = step.query.source if step.query else "?"
        self.transition(step.name, "Running", "Querying", f"checking source {source}")
        self.wake(self.now)

    def advance_query(self, step: Step, st: StepStatus) -> None:
        query = step.query
        started = parse(st.started_at)
        if query is None or started is None:
            return
        q = st.query or QueryStatus()
        check = self.obs.checks.get(step.name)
        if check is not None and check.number == q.checks + 1:
            verdict = apply_check(query, _state(q), check.check, self.retry_of(step),
                                  self.obs.params, f"{self.obs.uid}/{step.name}")
            s = verdict.state
            st.query = QueryStatus(checks=s.checks, successes=s.successes, failures=s.failures,
                                   errors=s.errors, next_check_at=fmt(s.next_check_at)
                                   if s.next_check_at else None, last_outcome=s.last_outcome)
            warning = None
            if verdict.outputs is not None:
                warning = self.keep_outputs(st, verdict.outputs)
            message = verdict.message + (f"; {warning}" if warning else "")
            if verdict.phase != "Running":
                st.finished_at = fmt(check.check.at)
                self.query_call(step, st, started, check.check.at, verdict.phase == "Failed",
                                timed_out=verdict.outcome == "Timeout")
                self.transition(step.name, verdict.phase, verdict.reason, message,
                                warning=verdict.phase == "Failed")
                return
            if st.message != message:
                st.message = message[:1024]
            q = st.query
        deadline = step_deadline(started, step.timeout)
        if deadline is not None and self.now >= deadline:
            st.finished_at = fmt(deadline)
            self.query_call(step, st, started, deadline, True, timed_out=True)
            self.transition(step.name, "Failed", "DeadlineExceeded",
                            f"timeout {step.timeout} reached after {q.checks} checks "
                            f"({q.successes}/{query.count} in a row)", warning=True)
            return
        at = parse(q.next_check_at) or self.now
        self.wake(max(at, self.now) if deadline is None else min(max(at, self.now), deadline))

    def query_call(self, step: Step, st: StepStatus, started: datetime, ended: datetime,
                   failed: bool, timed_out: bool) -> None:
        """The finished query step as the one call its circuit sees."""
        if step.circuit is None:
            return
        from runbook_operator.engine.plans import ObservedJob  # the planner imports this

        self.record_call(step, st, ObservedJob(
            name="", step=step.name, attempt=1, state="Failed" if failed else "Succeeded",
            reason="DeadlineExceeded" if timed_out else None, started_at=started,
            finished_at=ended), failed)
