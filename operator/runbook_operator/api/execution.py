"""The RunbookExecution kind: one run of a Runbook, and everything it did.

The status is the durable record the engine plans from: it must hold enough to
resume after an operator restart (attempt counts, the next retry time, the
frozen runbook spec) and stay small (a bounded history, outputs capped by the
4 KiB termination-message limit).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from runbook_operator.api.common import (
    API_VERSION,
    NAME_PATTERN,
    ApiModel,
    Condition,
    JSONObject,
    JSONValue,
    ObjectMeta,
)

ExecutionPhase = Literal[
    "Pending", "Queued", "Running", "WaitingForApproval", "Succeeded", "Failed", "Cancelled"
]
StepPhase = Literal[
    "Pending", "Waiting", "Running", "Retrying", "WaitingForApproval",
    "Succeeded", "Failed", "Skipped",
]
FINISHED_STEP_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped"})
FINISHED_EXECUTION_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})
MAX_HISTORY = 100


class RunbookRef(ApiModel):
    name: str = Field(max_length=253, pattern=NAME_PATTERN)


class AlertRef(ApiModel):
    """The alert occurrence that caused an execution."""

    name: str = Field(max_length=256)
    fingerprint: str | None = Field(default=None, max_length=128)
    starts_at: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class TriggeredBy(ApiModel):
    kind: Literal["Manual", "Alert", "GitOps", "Schedule"] = "Manual"
    user: str | None = Field(default=None, max_length=256)
    alert: AlertRef | None = None


class ApprovalDecision(ApiModel):
    step: str = Field(max_length=63)
    decision: Literal["Approve", "Reject"]
    comment: str | None = Field(default=None, max_length=1024)
    by: str | None = Field(default=None, max_length=256)


class RunbookExecutionSpec(ApiModel):
    """What to run, with which parameters; ``cancel`` and ``approvals`` steer a run."""

    runbook_ref: RunbookRef
    params: JSONObject = Field(default_factory=dict)
    triggered_by: TriggeredBy | None = None
    cancel: bool = False
    approvals: list[ApprovalDecision] = Field(default_factory=list, max_length=128)


class StepStatus(ApiModel):
    """Everything known about one step of one execution."""

    phase: StepPhase = "Pending"
    reason: str | None = None
    message: str | None = Field(default=None, max_length=1024)
    attempts: int = 0
    job: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    outputs: JSONObject | None = None
    next_attempt_at: str | None = None
    """When the next retry may start: persisted so a restart neither skips nor shortens the wait."""
    circuit: str | None = None
    """``policy/key`` of the circuit guarding the current attempt."""
    circuit_trial: bool | None = None
    """The current attempt holds a HalfOpen trial permit."""
    circuit_admitted_at: str | None = None


class HistoryEntry(ApiModel):
    time: str
    event: str = Field(max_length=64)
    step: str | None = None
    message: str | None = Field(default=None, max_length=512)


class RunbookRefStatus(ApiModel):
    name: str
    generation: int | None = None
    spec_hash: str | None = None


class RunbookExecutionStatus(ApiModel):
    phase: ExecutionPhase = "Pending"
    reason: str | None = None
    message: str | None = Field(default=None, max_length=4096)
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    runbook: RunbookRefStatus | None = None
    runbook_spec: JSONObject | None = None
    """A frozen copy of the Runbook's spec taken at start."""
    started_at: str | None = None
    finished_at: str | None = None
    progress: str | None = None
    steps: dict[str, StepStatus] = Field(default_factory=dict)
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)
    history_dropped: int = 0
    """How many of the oldest history entries were dropped to keep the status bounded."""
    trace_id: str | None = Field(default=None, alias="traceID")
    concurrency_key: str | None = None
    """The runbook's ``concurrency.key`` for this execution; peers share it."""
    cancel_requested: str | None = None
    """Why the operator cancels this run (e.g. replaced by a newer one; policy Replace)."""


class RunbookExecution(ApiModel):
    """One run of a Runbook."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["RunbookExecution"] = "RunbookExecution"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RunbookExecutionSpec
    status: RunbookExecutionStatus | None = None

    @classmethod
    def from_k8s(cls, body: dict[str, Any]) -> RunbookExecution:
        return cls.model_validate(body)


__all__ = [
    "FINISHED_EXECUTION_PHASES",
    "FINISHED_STEP_PHASES",
    "JSONValue",
]
