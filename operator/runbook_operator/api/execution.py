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
    CONDITIONS_LIST,
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
Severity = Literal["SEV1", "SEV2", "SEV3", "SEV4"]
FINISHED_STEP_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped"})
FINISHED_EXECUTION_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed", "Cancelled"})
MAX_HISTORY = 100

# Spec fields that may change after creation; every other one is frozen by a CRD rule.
MUTABLE_SPEC_FIELDS = ("cancel", "approvals")


def immutable_spec_rules(schema: dict[str, Any], cls: type) -> None:
    """CRD transition rules freezing every spec field but ``cancel`` and ``approvals``.

    Generated from the model's properties, so a field added later is frozen too.
    ``approvals`` may only grow at its end; ``cancel`` may only be turned on.
    CEL cannot see the keys of a free-form object such as ``params`` (the API server
    compares such objects by size and by the values of one side's keys, so a
    renamed key at the same size passes); the chart's ``immutable-runs`` admission
    policy, which sees the raw object, closes that gap.
    """
    rules: list[dict[str, str]] = []
    for field in schema.get("properties", {}):
        if field in MUTABLE_SPEC_FIELDS:
            continue
        rules.append({
            "rule": f"has(self.{field}) == has(oldSelf.{field}) && "
                    f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
            "message": f"spec.{field} cannot change once the execution exists: "
                       "create a new RunbookExecution instead",
        })
    rules.append({
        "rule": "!has(oldSelf.approvals) || size(oldSelf.approvals) == 0 || "
                "(has(self.approvals) && size(self.approvals) >= size(oldSelf.approvals) && "
                "oldSelf.approvals.all(i, a, self.approvals[i] == a))",
        "message": "spec.approvals can only be appended to: "
                   "earlier decisions cannot be edited, reordered or removed",
    })
    rules.append({
        "rule": "!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",
        "message": "spec.cancel cannot be set back to false: a cancelled run stays cancelled",
    })
    schema["x-kubernetes-validations"] = rules


class RunbookRef(ApiModel):
    name: str = Field(max_length=253, pattern=NAME_PATTERN)


class AlertRef(ApiModel):
    """The alert occurrence that caused an execution (Alertmanager's view of it)."""

    name: str = Field(max_length=1024)
    """The ``alertname`` label."""
    fingerprint: str | None = Field(default=None, max_length=128)
    starts_at: str | None = Field(default=None, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict)
    group_key: str | None = Field(default=None, max_length=4096)
    receiver: str | None = Field(default=None, max_length=1024)
    generator_url: str | None = Field(default=None, alias="generatorURL", max_length=4096)


class ScheduleRef(ApiModel):
    """The schedule slot that started an execution."""

    scheduled_time: str = Field(max_length=64)
    """The slot, RFC 3339 UTC: the execution's name derives from it."""
    cron: str | None = Field(default=None, max_length=256)
    time_zone: str | None = Field(default=None, max_length=64)


class TriggeredBy(ApiModel):
    kind: Literal["Manual", "Alert", "GitOps", "Schedule"] = "Manual"
    user: str | None = Field(default=None, max_length=256)
    alert: AlertRef | None = None
    schedule: ScheduleRef | None = None


class ApprovalDecision(ApiModel):
    step: str = Field(max_length=63)
    decision: Literal["Approve", "Reject"]
    comment: str | None = Field(default=None, max_length=1024)
    by: str | None = Field(default=None, max_length=256)


class ResumeFrom(ApiModel):
    """Run again after an earlier execution of the same runbook, reusing what it finished.

    The engine decides what is reused (see ``engine/resume.py``): the steps that
    succeeded (or were skipped by ``when``) and depend neither on a failed step nor
    on ``step``; ``step`` and every step after it run again.
    """

    execution: str = Field(max_length=253, pattern=NAME_PATTERN)
    """A finished RunbookExecution in the same namespace."""
    step: str | None = Field(default=None, max_length=63, pattern=NAME_PATTERN)
    """Re-run from this step (it and its descendants run again); default: the failed steps."""


class RunbookExecutionSpec(ApiModel):
    """What to run, with which parameters; ``cancel`` and ``approvals`` steer a run.

    Immutable once created but for ``cancel`` (may be turned on) and ``approvals``
    (may be appended to): the API server refuses any other change.
    """

    model_config = ApiModel.model_config | {"json_schema_extra": immutable_spec_rules}

    runbook_ref: RunbookRef
    params: JSONObject = Field(default_factory=dict)
    triggered_by: TriggeredBy | None = None
    severity: Severity | None = None
    """Queue priority for concurrency and bulkheads (SEV1 first); default: the
    ``severity`` parameter, else the alert's ``severity`` label."""
    cancel: bool = False
    approvals: list[ApprovalDecision] = Field(default_factory=list, max_length=128)
    resume_from: ResumeFrom | None = None
    """Reuse the finished steps of an earlier execution: its frozen spec and params run again."""


class QueryStatus(ApiModel):
    """A query step's counts, written with every check so a restart resumes them."""

    checks: int = 0
    successes: int = 0
    """Consecutive successful checks."""
    failures: int = 0
    """Failed checks so far."""
    errors: int = 0
    """Consecutive checks the source did not answer (retries used)."""
    next_check_at: str | None = None
    last_outcome: str | None = Field(default=None, max_length=32)


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
    query: QueryStatus | None = None
    """A query step's checks so far (``engine.query``)."""


class HistoryEntry(ApiModel):
    time: str
    event: str = Field(max_length=64)
    step: str | None = None
    message: str | None = Field(default=None, max_length=512)


class RunbookRefStatus(ApiModel):
    name: str
    generation: int | None = None
    spec_hash: str | None = None


class NotificationDelivery(ApiModel):
    """One notification owed by this execution, and how its delivery went."""

    id: str = Field(max_length=64)
    """The idempotency key (stable per execution, notification, channel and event)."""
    channel: str = Field(max_length=16)
    event: str = Field(max_length=32)
    step: str | None = Field(default=None, max_length=63)
    state: Literal["Pending", "Delivered", "Failed"] = "Pending"
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=256)
    """HTTP status or error type only: never a URL, key or response body."""
    updated_at: str | None = None


class ResumedFrom(ApiModel):
    """Where a resumed execution came from (``spec.resumeFrom``, as the engine applied it)."""

    execution: str
    step: str | None = None
    reused: list[str] = Field(default_factory=list)
    """The steps whose results were copied from the source: no Job ran for them here."""
    incident_key: str | None = Field(default=None, max_length=128)
    """The source's PagerDuty ``dedup_key`` (its own source's, down the chain): a
    resumed run that succeeds resolves the incident its source opened."""


class ReconcileFailures(ApiModel):
    """A streak of identical reconcile errors (``engine.failures``)."""

    error: str = Field(max_length=300)
    count: int = Field(ge=1)


class RunbookExecutionStatus(ApiModel):
    phase: ExecutionPhase = "Pending"
    reason: str | None = None
    message: str | None = Field(default=None, max_length=4096)
    conditions: list[Condition] = Field(default_factory=list,
                                        json_schema_extra=CONDITIONS_LIST)
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
    params_secret: str | None = Field(default=None, max_length=253)
    """The Secret holding this run's secret parameters: named by the apiserver when the
    operator created it (``generateName``), so nobody could have planted it first."""
    notifications: list[NotificationDelivery] = Field(default_factory=list, max_length=512)
    """Delivery state of every notification owed, so a restart resumes the pending ones
    and never sends a delivered one again."""
    cancel_reason: str | None = Field(default=None, max_length=64)
    """The reason the run ends with when cancelled that way (``Replaced``, ``AlertResolved``)."""
    resumed_from: ResumedFrom | None = None
    """The execution this one resumed, and which of its steps were reused."""
    reconcile_failures: ReconcileFailures | None = None
    """The same reconcile error, ``count`` times in a row (cleared by a pass that works):
    kept here so a new leader continues the count."""


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
