"""A small, pure, simulated cluster for the planner.

The simulator holds one execution's status and the Jobs "on the cluster" (a dict
of ``ObservedJob``). ``step()`` runs one planner pass the way the reconciler
does: it builds an ``Observation`` from the current status and Jobs, calls
``plan()``, creates a new Active Job for every ``CreateJob`` (``started_at`` is
the current time) and removes the Job of every ``DeleteJob``, then stores the new
status (unless told the status write was lost).

Every ``CreateJob`` is logged with the time and the phases of the step's
dependencies at that moment, so tests can assert "exactly one Job per attempt"
and "no Job before all dependencies finished".

What a Job does is scripted per ``(step, attempt)`` with an ``Outcome``:
success with a termination message, failure with an exit code and message,
``DeadlineExceeded``, or "hang" (stays running until deleted or finished by the
test). A Job finishes either automatically ``after`` some time, or when the test
calls ``finish()``. Time is a ``datetime`` advanced explicitly (``advance``,
``advance_to``, ``advance_to_wake``); nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from runbook_operator.api.execution import (
    FINISHED_EXECUTION_PHASES,
    FINISHED_STEP_PHASES,
    ApprovalDecision,
    RunbookExecutionSpec,
    RunbookExecutionStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.params import resolve_params
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import CreateJob, DeleteJob, Observation, ObservedJob, Plan
from runbook_operator.engine.start import start_execution

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

OutcomeKind = Literal["succeed", "fail", "deadline", "hang"]


@dataclass(frozen=True)
class Outcome:
    """What one attempt's Job does when it finishes."""

    kind: OutcomeKind = "succeed"
    exit_code: int | None = 0
    message: str | None = None
    """The pod's termination message (outputs when it is a JSON object)."""
    after: timedelta | None = timedelta(seconds=10)
    """Finish automatically this long after creation; None: only when the test says."""

    @classmethod
    def ok(cls, message: str | None = None, after: float | None = 10) -> Outcome:
        return cls("succeed", 0, message, _td(after))

    @classmethod
    def fail(cls, exit_code: int = 1, message: str | None = None,
             after: float | None = 10) -> Outcome:
        return cls("fail", exit_code, message, _td(after))

    @classmethod
    def deadline(cls, after: float | None = 10, message: str | None = None) -> Outcome:
        return cls("deadline", None, message, _td(after))

    @classmethod
    def hang(cls) -> Outcome:
        return cls("hang", None, None, None)


def _td(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass(frozen=True)
class Created:
    """One ``CreateJob`` carried out by the simulator."""

    step: str
    attempt: int
    name: str
    at: datetime
    dep_phases: Mapping[str, str]
    """The phase of each dependency in the status the creating pass produced."""
    dag_finished: bool
    """Whether every DAG step was finished (what a finally step waits for)."""
    duplicate: bool
    """A Job of that name already existed (the apiserver would answer 409)."""


@dataclass
class Simulator:
    """One execution on a simulated cluster."""

    spec: RunbookSpec
    status: RunbookExecutionStatus
    name: str = "ex"
    namespace: str = "default"
    uid: str = "uid-1"
    runbook: str = "rb"
    params: Mapping[str, Any] = field(default_factory=dict)
    now: datetime = T0
    outcomes: dict[tuple[str, int], Outcome] = field(default_factory=dict)
    default_outcome: Outcome | Callable[[str, int], Outcome] = field(default_factory=Outcome)
    cancel: bool = False
    approvals: list[ApprovalDecision] = field(default_factory=list)

    jobs: dict[str, ObservedJob] = field(default_factory=dict)
    finish_at: dict[str, datetime] = field(default_factory=dict)
    created: list[Created] = field(default_factory=list)
    deleted: list[tuple[str, datetime]] = field(default_factory=list)
    finished_jobs: dict[str, ObservedJob] = field(default_factory=dict)
    """Every Job that finished, by name, as it was when it finished (kept after delete)."""
    plans: list[Plan] = field(default_factory=list)
    wake_at: datetime | None = None
    max_active: int = 0
    passes: int = 0

    # -- construction -----------------------------------------------------------------

    @classmethod
    def start(cls, runbook_spec: Mapping[str, Any] | RunbookSpec, *,
              params: Mapping[str, Any] | None = None, now: datetime = T0,
              **kwargs: Any) -> Simulator:
        """Start an execution with ``start_execution`` (frozen spec, Running)."""
        raw = runbook_spec.to_k8s() if isinstance(runbook_spec, RunbookSpec) \
            else dict(runbook_spec)
        runbook = {"metadata": {"name": kwargs.get("runbook", "rb"), "generation": 1},
                   "spec": raw}
        exec_spec = RunbookExecutionSpec.model_validate(
            {"runbookRef": {"name": kwargs.get("runbook", "rb")}, "params": dict(params or {})})
        status = start_execution(exec_spec, runbook, kwargs.get("namespace", "default"), now)
        assert status.phase == "Running", (status.reason, status.message)
        assert status.runbook_spec is not None
        spec = RunbookSpec.model_validate(status.runbook_spec)
        resolved, errors = resolve_params(spec.params, dict(params or {}))
        assert not errors, errors
        return cls(spec=spec, status=status, params=resolved, now=now, **kwargs)

    # -- the scripted world -------------------------------------------------------------

    def outcome(self, step: str, attempt: int) -> Outcome:
        if (step, attempt) in self.outcomes:
            return self.outcomes[(step, attempt)]
        if callable(self.default_outcome):
            return self.default_outcome(step, attempt)
        return self.default_outcome

    def script(self, step: str, *outcomes: Outcome) -> Simulator:
        """Outcomes of attempts 1, 2, ... of ``step``."""
        for i, outcome in enumerate(outcomes, start=1):
            self.outcomes[(step, i)] = outcome
        return self

    def observation(self, status: RunbookExecutionStatus | None = None,
                    jobs: Mapping[str, ObservedJob] | None = None) -> Observation:
        return Observation(
            name=self.name, namespace=self.namespace, uid=self.uid, spec=self.spec,
            params=dict(self.params), status=self.status if status is None else status,
            jobs=dict(self.jobs if jobs is None else jobs), now=self.now, cancel=self.cancel,
            approvals=tuple(self.approvals), runbook=self.runbook,
            policies=dict(getattr(self, "policies", {})),
            invalid_policies=dict(getattr(self, "invalid_policies", {})),
            circuits=dict(getattr(self, "circuits", {})),
        )

    # -- time ----------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.advance_to(self.now + timedelta(seconds=seconds))

    def advance_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)
        self._finish_due()

    def next_event(self) -> datetime | None:
        """The earlier of the planner's wake_at and the next scripted Job finish."""
        times = [t for t in self.finish_at.values()]
        if self.wake_at is not None:
            times.append(self.wake_at)
        return min(times) if times else None

    # -- Jobs ----------------------------------------------------------------------------

    def active(self) -> list[ObservedJob]:
        return [j for j in self.jobs.values() if j.state == "Active"]

    def job_of(self, step: str, attempt: int | None = None) -> ObservedJob:
        found = [j for j in self.jobs.values() if j.step == step
                 and (attempt is None or j.attempt == attempt)]
        assert found, f"no Job for step {step!r} attempt {attempt}"
        return max(found, key=lambda j: j.attempt)

    def finish(self, job: str | ObservedJob, at: datetime | None = None,
               outcome: Outcome | None = None) -> ObservedJob:
        """Finish a Job now (or at ``at``) with its scripted outcome ("hang" succeeds)."""
        name = job if isinstance(job, str) else job.name
        current = self.jobs[name]
        assert current.state == "Active", f"Job {name} already {current.state}"
        outcome = outcome or self.outcome(current.step, current.attempt)
        when = at or self.now
        if outcome.kind in ("succeed", "hang"):
            done = replace(current, state="Succeeded", finished_at=when,
                           exit_code=outcome.exit_code if outcome.exit_code is not None else 0,
                           termination_message=outcome.message, pod_terminated=True)
        elif outcome.kind == "fail":
            done = replace(current, state="Failed", reason="BackoffLimitExceeded",
                           message="Job has reached the specified backoff limit",
                           finished_at=when, exit_code=outcome.exit_code,
                           termination_message=outcome.message, pod_terminated=True)
        else:
            done = replace(current, state="Failed", reason="DeadlineExceeded",
                           message="Job was active longer than specified deadline",
                           finished_at=when, exit_code=outcome.exit_code,
                           termination_message=outcome.message, pod_terminated=True)
        self.jobs[name] = done
        self.finished_jobs[name] = done
        self.finish_at.pop(name, None)
        return done

    def _finish_due(self) -> None:
        for name, at in sorted(self.finish_at.items(), key=lambda kv: (kv[1], kv[0])):
            if at <= self.now and name in self.jobs:
                self.finish(name, at)

    def apply(self, result: Plan) -> None:
        """Carry out a plan's actions on the simulated cluster."""
        for action in result.actions:
            if isinstance(action, CreateJob):
                step = next(s for s in self.spec.all_steps() if s.name == action.step)
                self.created.append(Created(
                    step=action.step, attempt=action.attempt, name=action.name, at=self.now,
                    dep_phases={d: result.status.steps[d].phase for d in step.depends_on},
                    dag_finished=all(result.status.steps[s.name].phase in FINISHED_STEP_PHASES
                                     for s in self.spec.steps),
                    duplicate=action.name in self.jobs or action.name in self.finished_jobs,
                ))
                if action.name in self.jobs:
                    continue  # 409: the existing Job stands
                self.jobs[action.name] = ObservedJob(
                    name=action.name, step=action.step, attempt=action.attempt,
                    state="Active", started_at=self.now)
                outcome = self.outcome(action.step, action.attempt)
                if outcome.after is not None and outcome.kind != "hang":
                    self.finish_at[action.name] = self.now + outcome.after
            elif isinstance(action, DeleteJob):
                self.deleted.append((action.name, self.now))
                self.jobs.pop(action.name, None)
                self.finish_at.pop(action.name, None)
        self.max_active = max(self.max_active, len(self.active()))

    # -- passes --------------------------------------------------------------------------

    def step(self, now: datetime | None = None, *, persist: bool = True) -> Plan:
        """One planner pass at ``now`` (default: the current time).

        ``persist=False`` carries out the actions but loses the status write, as
        when the operator dies (or gets a 409) between creating Jobs and patching.
        """
        if now is not None:
            self.advance_to(now)
        self._finish_due()
        result = plan(self.observation())
        self.plans.append(result)
        self.passes += 1
        self.apply(result)
        if persist:
            self.status = result.status
            self.wake_at = result.wake_at
        # Circuits are shared state outside the execution: kept even if its status is lost.
        self.circuits = {**getattr(self, "circuits", {}), **result.circuits}
        return result

    @property
    def finished(self) -> bool:
        return self.status.phase in FINISHED_EXECUTION_PHASES

    def run(self, max_passes: int = 1000,
            on_pass: Callable[[Simulator, Plan], None] | None = None) -> RunbookExecutionStatus:
        """Pass, then jump to the next event (wake_at or a Job finishing), until finished."""
        for _ in range(max_passes):
            result = self.step()
            if on_pass is not None:
                on_pass(self, result)
            if self.finished:
                return self.status
            nxt = self.next_event()
            if nxt is None:
                raise AssertionError(f"execution stuck at {self.now}: nothing to wait for; "
                                     f"steps {self.phases()}")
            self.advance_to(nxt)
        raise AssertionError(f"execution not finished after {max_passes} passes: {self.phases()}")

    # -- reading -------------------------------------------------------------------------

    def phases(self) -> dict[str, str]:
        return {n: s.phase for n, s in self.status.steps.items()}

    def created_for(self, step: str) -> list[Created]:
        return [c for c in self.created if c.step == step]

    def created_names(self) -> list[str]:
        return [c.name for c in self.created]

    def history_events(self) -> list[tuple[str, str | None]]:
        return [(h.event, h.step) for h in self.status.history]


def dag_spec(steps: Iterable[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """A raw runbook spec: run steps get an image unless they say otherwise."""
    out = []
    for s in steps:
        s = dict(s)
        if s.get("type", "run") == "run":
            s.setdefault("image", "busybox:1.36")
        out.append(s)
    spec: dict[str, Any] = {"steps": out}
    finally_ = extra.pop("finally", None)
    if finally_ is not None:
        spec["finally"] = [dict(f, image=f.get("image", "busybox:1.36"))
                           if f.get("type", "run") == "run" else dict(f) for f in finally_]
    spec.update(extra)
    return spec
