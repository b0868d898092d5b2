"""Query steps in the planner: checks counted once, durable, outputs for later steps.

Cases: a verify step succeeds after ``count`` checks in a row (no Job, wake_at at each
interval); a lost status write (the operator killed between a check and its status)
neither loses a counted check nor counts the redone one twice, and a check for an
old number is ignored; failureLimit fails the step and the execution; a later step
branches on ``steps['measure'].outputs.value``; a refused source fails the step
before any query; the step's timeout ends it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from tests.unit.engine.simulator import T0, Simulator

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import CreateJob, Plan
from runbook_operator.engine.query import Check, NumberedCheck, read_response
from runbook_operator.engine.query_step import due_checks

VERIFY = {"name": "verify", "type": "query", "query": {
    "source": "prometheus", "expr": "avg(memory_ratio{service=$service})",
    "successCondition": "result.value < 0.8", "failureCondition": "result.value > 0.99",
    "interval": "30s", "count": 3, "failureLimit": 2}}


def _sim(steps: list[dict[str, Any]]) -> Simulator:
    spec = {"params": [{"name": "service", "default": "api"}], "steps": steps}
    return Simulator.start(spec)


def _value(v: str, at: datetime) -> Check:
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"service": "api"}, "value": [1, v]}]}}).encode()
    return Check("Result", at, read_response(body))


def _pass(sim: Simulator, value: str | None, persist: bool = True) -> Plan:
    """One pass; the shell's part: make the due checks (with ``value``) first."""
    checks = {}
    if value is not None:
        for step, number in due_checks(list(sim.spec.all_steps()), sim.status.steps, sim.now):
            checks[step.name] = NumberedCheck(number, _value(value, sim.now))
    result = plan(replace(sim.observation(), checks=checks))
    sim.apply(result)
    if persist:
        sim.status = result.status
        sim.wake_at = result.wake_at
    sim.circuits = {**getattr(sim, "circuits", {}), **result.circuits}
    return result


def test_verify_succeeds_after_count_checks_in_a_row() -> None:
    sim = _sim([VERIFY])
    first = _pass(sim, "0.9")  # starts the step; the first check is due at once
    assert sim.status.steps["verify"].phase == "Running" and not first.actions
    assert first.wake_at == T0
    phases = []
    for value in ["0.9", "0.5", "0.85", "0.5", "0.4", "0.3"]:
        result = _pass(sim, value)
        q = sim.status.steps["verify"].query
        assert q is not None
        phases.append((q.checks, q.successes, sim.status.steps["verify"].phase))
        if result.wake_at is not None:
            assert result.wake_at == sim.now + timedelta(seconds=30)
            sim.advance_to(result.wake_at)
    assert phases == [(1, 0, "Running"), (2, 1, "Running"), (3, 0, "Running"),
                      (4, 1, "Running"), (5, 2, "Running"), (6, 3, "Succeeded")]
    assert sim.status.phase == "Succeeded"
    assert sim.status.steps["verify"].outputs == {
        "type": "vector", "count": 1, "empty": False, "value": 0.3, "valueText": "0.3",
        "series": [{"labels": {"service": "api"}, "value": 0.3, "valueText": "0.3"}]}
    assert not sim.created


def test_a_lost_status_write_neither_loses_nor_doubles_a_check() -> None:
    sim = _sim([VERIFY])
    _pass(sim, None)
    _pass(sim, "0.5")  # check 1 counted
    sim.advance(30)
    _pass(sim, "0.5", persist=False)  # check 2 made, then the operator is killed
    q = sim.status.steps["verify"].query
    assert q is not None and (q.checks, q.successes) == (1, 1)
    stale = plan(replace(sim.observation(), checks={
        "verify": NumberedCheck(1, _value("0.5", sim.now))}))  # an old check again
    assert stale.status.steps["verify"].query == q
    _pass(sim, "0.5")  # the restarted operator makes check 2 again: counted once
    q = sim.status.steps["verify"].query
    assert q is not None and (q.checks, q.successes) == (2, 2)


def test_failure_limit_fails_the_step() -> None:
    sim = _sim([VERIFY])
    _pass(sim, None)
    _pass(sim, "0.995")
    sim.advance(30)
    _pass(sim, "0.995")
    st = sim.status.steps["verify"]
    assert (st.phase, st.reason) == ("Failed", "QueryFailed")
    assert "2/2 failed" in (st.message or "")
    assert sim.status.phase == "Failed"


def test_a_later_step_branches_on_the_measured_value() -> None:
    measure = {"name": "measure", "type": "query", "query": {
        "source": "prometheus", "expr": "avg(memory_ratio)", "successCondition": "true"}}
    sim = _sim([measure,
                {"name": "restart", "image": "busybox", "dependsOn": ["measure"],
                 "when": "steps.measure.outputs.value > 0.8"},
                {"name": "leave", "image": "busybox", "dependsOn": ["measure"],
                 "when": "steps.measure.outputs.value <= 0.8"}])
    _pass(sim, None)
    result = _pass(sim, "0.93")
    assert [a for a in result.actions if isinstance(a, CreateJob)] == \
        [CreateJob("restart", 1, "ex-restart-1")]
    assert sim.status.steps["leave"].reason == "WhenFalse"


def test_a_refused_source_fails_the_step_with_its_reason() -> None:
    sim = _sim([VERIFY])
    _pass(sim, None)
    refused = Check("Refused", sim.now, reason="SourceNotAllowed",
                    message="query source 'prometheus' may not be used from namespace 'x'")
    result = plan(replace(sim.observation(), checks={"verify": NumberedCheck(1, refused)}))
    st = result.status.steps["verify"]
    assert (st.phase, st.reason) == ("Failed", "SourceNotAllowed")


def test_the_step_timeout_ends_the_checks() -> None:
    sim = _sim([{**VERIFY, "timeout": "1m"}])
    _pass(sim, None)
    _pass(sim, "0.9")
    sim.advance_to(T0 + timedelta(seconds=60))
    _pass(sim, None)  # no check made this pass: the deadline alone ends it
    st = sim.status.steps["verify"]
    assert (st.phase, st.reason) == ("Failed", "DeadlineExceeded")


POLICY = CircuitPolicySpec.model_validate({
    "slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 2,
    "failureRateThreshold": 50, "openDuration": "60s"})


def test_a_guarded_query_step_is_one_call_and_an_open_circuit_stops_it_before_any_check(
) -> None:
    guarded = {**VERIFY, "circuit": {"policy": "prom"}}
    circuits: dict[Any, Any] = {}
    for _ in range(2):  # two runs whose Prometheus is down: two failed calls
        sim = _sim([guarded])
        sim.policies = {"prom": POLICY}
        sim.circuits = dict(circuits)
        _pass(sim, None)
        assert sim.status.steps["verify"].circuit_admitted_at is not None
        down = Check("Unavailable", sim.now, reason="SourceUnavailable", message="refused")
        result = plan(replace(sim.observation(), checks={"verify": NumberedCheck(1, down)}))
        assert result.status.steps["verify"].reason == "SourceUnavailable"
        assert [c[2] for c in result.calls] == ["failure"]
        circuits = {**circuits, **result.circuits}
    assert circuits[("prom", "default")].state == "Open"
    sim = _sim([guarded])
    sim.policies = {"prom": POLICY}
    sim.circuits = dict(circuits)
    _pass(sim, None)
    st = sim.status.steps["verify"]
    assert (st.phase, st.reason) == ("Failed", "CircuitOpen")
    assert st.query is None  # no check was ever due
    assert due_checks(list(sim.spec.all_steps()), sim.status.steps, sim.now) == []


def test_a_succeeding_guarded_query_step_records_a_success() -> None:
    sim = _sim([{**VERIFY, "query": {**VERIFY["query"], "count": 1},  # type: ignore[dict-item]
                 "circuit": {"policy": "prom"}}])
    sim.policies = {"prom": POLICY}
    _pass(sim, None)
    result = _pass(sim, "0.1")
    assert sim.status.steps["verify"].phase == "Succeeded"
    assert [c[2] for c in result.calls] == ["success"]
