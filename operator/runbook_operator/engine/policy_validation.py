"""Validation of a CircuitPolicy spec: what the schema cannot say about it.

A policy the operator cannot use must say so on its own status (``Ready=False``
with a reason), and the steps it guards must fail naming that, rather than as if
the policy did not exist. Pure, and never raises on any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.api.common import parse_duration
from runbook_operator.engine.validation import Problem


def validate_policy(raw: Mapping[str, Any] | None) -> list[Problem]:
    """All problems of a CircuitPolicy spec (reasons InvalidSpec, ContradictorySettings)."""
    try:
        spec = CircuitPolicySpec.model_validate(raw or {})
    except ValidationError as exc:
        return [Problem("InvalidSpec", f"{'.'.join(str(p) for p in e.get('loc', ())) or 'spec'}"
                        f": {e.get('msg', 'invalid')}") for e in exc.errors()]
    except Exception as exc:  # never raise on untrusted input
        return [Problem("InvalidSpec", f"{type(exc).__name__}: {exc}")]
    problems: list[Problem] = []
    durations: dict[str, float] = {}
    fields = {
        "openDuration": spec.open_duration,
        "maxOpenDuration": spec.max_open_duration,
        "slowCallDurationThreshold": spec.slow_call_duration_threshold,
        "timeout": spec.timeout,
        "bulkhead.maxWait": spec.bulkhead.max_wait if spec.bulkhead else None,
        "retry.backoff.initial": spec.retry.backoff.initial if spec.retry else None,
        "retry.backoff.max": spec.retry.backoff.max if spec.retry else None,
    }
    for name, value in fields.items():
        if value is None:
            continue
        try:
            durations[name] = parse_duration(value).total_seconds()
        except (ValueError, OverflowError) as exc:
            problems.append(Problem("InvalidSpec", f"{name}: {exc}"))

    def contradiction(message: str) -> None:
        problems.append(Problem("ContradictorySettings", message))

    if "maxOpenDuration" in durations and "openDuration" in durations and \
            durations["maxOpenDuration"] < durations["openDuration"]:
        contradiction(f"maxOpenDuration {spec.max_open_duration} is shorter than openDuration "
                      f"{spec.open_duration}; make it at least as long, or remove it")
    # minimumCalls above a Count window is not one: like resilience4j, the window's
    # size is the minimum then (engine.circuit.minimum_calls).
    if spec.slow_call_rate_threshold < 100 and spec.slow_call_duration_threshold is None:
        contradiction("slowCallRateThreshold is set but slowCallDurationThreshold is not, so "
                      "no call is ever slow; set slowCallDurationThreshold")
    if "retry.backoff.initial" in durations and "retry.backoff.max" in durations and \
            durations["retry.backoff.initial"] > durations["retry.backoff.max"]:
        contradiction("retry.backoff.initial is longer than retry.backoff.max; "
                      "make max at least initial")
    return problems
