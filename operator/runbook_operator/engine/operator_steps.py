"""The steps the operator runs itself, without a Job: waits and approvals.

Why it exists: the planner decides a whole pass; a wait step (a duration) and an
approval step (decisions in ``spec.approvals``, a timeout, who may decide) have
their own small rules, kept here. Pure like the planner, with the time passed in;
``OperatorSteps`` is a mixin of the planner's pass.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_operator.api.common import parse_duration
from runbook_operator.api.execution import StepPhase, StepStatus
from runbook_operator.api.runbook import Step
from runbook_operator.engine.approvals import may_decide
from runbook_operator.engine.plans import _clip
from runbook_operator.engine.timeutil import fmt, parse

if TYPE_CHECKING:
    from runbook_operator.engine.plans import Observation, Plan


class OperatorSteps:
    """Wait and approval decisions of one pass (a mixin of ``planner._Pass``)."""

    if TYPE_CHECKING:
        obs: Observation
        plan: Plan
        now: datetime

        def st(self, name: str) -> StepStatus: ...

        def transition(self, step: str, phase: StepPhase, reason: str | None, message: str,
                       warning: bool = False) -> None: ...

        def record(self, event: str, step: str | None, message: str) -> None: ...

        def wake(self, at: datetime) -> None: ...

        def variables(self) -> dict[str, Any]: ...

        def event(self, reason: str, message: str, warning: bool = False,
                  step: str | None = None, attempt: int | None = None) -> None: ...

        def advance_query(self, step: Step, st: StepStatus) -> None: ...

    def advance_operator_steps(self) -> None:
        for step in self.obs.spec.all_steps():
            st = self.st(step.name)
            started = parse(st.started_at)
            if step.type == "wait" and st.phase == "Running":
                self.advance_wait(step, st, started)
            elif step.type == "approval" and st.phase == "WaitingForApproval":
                self.advance_approval(step, st, started)
            elif step.type == "query" and st.phase == "Running":
                self.advance_query(step, st)

    def advance_wait(self, step: Step, st: StepStatus, started: datetime | None) -> None:
        if step.wait is None or started is None:
            return
        end = started + parse_duration(step.wait.duration)
        if self.now >= end:
            st.finished_at = fmt(end)
            self.transition(step.name, "Succeeded", "Waited", f"waited {step.wait.duration}")
        else:
            self.wake(end)

    def advance_approval(self, step: Step, st: StepStatus, started: datetime | None) -> None:
        decision = next((a for a in reversed(self.obs.approvals)
                         if a.step == step.name and may_decide(step, a)), None)
        if decision is not None:
            who = f" by {decision.by}" if decision.by else ""
            note = f": {decision.comment}" if decision.comment else ""
            st.finished_at = fmt(self.now)
            if decision.decision == "Approve":
                self.transition(step.name, "Succeeded", "Approved", f"approved{who}{note}")
            else:
                self.transition(step.name, "Failed", "Rejected", f"rejected{who}{note}",
                                warning=True)
            return
        self.note_ignored_decisions(step, st)
        if step.approval and step.approval.timeout and started:
            deadline = started + parse_duration(step.approval.timeout)
            if self.now >= deadline:
                st.finished_at = fmt(deadline)
                self.transition(step.name, "Failed", "ApprovalTimeout",
                                f"no decision within {step.approval.timeout}", warning=True)
            else:
                self.wake(deadline)

    def note_ignored_decisions(self, step: Step, st: StepStatus) -> None:
        """Say on the waiting step whose decisions were ignored (once per new name)."""
        ignored = sorted({a.by or "(no by)" for a in self.obs.approvals
                          if a.step == step.name and not may_decide(step, a)})
        if not ignored:
            return
        waiting = step.approval.message if step.approval and step.approval.message else \
            f"waiting for an approval of step {step.name!r} in spec.approvals"
        note = _clip(f"{waiting}; ignored decisions by {', '.join(ignored)}: only "
                     "approvers.users of this step may decide")
        if st.message != note:
            st.message = note
            self.record("ApprovalIgnored", step.name, note)
            self.event("ApprovalIgnored", f"step {step.name}: {note}", warning=True,
                       step=step.name)

    # -- stopping ---------------------------------------------------------------
