"""The planner's data: what a pass observes, and the plan it returns.

Why it exists apart from the planner: the planner's pass is assembled from mixins
(``guards``, ``query_step``, ``staging``), each deciding one concern; they and the
shell need these types, and importing them from the planner that imports the mixins
made a circle. Plain frozen dataclasses and constants, no logic but ``_clip``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.api.execution import ApprovalDecision, RunbookExecutionStatus
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.bulkhead import BulkheadRow
from runbook_operator.engine.circuit import CallOutcome, CircuitState, Transition
from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.query import NumberedCheck
from runbook_operator.engine.reservations import CircuitOp

MAX_MESSAGE = 1024
"""Characters of a step's message (the status schema's maxLength)."""


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, ending in "..." when cut (planner and guards)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class LiftGate:
    """Remove the staged pod's gate and write the upstream outputs as its annotations."""

    step: str
    name: str
    """The staged Job (its pod is found by the Job's controller uid)."""
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)


POD_GRACE = timedelta(seconds=5)
"""How long to wait, after a Job finished, for its pod's exit code and message."""

MAX_SCANNED = 64 * 1024
"""Characters of a termination message read for a step's failure detail."""

MAX_TOTAL_OUTPUTS = 128 * 1024
"""Bytes of step outputs one execution's status may hold (etcd takes 1.5 MiB per object)."""

JobState = Literal["Active", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ObservedJob:
    """A step's Job as last seen on the cluster, with its pod's termination."""

    name: str
    step: str
    attempt: int
    state: JobState
    reason: str | None = None
    """Why the attempt failed: the step container's terminated reason (``Error``,
    ``OOMKilled``) when its pod ended on its own, else the Job's Failed condition
    (``DeadlineExceeded``, ``BackoffLimitExceeded``)."""
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    termination_message: str | None = None
    pod_terminated: bool = False
    """Whether the pod's terminated state (exit code, message) has been seen."""
    deadline_seconds: int | None = None
    """The Job's ``activeDeadlineSeconds``, when the step has a timeout."""
    staged: bool = False
    """Built gated (``engine.staging``): its pod waits for the operator to lift the gate."""
    gated: bool = False
    """Staged and its pod not seen without the gate (or not seen at all)."""

    @property
    def timed_out(self) -> bool:
        """Whether the attempt failed because it ran out its deadline.

        The Job controller says ``DeadlineExceeded``, except when it races itself: the
        pods it kills at the deadline can be counted as failures before its own
        deadline condition is saved, and the Job then fails ``BackoffLimitExceeded``.
        A Job with no exit code of its own that ran its whole deadline timed out.
        """
        if self.reason == "DeadlineExceeded":
            return True
        if self.state != "Failed" or self.exit_code is not None or not self.deadline_seconds:
            return False
        if self.started_at is None or self.finished_at is None:
            return False
        return (self.finished_at - self.started_at).total_seconds() >= self.deadline_seconds


@dataclass(frozen=True)
class CreateFailure:
    """Why the API would not create a Job this pass planned (a 4xx, a foreign owner)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """Everything the planner may look at in one pass."""

    name: str
    namespace: str
    uid: str
    spec: RunbookSpec
    params: Mapping[str, Any]
    status: RunbookExecutionStatus
    jobs: Mapping[str, ObservedJob]
    now: datetime
    cancel: bool = False
    approvals: Sequence[ApprovalDecision] = ()
    runbook: str = ""
    lost_jobs: frozenset[str] = frozenset()
    """Jobs of running steps confirmed gone from the cluster (deleted before they finished)."""
    policies: Mapping[str, CircuitPolicySpec] = field(default_factory=dict)
    """The CircuitPolicies the guarded steps name (absent: the policy does not exist)."""
    invalid_policies: Mapping[str, str] = field(default_factory=dict)
    """Policies that exist but are not valid (``Ready=False``), with why."""
    circuits: Mapping[tuple[str, str], CircuitState] = field(default_factory=dict)
    """Current state of each circuit, by (policy, key); absent means a fresh circuit."""
    bulkheads: Mapping[str, Sequence[BulkheadRow]] = field(default_factory=dict)
    """By policy: the guarded attempts of every other execution, running or waiting."""
    severity: str | None = None
    """This execution's severity (SEV1 waits least for a bulkhead slot)."""
    cancel_reason: str | None = None
    """Why it is cancelled when not by ``spec.cancel`` (e.g. ``AlertResolved``)."""
    cancel_message: str | None = None
    create_failures: Mapping[str, CreateFailure] = field(default_factory=dict)
    """Jobs whose create the API refused, by Job name: the shell plans the pass again
    with them, and the step of each fails instead of naming a Job that does not exist."""
    security: SecurityPolicy | None = None
    """The cluster admin's allowances, asked again before each Job (they may have shrunk
    since the run started); None: not checked."""
    unverified_jobs: frozenset[str] = frozenset()
    """Jobs not adopted this pass, to be checked again: what they were built from (an
    upstream step's outputs) is not known yet."""
    foreign_jobs: Mapping[str, str] = field(default_factory=dict)
    """Jobs under a step's name that the operator did not build (another image or
    command, a planted Job), by Job name, with why: never adopted, and the step whose
    attempt it names fails ``ForeignJob`` instead of running (``k8s.adoption``)."""
    checks: Mapping[str, NumberedCheck] = field(default_factory=dict)
    """Query steps' checks the shell made for this pass, by step (``engine.query_step``)."""
    prestage: bool = False
    """Create first attempts gated ahead of time (``engine.staging``)."""


@dataclass(frozen=True)
class CreateJob:
    step: str
    attempt: int
    name: str
    staged: bool = False
    """Built gated, ahead of its step's start (``engine.staging``)."""


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False
    step: str | None = None
    """The step it is about, if any (a correlation field of the audit log line)."""
    attempt: int | None = None
    """That step's attempt, once it has one."""


Action = CreateJob | DeleteJob | LiftGate


@dataclass(frozen=True)
class AttemptStarted:
    """A run step's attempt began this pass (its Job planned, or adopted)."""

    step: str
    attempt: int
    job: str
    at: datetime


@dataclass(frozen=True)
class AttemptEnded:
    """A run step's attempt ended this pass (its Job finished, vanished or was stopped)."""

    step: str
    attempt: int
    job: str
    started_at: datetime | None
    """When its Job started, as observed (None: never seen running)."""
    finished_at: datetime


AttemptRecord = AttemptStarted | AttemptEnded


@dataclass
class Plan:
    status: RunbookExecutionStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    wake_at: datetime | None = None
    """When to plan again even if nothing is observed (retries, waits, timeouts)."""
    circuits: dict[tuple[str, str], CircuitState] = field(default_factory=dict)
    """Circuits this pass changed (admitted or recorded a call), by (policy, key)."""
    transitions: list[tuple[str, str, Transition]] = field(default_factory=list)
    """Circuit transitions this pass caused: (policy, key, transition)."""
    calls: list[tuple[str, str, CallOutcome]] = field(default_factory=list)
    """Calls through circuits this pass settled: (policy, key, outcome), each once."""
    ops: list[CircuitOp] = field(default_factory=list)
    """What this pass did to circuits, in order; the shell commits them onto the
    circuits as they are once the status is written (``engine.reservations``)."""
    attempts: list[AttemptRecord] = field(default_factory=list)
    """Attempts begun and ended this pass, with their times: what spans and metrics need."""
    slots: list[tuple[str, BulkheadRow]] = field(default_factory=list)
    """Bulkhead slots this pass took, by policy (held for it until its status shows them)."""
