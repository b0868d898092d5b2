"""Traces of real executions, received by a real OTLP/HTTP receiver on 127.0.0.1.

Cases: an execution created with a `runbooks.dev/traceparent` annotation yields
one trace with that trace id: a root span whose parent is the annotation's span,
one span per step attempt under it (a retried step has two), all through an
operator SIGKILL and restart mid-run (the restart is a span event on the root);
`status.traceID` is the trace id; each Job's TRACEPARENT is its attempt's span;
a guarded attempt's span carries its circuit decision (allowed), and a call the
open circuit refused is a span of no duration with a `circuit.rejected` event.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kube import Kube, step, wait_for

from operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "observability"))

from otlp_receiver import OtlpReceiver  # noqa: E402

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_one_trace_per_execution_across_a_restart(kube: Kube, cluster: Any,
                                                  operator: OperatorProcess,
                                                  tmp_path: Path) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}
    kube.ready_runbook("traced", {"steps": [
        step("a", duration="3s"),
        step("b", after=["a"], per_attempt={1: 1}, exit_code=0, retry=retry)]})
    with OtlpReceiver() as receiver:
        traced = OperatorProcess(cluster.kubeconfig, tmp_path / "logs", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "runbook-operator", "OTEL_BSP_SCHEDULE_DELAY": "200"})
        operator.stop()  # one operator at a time
        try:
            traced.start()
            kube.create("runbookexecutions", {
                "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
                "metadata": {"name": "traced-1", "annotations": {
                    "runbooks.dev/traceparent": f"00-{TRACE}-{PARENT}-01"}},
                "spec": {"runbookRef": {"name": "traced"}}})
            wait_for("step a running", lambda: (kube.execution("traced-1").get("status") or {})
                     .get("steps", {}).get("a", {}).get("phase") == "Running")
            traced.kill()
            time.sleep(1.0)
            traced.start()
            body = kube.wait_finished("traced-1")
            assert body["status"]["phase"] == "Succeeded", body["status"]
            spans = receiver.wait_for_spans(4, timeout=30)
        finally:
            traced.stop()
            operator.start()
    assert body["status"]["traceID"] == TRACE
    assert {s.trace_id for s in spans} == {TRACE}
    (root,) = [s for s in spans if s.name.startswith("execution")]
    assert root.parent_span_id == PARENT
    assert root.attributes.get("runbook") == "traced" or \
        "traced" in str(root.attributes), root.attributes
    assert any(e.name == "operator.restart" for e in root.events), root.events
    steps = [s for s in spans if s.name.startswith("step")]
    assert {s.parent_span_id for s in steps} == {root.span_id}
    by_attempt = {(s.name, str(s.attributes.get("attempt", s.attributes.get(
        "runbook.step.attempt")))): s for s in steps}
    assert len(steps) == 3, [(s.name, s.attributes) for s in steps]
    jobs = {j.metadata.name: j for j in kube.jobs("traced-1")}
    for job_name, span in (("traced-1-a-1", "a"), ("traced-1-b-1", "b"), ("traced-1-b-2", "b")):
        env = {e.name: e.value for e in jobs[job_name].spec.template.spec.containers[0].env}
        attempt = job_name.rsplit("-", 1)[1]
        exported = next(s for (name, a), s in by_attempt.items()
                        if name.endswith(span) and a == attempt)
        assert env["TRACEPARENT"] == exported.traceparent


def test_circuit_decisions_are_on_step_spans(kube: Kube, cluster: Any,
                                             operator: OperatorProcess,
                                             tmp_path: Path) -> None:
    kube.create("circuitpolicies", {
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "CircuitPolicy",
        "metadata": {"name": "ai"},
        "spec": {"slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 2,
                 "failureRateThreshold": 50, "openDuration": "1h"}})
    kube.ready_runbook("bad", {"steps": [step("call", exit_code=1,
                                              circuit={"policy": "ai"})]})
    with OtlpReceiver() as receiver:
        traced = OperatorProcess(cluster.kubeconfig, tmp_path / "logs", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200"})
        operator.stop()  # one operator at a time
        try:
            traced.start()
            for i in range(3):  # two failed calls open the circuit; the third is refused
                kube.execute(f"bad-{i}", "bad")
                kube.wait_finished(f"bad-{i}")
            spans = receiver.wait_for_spans(6, timeout=30)
        finally:
            traced.stop()
            operator.start()
    steps = {s.attributes["runbook.execution.name"]: s for s in spans
             if s.name == "step call"}
    for name in ("bad-0", "bad-1"):
        attrs = steps[name].attributes
        assert (attrs["runbook.circuit.decision"], attrs["runbook.circuit.policy"],
                attrs["runbook.circuit.key"]) == ("allowed", "ai", "default")
    refused = steps["bad-2"]
    assert refused.attributes["runbook.circuit.decision"] == "rejected"
    assert refused.attributes["runbook.step.reason"] == "CircuitOpen"
    assert refused.start_ns == refused.end_ns
    (event,) = refused.events
    assert event.name == "circuit.rejected"
    assert (event.attributes["runbook.circuit.policy"],
            event.attributes["runbook.circuit.key"]) == ("ai", "default")
    assert "is Open until" in event.attributes["runbook.circuit.reason"]
    assert kube.jobs("bad-2") == []
