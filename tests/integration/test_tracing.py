"""Traces of real executions, received by a real OTLP/HTTP receiver on 127.0.0.1.

Cases: an execution created with a `runbooks.dev/traceparent` annotation yields
one trace with that trace id: a root span whose parent is the annotation's span,
one span per step attempt under it (a retried step has two), all through an
operator SIGKILL and restart mid-run (the restart is a span event on the root);
`status.traceID` is the trace id; each Job's TRACEPARENT is its attempt's span.
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
