"""Metrics: exact series after recordings, gauges rebuilt from cluster objects, exposition.

Cases: every family has its name, type and labels; recordings give exact values;
registries are independent and a bad circuit outcome is refused; the state gauges
(active, queued, circuit state and failure rate, free bulkhead slots) are set from
objects and zeroed when their objects are gone; ``/metrics`` serves the text format.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from runbook_operator.observability.metrics import Metrics, metrics_handler

EXPECTED_FAMILIES = {
    # name (as the parser reports it): (type, label names)
    "runbook_executions": ("counter", {"namespace", "runbook", "phase"}),
    "runbook_executions_active": ("gauge", {"namespace", "runbook"}),
    "runbook_execution_duration_seconds": ("histogram", {"namespace", "runbook", "phase"}),
    "runbook_executions_queued": ("gauge", {"namespace", "runbook"}),
    "runbook_steps": ("counter", {"namespace", "runbook", "step", "phase"}),
    "runbook_step_duration_seconds": ("histogram", {"namespace", "runbook"}),
    "runbook_step_retries": ("counter", {"namespace", "runbook", "step"}),
    "runbook_step_transition_latency_seconds": ("histogram", set()),
    "runbook_circuit_state": ("gauge", {"namespace", "policy", "key", "state"}),
    "runbook_circuit_calls": ("counter", {"namespace", "policy", "key", "outcome"}),
    "runbook_circuit_transitions": ("counter", {"namespace", "policy", "key", "from", "to"}),
    "runbook_circuit_failure_rate": ("gauge", {"namespace", "policy", "key"}),
    "runbook_bulkhead_available": ("gauge", {"namespace", "policy"}),
    "runbook_operator_reconcile_duration_seconds": ("histogram", {"kind"}),
    "runbook_operator_api_errors": ("counter", {"code"}),
    "runbook_operator_watch_restarts": ("counter", {"resource"}),
    "runbook_operator_takeover_seconds": ("gauge", set()),
    "runbook_alerts_received": ("counter", {"outcome"}),
    "runbook_alert_request_duration_seconds": ("histogram", {"code"}),
    "runbook_schedule_missed": ("counter", {"namespace", "runbook"}),
    "runbook_schedule_runs": ("counter", {"namespace", "runbook", "outcome"}),
    "runbook_notifications": ("counter", {"channel", "event", "outcome"}),
    "runbook_query_checks": ("counter", {"source", "outcome"}),
    "runbook_query_check_duration_seconds": ("histogram", {"source"}),
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered text, parsed back: (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def record_everything(m: Metrics) -> None:
    m.execution_finished("ops", "restart", "Succeeded", 42.0)
    m.execution_finished("ops", "restart", "Failed", 3.0)
    m.execution_finished("ops", "restart", "Failed", None)
    m.set_executions("ops", "restart", active=2, queued=1)
    m.step_finished("ops", "restart", "drain", "Succeeded", 7.5)
    m.step_finished("ops", "restart", "notify", "Skipped", None)
    m.step_retried("ops", "restart", "drain")
    m.step_transition(0.03)
    m.step_transition(1.7)
    m.circuit_transition("ops", "ai", "openai", "Closed", "Open")
    m.circuit_call("ops", "ai", "openai", "failure")
    m.circuit_call("ops", "ai", "openai", "rejected")
    m.set_circuit_failure_rate("ops", "ai", "openai", 0.6)
    m.set_bulkhead_available("ops", "ai", 3)
    with m.time_reconcile("RunbookExecution"):
        pass
    m.api_error(409)
    m.watch_restarted("runbookexecutions")
    m.alert_decided("created")
    m.alert_request(200, 0.004)
    m.schedule_missed_slots("ops", "restart", 3)
    m.schedule_run("ops", "restart", "created")
    m.notification("slack", "Failed", "delivered")
    m.query_checked("prometheus", "Success", 0.012)


def test_families_names_types_and_labels() -> None:
    m = Metrics()
    record_everything(m)
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    assert set(families) == set(EXPECTED_FAMILIES)
    for name, (kind, labels) in EXPECTED_FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, name
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s)
            assert not s.name.endswith("_created"), s


def test_exact_values_after_recordings() -> None:
    m = Metrics()
    record_everything(m)
    v = samples(m)
    ns_rb = {"namespace": "ops", "runbook": "restart"}

    def get(name: str, **labels: str) -> float:
        return v[(name, frozenset(labels.items()))]

    assert get("runbook_executions_total", **ns_rb, phase="Succeeded") == 1
    assert get("runbook_executions_total", **ns_rb, phase="Failed") == 2
    assert get("runbook_execution_duration_seconds_count", **ns_rb, phase="Failed") == 1
    assert get("runbook_execution_duration_seconds_sum", **ns_rb, phase="Succeeded") == 42
    assert get("runbook_execution_duration_seconds_bucket", **ns_rb, phase="Succeeded",
               le="30.0") == 0
    assert get("runbook_execution_duration_seconds_bucket", **ns_rb, phase="Succeeded",
               le="60.0") == 1
    assert get("runbook_executions_active", **ns_rb) == 2
    assert get("runbook_executions_queued", **ns_rb) == 1
    assert get("runbook_steps_total", **ns_rb, step="drain", phase="Succeeded") == 1
    assert get("runbook_steps_total", **ns_rb, step="notify", phase="Skipped") == 1
    assert get("runbook_step_duration_seconds_count", **ns_rb) == 1
    assert get("runbook_step_retries_total", **ns_rb, step="drain") == 1
    assert get("runbook_step_transition_latency_seconds_bucket", le="0.05") == 1
    assert get("runbook_step_transition_latency_seconds_bucket", le="1.0") == 1
    assert get("runbook_step_transition_latency_seconds_bucket", le="2.5") == 2
    assert get("runbook_step_transition_latency_seconds_count") == 2
    bounds = sorted(float(dict(labels)["le"]) for name, labels in v
                    if name == "runbook_step_transition_latency_seconds_bucket")
    assert bounds == [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")]
    circuit = {"namespace": "ops", "policy": "ai", "key": "openai"}
    assert get("runbook_circuit_state", **circuit, state="Open") == 1
    assert get("runbook_circuit_state", **circuit, state="Closed") == 0
    assert get("runbook_circuit_state", **circuit, state="HalfOpen") == 0
    assert get("runbook_circuit_transitions_total", **circuit, **{"from": "Closed"},
               to="Open") == 1
    assert get("runbook_circuit_calls_total", **circuit, outcome="failure") == 1
    assert get("runbook_circuit_calls_total", **circuit, outcome="rejected") == 1
    assert get("runbook_circuit_failure_rate", **circuit) == 0.6
    assert get("runbook_bulkhead_available", namespace="ops", policy="ai") == 3
    assert get("runbook_operator_reconcile_duration_seconds_count", kind="RunbookExecution") == 1
    assert get("runbook_operator_api_errors_total", code="409") == 1
    assert get("runbook_operator_watch_restarts_total", resource="runbookexecutions") == 1


def test_registries_are_independent_and_outcomes_checked() -> None:
    a, b = Metrics(), Metrics()
    a.api_error(500)
    assert value(a, "runbook_operator_api_errors_total", code="500") == 1
    assert value(b, "runbook_operator_api_errors_total", code="500") is None
    with pytest.raises(ValueError):
        a.circuit_call("ops", "ai", "k", "maybe")


def execution(ns: str, name: str, runbook: str, phase: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"namespace": ns, "name": name},
                            "spec": {"runbookRef": {"name": runbook}}}
    if phase is not None:
        body["status"] = {"phase": phase}
    return body


def policy(ns: str, name: str, circuits: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "status": {"circuits": circuits}}


def test_rebuild_from_sets_and_zeroes_gauges() -> None:
    m = Metrics()
    m.rebuild_from(
        [execution("ops", "r1", "restart", "Running"),
         execution("ops", "r2", "restart", "WaitingForApproval"),
         execution("ops", "r3", "restart", "Queued"),
         execution("ops", "r4", "restart", "Succeeded"),
         execution("ops", "r5", "restart", None),  # not seen by the operator yet
         execution("dev", "d1", "rotate", "Queued"),
         {"metadata": {"name": "broken"}, "spec": "nonsense"}],
        [policy("ops", "ai", [{"key": "openai", "state": "Open", "failureRate": 75.0},
                              {"key": "anthropic", "state": "HalfOpen"},
                              {"state": "Open"}]),
         {"metadata": {"namespace": "ops", "name": "fresh"}}])
    assert value(m, "runbook_executions_active", namespace="ops", runbook="restart") == 2
    assert value(m, "runbook_executions_queued", namespace="ops", runbook="restart") == 1
    assert value(m, "runbook_executions_active", namespace="dev", runbook="rotate") == 0
    assert value(m, "runbook_executions_queued", namespace="dev", runbook="rotate") == 1
    openai = {"namespace": "ops", "policy": "ai", "key": "openai"}
    assert value(m, "runbook_circuit_state", **openai, state="Open") == 1
    assert value(m, "runbook_circuit_state", **openai, state="Closed") == 0
    assert value(m, "runbook_circuit_failure_rate", **openai) == 0.75
    assert value(m, "runbook_circuit_state", namespace="ops", policy="ai", key="anthropic",
                 state="HalfOpen") == 1

    # After the restart/refresh: the queue emptied, the circuit's policy is gone.
    m.rebuild_from([execution("ops", "r1", "restart", "Succeeded")], [])
    assert value(m, "runbook_executions_active", namespace="ops", runbook="restart") == 0
    assert value(m, "runbook_executions_queued", namespace="dev", runbook="rotate") == 0
    for state in ("Closed", "Open", "HalfOpen"):
        assert value(m, "runbook_circuit_state", **openai, state=state) == 0
    assert value(m, "runbook_circuit_failure_rate", **openai) == 0


def guarded(ns: str, name: str, phase: str, steps: dict[str, tuple[str, str]]
            ) -> dict[str, Any]:
    """An execution whose steps are (phase, circuit) pairs, all admitted."""
    body = execution(ns, name, "call-ai", phase)
    body["status"]["steps"] = {
        step: {"phase": p, "circuit": c, "circuitAdmittedAt": "2026-01-01T00:00:00Z"}
        for step, (p, c) in steps.items()}
    return body


def test_bulkhead_available_counts_running_guarded_steps() -> None:
    executions = [
        guarded("ops", "a", "Running", {"x": ("Running", "ai/openai"),
                                        "y": ("Running", "ai/anthropic"),
                                        "z": ("Succeeded", "ai/openai")}),
        guarded("ops", "b", "WaitingForApproval", {"x": ("Running", "ai/openai")}),
        guarded("ops", "c", "Succeeded", {"x": ("Running", "ai/openai")}),  # stale step
        guarded("ops", "d", "Running", {"x": ("Running", "other/openai")}),
        guarded("dev", "e", "Running", {"x": ("Running", "ai/openai")}),
        {"metadata": {"namespace": "ops"}, "status": {"phase": "Running", "steps": [1]}},
    ]
    bulkhead = {"metadata": {"namespace": "ops", "name": "ai"},
                "spec": {"bulkhead": {"maxConcurrent": 5}}}
    m = Metrics()
    m.rebuild_from(executions, [bulkhead, policy("ops", "other", [])])
    assert value(m, "runbook_bulkhead_available", namespace="ops", policy="ai") == 2
    # A policy without a bulkhead has no such series.
    assert value(m, "runbook_bulkhead_available", namespace="ops", policy="other") is None


def test_metrics_handler_serves_the_text_format() -> None:
    m = Metrics()
    record_everything(m)

    async def scrape() -> tuple[int, str, str]:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(m))
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/metrics")
            return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = asyncio.run(scrape())
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'runbook_executions_total{namespace="ops",phase="Failed",runbook="restart"} 2.0' \
        in text
    assert {f.name for f in text_string_to_metric_families(text)} == set(EXPECTED_FAMILIES)
