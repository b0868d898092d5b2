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

import time

import pytest
from conftest import Traced
from kube import Kube, step, wait_for

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_one_trace_per_execution_across_a_restart(kube: Kube, traced: Traced) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}
    kube.ready_runbook("traced", {"params": [{"name": "severity", "default": "SEV3"}],
                                  "steps": [
        step("a", duration="3s"),
        step("b", after=["a"], per_attempt={1: 1}, exit_code=0, retry=retry)]})
    kube.create("runbookexecutions", {
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
        "metadata": {"name": "traced-1", "annotations": {
            "runbooks.dev/traceparent": f"00-{TRACE}-{PARENT}-01"}},
        "spec": {"runbookRef": {"name": "traced"}, "params": {"severity": "SEV2"}}})
    wait_for("step a running", lambda: (kube.execution("traced-1").get("status") or {})
             .get("steps", {}).get("a", {}).get("phase") == "Running")
    traced.operator.kill()
    time.sleep(1.0)
    traced.operator.start()
    body = kube.wait_finished("traced-1")
    assert body["status"]["phase"] == "Succeeded", body["status"]
    spans = traced.receiver.wait_for_spans(4, timeout=30)
    assert body["status"]["traceID"] == TRACE
    assert {s.trace_id for s in spans} == {TRACE}
    (root,) = [s for s in spans if s.name.startswith("execution")]
    assert root.parent_span_id == PARENT
    assert {k: root.attributes.get(k) for k in (
        "runbook.name", "runbook.execution.name", "k8s.namespace.name", "runbook.severity",
        "runbook.trigger.kind", "runbook.execution.phase")} == {
        "runbook.name": "traced", "runbook.execution.name": "traced-1",
        "k8s.namespace.name": kube.ns, "runbook.severity": "SEV2",
        "runbook.trigger.kind": "Manual", "runbook.execution.phase": "Succeeded"}
    assert any(e.name == "operator.restart" for e in root.events), root.events
    steps = [s for s in spans if s.name.startswith("step")]
    assert {s.parent_span_id for s in steps} == {root.span_id}
    by_job = {s.attributes["k8s.job.name"]: s for s in steps}
    assert {job: (s.name, s.attributes["runbook.step.attempt"], s.attributes["process.exit.code"],
                  s.attributes["runbook.step.phase"]) for job, s in by_job.items()} == {
        "traced-1-a-1": ("step a", 1, 0, "Succeeded"),
        "traced-1-b-1": ("step b", 1, 1, "Retrying"),
        "traced-1-b-2": ("step b", 2, 0, "Succeeded")}
    assert [e.name for e in by_job["traced-1-b-1"].events] == ["step.retry"]
    for job in kube.jobs("traced-1"):
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        assert env["TRACEPARENT"] == by_job[job.metadata.name].traceparent


def test_circuit_decisions_are_on_step_spans(kube: Kube, traced: Traced) -> None:
    kube.circuit_policy("ai")
    kube.ready_runbook("bad", {"steps": [step("call", exit_code=1,
                                              circuit={"policy": "ai"})]})
    for i in range(3):  # two failed calls open the circuit; the third is refused
        kube.execute(f"bad-{i}", "bad")
        kube.wait_finished(f"bad-{i}")
    spans = traced.receiver.wait_for_spans(6, timeout=30)
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
