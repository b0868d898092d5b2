"""The CircuitPolicy kind: a circuit breaker, bulkhead and defaults for fragile targets.

resilience4j's model made declarative: one policy holds one circuit per key
(e.g. per AI provider); its state lives in the status so it survives restarts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from runbook_operator.api.common import (
    API_VERSION,
    CONDITIONS_LIST,
    ApiModel,
    Condition,
    Duration,
    ObjectMeta,
)
from runbook_operator.api.runbook import Retry

CircuitState = Literal["Closed", "Open", "HalfOpen"]


class SlidingWindow(ApiModel):
    type: Literal["Count", "Time"] = "Count"
    """Count: the last ``size`` calls. Time: the calls of the last ``size`` seconds."""
    size: int = Field(default=20, ge=1, le=10000)


class HalfOpen(ApiModel):
    permitted_calls: int = Field(default=1, ge=1, le=100)


class Bulkhead(ApiModel):
    max_concurrent: int = Field(ge=1, le=10000)
    max_wait: Duration | None = None


class FailureOn(ApiModel):
    exit_codes: list[int] | None = Field(default=None, max_length=64)
    timeouts: bool = True


class CircuitPolicySpec(ApiModel):
    sliding_window: SlidingWindow = Field(default_factory=SlidingWindow)
    minimum_calls: int = Field(default=5, ge=1, le=10000)
    failure_rate_threshold: float = Field(default=50, gt=0, le=100)
    """Percent; the circuit opens when the failure rate reaches it."""
    slow_call_duration_threshold: Duration | None = None
    slow_call_rate_threshold: float = Field(default=100, gt=0, le=100)
    open_duration: Duration = "60s"
    max_open_duration: Duration | None = None
    """When set, the open duration doubles on each consecutive open, up to this."""
    half_open: HalfOpen = Field(default_factory=HalfOpen)
    mode: Literal["Normal", "ForcedOpen", "Disabled", "MetricsOnly"] = "Normal"
    failure_on: FailureOn | None = None
    bulkhead: Bulkhead | None = None
    retry: Retry | None = None
    timeout: Duration | None = None


class CircuitStatus(ApiModel):
    key: str = Field(max_length=256)
    state: CircuitState = "Closed"
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    calls: int = 0
    opened_at: str | None = None
    next_attempt_at: str | None = None
    last_transition_time: str | None = None
    transitions: int = 0
    window: str | None = Field(default=None, max_length=65536)
    """The calls in the sliding window, encoded: the circuit's memory across restarts."""


class CircuitPolicyStatus(ApiModel):
    conditions: list[Condition] = Field(default_factory=list,
                                        json_schema_extra=CONDITIONS_LIST)
    observed_generation: int | None = None
    circuits: list[CircuitStatus] = Field(default_factory=list, max_length=1000)
    open_circuits: int = 0


class CircuitPolicy(ApiModel):
    model_config = ApiModel.model_config | {"extra": "ignore"}

    api_version: str = API_VERSION
    kind: Literal["CircuitPolicy"] = "CircuitPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: CircuitPolicySpec
    status: CircuitPolicyStatus | None = None

    @classmethod
    def from_k8s(cls, body: dict[str, Any]) -> CircuitPolicy:
        return cls.model_validate(body)
