"""The Runbook kind: a reusable procedure, a DAG of steps with typed parameters.

A Runbook is what a platform team keeps in git. The schema rejects what it can
at apply (names, durations, bounds, a run step without an image); the rest
(cycles, unknown dependencies, CEL that does not compile, bad defaults) is found
by ``engine.validation`` and reported on ``status.conditions[type=Ready]``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from runbook_operator.api.common import (
    API_VERSION,
    CONDITIONS_LIST,
    NAME_PATTERN,
    ApiModel,
    Condition,
    Duration,
    JSONObject,
    JSONValue,
    ObjectMeta,
    k8s,
)

PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_STEPS = 500
MAX_FINALLY_STEPS = 50

ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]
StepType = Literal["run", "approval", "wait", "query"]
ConcurrencyPolicy = Literal["Allow", "Forbid", "Queue", "Replace"]
OnOpen = Literal["Fail", "Skip", "Wait", "Fallback"]


class Param(ApiModel):
    """A typed parameter of a runbook, validated before any step runs."""

    name: str = Field(max_length=63, pattern=PARAM_NAME_PATTERN)
    """Identifier used in CEL (``params.<name>``) and as ``PARAM_<NAME>`` in containers."""
    type: ParamType = "string"
    description: str | None = Field(default=None, max_length=1024)
    required: bool = False
    """A required parameter without a default must be given by every execution."""
    default: JSONValue = None
    enum: list[JSONValue] | None = Field(default=None, max_length=64)
    pattern: str | None = Field(default=None, max_length=256)
    """A regular expression a string value must match in full."""
    secret: bool = False
    """Never written to logs, Events, status or span attributes."""


class Backoff(ApiModel):
    """Delay before retry ``n``: ``initial * factor**(n-1)``, capped at ``max``, +/- ``jitter``."""

    initial: Duration = "5s"
    factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max: Duration = "5m"
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    """Fraction of the delay by which it is randomised in both directions."""


class RetryOn(ApiModel):
    """Which failures are worth retrying; absent means every failure."""

    exit_codes: list[int] | None = Field(default=None, max_length=64)
    timeouts: bool = False
    """Retry attempts that hit the step's timeout."""


class Retry(ApiModel):
    """Retries of a failed step, each a new Job."""

    limit: int = Field(default=0, ge=0, le=50)
    """Retries after the first attempt: ``limit: 2`` means at most 3 attempts."""
    backoff: Backoff = Field(default_factory=Backoff)
    on: RetryOn | None = None


class CircuitRef(ApiModel):
    """Guards a step with a circuit of a CircuitPolicy."""

    policy: str = Field(max_length=253, pattern=NAME_PATTERN)
    key: str | None = Field(default=None, max_length=1024)
    """CEL over ``params`` choosing the circuit, e.g. ``params.provider``; default: one circuit."""
    on_open: OnOpen = "Fail"
    fallback: str | None = Field(default=None, max_length=63)
    """The step to run instead when the circuit is open and ``onOpen`` is Fallback."""


class Approvers(ApiModel):
    """Who may decide an approval step: any listed user, or any member of a listed group.

    Checked at admission against the requester's authenticated identity (the chart's
    ValidatingAdmissionPolicy); the operator also ignores decisions by users not in
    ``users`` when no groups are listed.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [{
                "rule": "(has(self.users) && size(self.users) > 0) || "
                        "(has(self.groups) && size(self.groups) > 0)",
                "message": "approvers must name at least one user or group "
                           "(leave approvers out to let anyone who may patch the execution decide)",
            }]
        }
    }

    users: list[str] = Field(default_factory=list, max_length=64)
    """User names as the API server authenticates them, e.g. ``alice`` or
    ``system:serviceaccount:ops:pager-bot``."""
    groups: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _names_someone(self) -> Approvers:
        if not self.users and not self.groups:
            raise ValueError(
                "approvers must name at least one user or group "
                "(leave approvers out to let anyone who may patch the execution decide)")
        return self


class Approval(ApiModel):
    """A step that waits for a human decision in ``spec.approvals`` of the execution."""

    timeout: Duration | None = None
    message: str | None = Field(default=None, max_length=1024)
    approvers: Approvers | None = None
    """Who may approve or reject; default: anyone who may patch the execution."""


class Wait(ApiModel):
    """A step that only waits."""

    duration: Duration


MAX_QUERY_CHARS = 4096


class Query(ApiModel):
    """A step the operator evaluates itself: PromQL checked at ``interval`` (``engine.query``).

    What the conditions see is ``result`` (``engine.query.to_cel``): ``result.value``
    (the one number, NaN when there is none), ``result.series`` (capped), ``result.count``,
    ``result.empty``, ``result.type``; plus ``params``, as ``when`` does.
    """

    source: str = Field(max_length=63, pattern=NAME_PATTERN)
    """A Prometheus the cluster admin named (operator flag ``--query-source``): never a URL."""
    expr: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    """PromQL; ``$name`` (outside string literals) is the parameter ``name`` as an
    escaped PromQL string literal, e.g. ``{service=$service}``: it is never code."""
    success_condition: str = Field(max_length=2048)
    """CEL over ``result``: a check where it is true counts toward ``count``."""
    failure_condition: str | None = Field(default=None, max_length=2048)
    """CEL over ``result``: a check where it is true is a failed check."""
    interval: Duration = "30s"
    """Time between checks."""
    count: int = Field(default=1, ge=1, le=1000)
    """Consecutive successful checks that make the step succeed (``4`` at ``30s``:
    "below the threshold for two minutes"). A check that is not a success resets it."""
    failure_limit: int = Field(default=1, ge=1, le=1000)
    """Failed checks (failureCondition true, or the query timed out) that make the step
    fail: ``1`` fails at the first one. Counted over the step, not consecutively."""


class PodMetadata(ApiModel):
    """Labels and annotations added to the step's pods."""

    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EnvVar(ApiModel):
    """A container environment variable (the Kubernetes EnvVar)."""

    name: str = Field(max_length=256)
    value: str | None = Field(default=None, max_length=32768)
    value_from: JSONObject | None = None


class Step(ApiModel):
    """One node of the DAG: a Job (``run``), an approval, a wait or a metric query."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.type) && self.type != 'run') || has(self.image)",
                    "message": "a run step needs an image",
                },
                {
                    "rule": "!has(self.type) || self.type != 'wait' || has(self.wait)",
                    "message": "a wait step needs wait.duration",
                },
                {
                    "rule": "!has(self.type) || self.type != 'query' || has(self.query)",
                    "message": "a query step needs query (source, expr, successCondition)",
                },
            ]
        }
    }

    name: str = Field(max_length=63, pattern=NAME_PATTERN)
    type: StepType = "run"
    description: str | None = Field(default=None, max_length=1024)
    depends_on: list[str] = Field(default_factory=list, max_length=64)
    when: str | None = Field(default=None, max_length=2048)
    """CEL over ``params``, ``steps`` and ``execution``; default: every dependency Succeeded."""
    image: str | None = Field(default=None, max_length=512)
    command: list[str] | None = Field(default=None, max_length=256)
    args: list[str] | None = Field(default=None, max_length=256)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    working_dir: str | None = Field(default=None, max_length=1024)
    resources: JSONObject | None = None
    security_context: JSONObject | None = None
    """Merged key by key over the defaults (non-root, no capabilities, seccomp
    RuntimeDefault); privileged settings need the operator's allowance."""
    pod_metadata: PodMetadata | None = None
    timeout: Duration | None = None
    """Per attempt; becomes the Job's ``activeDeadlineSeconds``."""
    retry: Retry | None = None
    continue_on_failure: bool = False
    """A failure here is an outcome for later steps to branch on, not an execution failure."""
    circuit: CircuitRef | None = None
    approval: Approval | None = None
    wait: Wait | None = None
    query: Query | None = None


class Concurrency(ApiModel):
    """How executions of one runbook share the road."""

    policy: ConcurrencyPolicy = "Allow"
    key: str | None = Field(default=None, max_length=1024)
    """CEL over ``params``; executions with the same key count together."""
    max: int = Field(default=1, ge=1, le=1000)


class History(ApiModel):
    """How many finished executions of the runbook to keep."""

    successful_limit: int | None = Field(default=None, ge=0, le=10000)
    failed_limit: int | None = Field(default=None, ge=0, le=10000)


_STEP_LIST = k8s(
    **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
)


OnResolved = Literal["Ignore", "Cancel"]
MAX_ALERT_TRIGGERS = 32


class AlertTrigger(ApiModel):
    """Which Alertmanager alerts start this runbook, and with which parameters.

    CEL in ``params`` and ``severity`` sees ``alert`` (labels, annotations, startsAt,
    endsAt, fingerprint, generatorURL, status) and ``group`` (groupKey, groupLabels,
    commonLabels, commonAnnotations, externalURL, receiver).
    """

    match: list[str] = Field(min_length=1, max_length=32)
    """Alertmanager matchers, all of which an alert's labels must satisfy, e.g.
    ``alertname="HighMemoryUsage"``, ``severity=~"critical|warning"``."""
    params: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Parameter name to a CEL expression over the alert, e.g. ``alert.labels.service``."""
    severity: str | None = Field(default=None, max_length=2048)
    """CEL giving the execution's severity (``SEV1`` .. ``SEV4``): its queue priority."""
    on_resolved: OnResolved = "Ignore"
    """``Cancel``: a resolved notification cancels the occurrence's execution if it is
    still queued or running (reason ``AlertResolved``); ``Ignore``: only recorded."""
    cooldown: Duration | None = None
    """After an execution for an alert (by fingerprint), later occurrences of the same
    alert start none until this much time has passed."""


class Triggers(ApiModel):
    """What starts executions of this runbook besides a person or GitOps."""

    alerts: list[AlertTrigger] = Field(default_factory=list, max_length=MAX_ALERT_TRIGGERS)


class Schedule(ApiModel):
    """Start executions on a cron schedule, like a CronJob (``engine.schedule``)."""

    cron: str = Field(max_length=256)
    """Five fields (minute hour day-of-month month day-of-week), or six with seconds
    first, or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``."""
    time_zone: str = Field(default="UTC", max_length=64)
    """An IANA time zone, e.g. ``Europe/Berlin``: the cron fields are its wall time."""
    starting_deadline: Duration | None = None
    """A slot not started within this long of its time (the operator was down) is
    recorded as missed instead; default: the latest missed slot starts however late."""
    suspend: bool = False
    """Start nothing while true; slots passing meanwhile are skipped, not caught up."""
    params: JSONObject = Field(default_factory=dict)
    """Parameter values of every scheduled execution."""


NotifyEvent = Literal["Started", "WaitingForApproval", "StepFailed", "Failed", "Succeeded",
                      "Cancelled", "CircuitOpened"]
MAX_NOTIFICATIONS = 16


class SecretKeyRef(ApiModel):
    """A key of a Secret in the Runbook's namespace (read by the operator, never copied)."""

    name: str = Field(max_length=253, pattern=NAME_PATTERN)
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class SlackTarget(ApiModel):
    """A Slack incoming webhook; its URL is the secret."""

    webhook_secret_ref: SecretKeyRef
    summarize_after: int = Field(default=5, ge=0, le=1000)
    """Storms: past this many end-of-run messages (Succeeded, Failed, Cancelled) of this
    runbook within one ``summaryWindow``, the rest become one summary at the window's
    end; 0 never summarises."""
    summary_window: Duration = "1m"


class PagerDutyTarget(ApiModel):
    """PagerDuty Events API v2: trigger on Failed, resolve on Succeeded."""

    routing_key_secret_ref: SecretKeyRef


class WebhookTarget(ApiModel):
    """A generic webhook: a versioned JSON document, signed when a signing secret is given."""

    url_secret_ref: SecretKeyRef
    signing_secret_ref: SecretKeyRef | None = None
    """HMAC-SHA256 key: the body's signature goes in ``X-Runbook-Signature``."""


class NotificationSpec(ApiModel):
    """Who hears about which of an execution's events; exactly one channel."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [{
                "rule": "(has(self.slack) ? 1 : 0) + (has(self.pagerduty) ? 1 : 0) + "
                        "(has(self.webhook) ? 1 : 0) == 1",
                "message": "a notification needs exactly one of slack, pagerduty, webhook",
            }]
        }
    }

    on: list[NotifyEvent] = Field(min_length=1, max_length=7)
    slack: SlackTarget | None = None
    pagerduty: PagerDutyTarget | None = None
    webhook: WebhookTarget | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> NotificationSpec:
        if sum(x is not None for x in (self.slack, self.pagerduty, self.webhook)) != 1:
            raise ValueError("a notification needs exactly one of slack, pagerduty, webhook")
        return self


class RunbookSpec(ApiModel):
    """The procedure: parameters, steps, limits."""

    description: str | None = Field(default=None, max_length=4096)
    params: list[Param] = Field(default_factory=list, max_length=64, json_schema_extra=_STEP_LIST)
    service_account_name: str | None = Field(default=None, max_length=253)
    timeout: Duration | None = None
    """For the whole execution; then running steps are cancelled and ``finally`` runs."""
    parallelism: int = Field(default=10, ge=1, le=500)
    """At most this many steps of one execution run at once."""
    concurrency: Concurrency | None = None
    history: History | None = None
    triggers: Triggers | None = None
    """Alerts that start this runbook (only in its own namespace)."""
    schedule: Schedule | None = None
    """Start executions at the times of a cron expression."""
    notifications: list[NotificationSpec] = Field(default_factory=list,
                                                  max_length=MAX_NOTIFICATIONS)
    """Slack, PagerDuty and webhook notifications of executions' events."""
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS, json_schema_extra=_STEP_LIST)
    finally_: list[Step] = Field(
        default_factory=list, alias="finally", max_length=MAX_FINALLY_STEPS,
        json_schema_extra=_STEP_LIST,
    )
    """Steps that always run once the DAG is done: on success, failure and cancel."""

    def all_steps(self) -> list[Step]:
        return [*self.steps, *self.finally_]


class ScheduleStatus(ApiModel):
    """Where the schedule stands; written only by the operator."""

    last_schedule_time: str | None = None
    """The slot of the last execution the schedule started."""
    last_execution: str | None = None
    last_slot_time: str | None = None
    """Every slot up to this one is decided (started, missed or skipped while suspended)."""
    next_schedule_time: str | None = None
    missed: int = 0
    """Slots missed so far (the operator was down past ``startingDeadline``)."""


class RunbookStatus(ApiModel):
    """What the operator found: Ready or not, and why."""

    conditions: list[Condition] = Field(default_factory=list,
                                        json_schema_extra=CONDITIONS_LIST)
    observed_generation: int | None = None
    step_count: int | None = None
    spec_hash: str | None = None
    schedule: ScheduleStatus | None = None


class Runbook(ApiModel):
    """A reusable operational procedure."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["Runbook"] = "Runbook"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RunbookSpec
    status: RunbookStatus | None = None

    @classmethod
    def from_k8s(cls, body: dict[str, Any]) -> Runbook:
        return cls.model_validate(body)
