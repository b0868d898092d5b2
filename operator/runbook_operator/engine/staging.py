"""Pre-staged step Jobs: which to create gated, which gate to lift, which to delete.

Why it exists: between two steps the Job controller's queue is the wait (a
dependency's pod ends, the next Job is created, the Job controller makes its pod).
A step whose dependencies have all started gets its first attempt's Job ahead of
time, with a pod ``schedulingGates`` entry (``GATE``): the Job controller makes the
pod while the dependencies run and the scheduler leaves it alone. When the step
would start, one PATCH of the pod removes the gate and writes the upstream outputs
as pod annotations (``output_annotations``), which the container reads through
``env[].valueFrom.fieldRef`` when it starts. A staged Job whose step ends up not
running (skipped, a failed or cancelled run) is deleted.

The rules, pure like the planner whose mixin this is (``Staging``):
- only a run step's first attempt, with no circuit (a guarded step's permit is
  taken when it starts) and not a fallback or finally step, is staged; a step
  with no dependency starts at once and is never staged;
- ``spec.parallelism`` caps the run's Jobs whose pods have not ended, staged
  ones included: a step is staged only into room left under it, and a step
  starting on a plain Job when staged ones fill the cap deletes the staged Job
  of the step latest in the DAG (it waits on a retry, or on a step, that needs
  the room; deleting never deadlocks, it only forgoes that head start);
- a staged Job is never adopted as the step's attempt while its pod is gated
  (or not seen yet): the gate is lifted only by a step going ``Running`` through
  the planner's own start, after its dependencies ended and its ``when`` held;
- the lift is level-triggered: a ``Running`` step whose staged pod is still gated
  is lifted again (a crash between the status write and the PATCH);
- the step's timeout is kept by the operator's clock from the lift (a Job's
  ``activeDeadlineSeconds`` would count the gated time): the staged Job has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook_operator.api.common import parse_duration
from runbook_operator.api.execution import StepStatus
from runbook_operator.api.runbook import Step
from runbook_operator.engine.names import job_name
from runbook_operator.engine.plans import LiftGate
from runbook_operator.engine.timeutil import parse

if TYPE_CHECKING:
    from runbook_operator.engine.plans import Observation, ObservedJob, Plan

GATE = "runbooks.dev/dependencies"
"""The pod scheduling gate of a staged step Job."""

OUTPUTS_PREFIX = "outputs.runbooks.dev/"
"""Pod annotations holding an upstream step's outputs (JSON), by step name; a step
name is a DNS label of at most 63 characters, a valid annotation name part."""


def outputs_annotation(step: str) -> str:
    """The pod annotation that carries ``step``'s outputs to its dependants."""
    return OUTPUTS_PREFIX + step


def outputs_field_path(step: str) -> str:
    """The ``fieldRef`` path a staged container reads ``step``'s outputs from."""
    return f"metadata.annotations['{outputs_annotation(step)}']"


def output_annotations(step: Step, outputs: Mapping[str, Mapping[str, Any] | None]
                       ) -> dict[str, str]:
    """The annotations the gate lift writes: each dependency's outputs as JSON."""
    return {outputs_annotation(dep): json.dumps(outputs.get(dep) or {}, separators=(",", ":"))
            for dep in step.depends_on}


class Staging:
    """Staging decisions of one pass (a mixin of ``planner._Pass``)."""

    if TYPE_CHECKING:
        obs: Observation
        plan: Plan
        now: datetime
        dag: list[Step]
        by_name: dict[str, Step]
        fallback_of: dict[str, str]
        running_jobs: int

        def st(self, name: str) -> StepStatus: ...

        def wake(self, at: datetime) -> None: ...

        def refused(self, step: Step, attempt: int, name: str) -> tuple[str, str] | None: ...

        def drop_job(self, name: str) -> None: ...

        def stage_job(self, step: Step, name: str) -> None: ...

    def staged_job(self, name: str) -> ObservedJob | None:
        """The observed staged Job ``name`` while its pod is (or may be) gated."""
        job = self.obs.jobs.get(name)
        if job is None or not job.staged or not job.gated or job.state != "Active":
            return None
        return job

    def held_back(self, job: ObservedJob) -> bool:
        """Whether adoption must leave ``job`` alone: a gated first attempt."""
        return job.attempt == 1 and self.staged_job(job.name) is not None

    def live_staged(self) -> list[str]:
        """Staged Jobs holding a place under the cap: gated, their step still Pending,
        not deleted by this pass; latest in the DAG last."""
        order = {s.name: i for i, s in enumerate(self.dag)}
        dropped = {a.name for a in self.plan.actions if type(a).__name__ == "DeleteJob"}
        jobs = [j for j in self.obs.jobs.values() if self.staged_job(j.name) is not None
                and j.name not in dropped and self.st(j.step).phase == "Pending"
                and j.step in self.plan.status.steps]
        jobs.sort(key=lambda j: (order.get(j.step, len(order)), j.name))
        return [j.name for j in jobs]

    def may_start(self, step: Step) -> bool:
        """Whether ``step`` may start a Job under ``spec.parallelism`` now; staged Jobs
        of later steps are deleted to make room for a plain one."""
        cap = self.obs.spec.parallelism
        if self.running_jobs >= cap:
            return False
        st = self.st(step.name)
        own = job_name(self.obs.name, step.name, 1)
        if not st.attempts and self.staged_job(own) is not None:
            return True  # its own staged Job: lifting it takes no new place
        staged = self.live_staged()
        while staged and self.running_jobs + len(staged) >= cap:
            self.drop_job(staged.pop())
        return True

    def stageable(self, step: Step) -> bool:
        return (step.type == "run" and step.circuit is None and bool(step.depends_on)
                and step.name not in self.fallback_of)

    def stage_ahead(self, stop: str | None) -> None:
        """Create, gated, the first Job of each step whose dependencies have all started."""
        if not self.obs.prestage or stop is not None:
            return
        room = self.obs.spec.parallelism - self.running_jobs - len(self.live_staged())
        for step in self.dag:
            if room <= 0:
                return
            st = self.st(step.name)
            if st.phase != "Pending" or st.attempts or not self.stageable(step):
                continue
            name = job_name(self.obs.name, step.name, 1)
            if name in self.obs.jobs or any(getattr(a, "name", None) == name
                                            for a in self.plan.actions):
                continue
            if not all(self.started(d) for d in step.depends_on):
                continue
            if self.refused(step, 1, name) is not None:
                continue  # its start fails it with the reason; nothing to stage
            self.stage_job(step, name)
            room -= 1

    def started(self, dep: str) -> bool:
        """Whether a dependency counts as started: succeeded, or a Job running (a wait or
        an approval may last hours: what follows it is not staged meanwhile)."""
        step = self.by_name.get(dep)
        if step is None or dep not in self.obs.status.steps:
            return False
        phase = self.st(dep).phase
        return phase == "Succeeded" or (phase == "Running" and step.type == "run")

    def lift(self, step: Step, name: str) -> None:
        """The step starts on its staged Job: lift the gate with the outputs it reads."""
        outputs = {dep: self.st(dep).outputs for dep in step.depends_on
                   if dep in self.obs.status.steps}
        self.plan.actions.append(LiftGate(step.name, name, output_annotations(step, outputs)))
        if step.timeout is not None:  # kept by the operator's clock from now
            self.wake(self.now + parse_duration(step.timeout))

    def sweep_staged(self, stop: str | None, steps: Mapping[str, Step]) -> None:
        """Staged Jobs whose step will not run are deleted; a started one is lifted."""
        planned = {getattr(a, "name", None) for a in self.plan.actions}
        for job in self.obs.jobs.values():
            if self.staged_job(job.name) is None or job.name in planned:
                continue
            st = self.plan.status.steps.get(job.step)
            step = steps.get(job.step)
            if st is not None and step is not None and st.phase == "Running" \
                    and st.job == job.name:
                self.lift(step, job.name)  # decided before, the PATCH not seen done
            elif st is not None and st.phase == "Pending" and not st.attempts \
                    and job.attempt == 1 and stop is None:
                continue  # still waiting for its dependencies
            else:
                self.drop_job(job.name)

    def staged_deadline(self, step: Step, st: StepStatus, job: ObservedJob
                        ) -> ObservedJob | None:
        """A running staged attempt past its step's timeout, counted from the lift, as a
        timed-out attempt (the caller deletes its Job); else None, waking at the deadline.
        """
        if not job.staged or job.state != "Active" or step.timeout is None:
            return None
        started = parse(st.started_at)
        if started is None:
            return None
        deadline = started + parse_duration(step.timeout)
        if self.now < deadline:
            self.wake(deadline)
            return None
        return replace(job, state="Failed", reason="DeadlineExceeded",
                       message=f"ran past its timeout {step.timeout} (counted from the gate "
                       "lift)", finished_at=deadline, pod_terminated=True)
