"""Execution traces, exported over real OTLP/HTTP to a receiver on 127.0.0.1.

Cases:

* root and step spans arrive with parent links, names, attributes, kinds, resource,
  and start/end times taken exactly from the status strings;
* a retried attempt carries a ``step.retry`` event, a noted restart an
  ``operator.restart`` event on the root;
* the trace ID equals ``trace_id(uid)`` and is stable across two tracer instances
  (a simulated restart): the second instance's spans join the same trace;
* IDs are deterministic (a golden value), distinct per step and attempt, never zero;
* the ``runbooks.dev/traceparent`` annotation is honoured: same trace ID, the root's
  parent is the annotation's span; malformed values are ignored and never raise;
* the ``TRACEPARENT`` of an attempt equals the W3C form of the span later exported;
* a failed step or execution has status ERROR with its message, a success OK;
* secret-looking attributes, messages and event attributes are redacted;
* tracing is off without an endpoint or with ``OTEL_SDK_DISABLED``: no exporter,
  no thread, the API still works;
* the ratio sampler decides deterministically (as the SDK's would) and the
  parent-based one follows the annotation's sampled flag;
* the SDK reads the ``OTEL_*`` variables: base and traces-specific endpoints,
  percent-encoded headers, gzip, the resource (``OTEL_SERVICE_NAME`` over
  ``OTEL_RESOURCE_ATTRIBUTES``, our default service name otherwise), an unknown
  sampler or a bad ratio falls back to parent-based always-on;
* timestamps: offsets, no fraction, a missing start, an end before the start;
* an alert notification's span is the parent of the executions created with its
  traceparent (same trace).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from runbook_operator.engine.redact import REDACTED
from runbook_operator.observability.tracing import (
    TRACEPARENT_ANNOTATION,
    ExecutionInfo,
    ExecutionTracer,
    approval_event,
    circuit_rejection_event,
    configure_tracing,
)

from .otlp_receiver import OtlpReceiver, ReceivedSpan

UID = "5f0c2a8e-4a43-4a8f-9a7e-2f6d3c1b9e01"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
W3C = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
KIND_INTERNAL, KIND_CONSUMER = 1, 5
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"

Tracers = Callable[..., ExecutionTracer]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Sets ``OTEL_*`` variables for this test only, starting from none at all."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)

    def setenv(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return setenv


@pytest.fixture
def tracers(receiver: OtlpReceiver, otel_env: Callable[..., None]) -> Iterator[Tracers]:
    """Builds tracers exporting to the receiver (extra env on top); shuts them down after."""
    made: list[ExecutionTracer] = []

    def make(**env: str) -> ExecutionTracer:
        otel_env(**{"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_SERVICE_NAME": "rbo-test", **env})
        tracer = configure_tracing()
        made.append(tracer)
        return tracer

    yield make
    for tracer in made:
        tracer.shutdown()


def body(uid: str = UID, annotations: Mapping[str, Any] | None = None,
         params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "restart-x1", "namespace": "ops", "uid": uid,
                     "annotations": dict(annotations or {})},
        "spec": {"runbookRef": {"name": "restart"},
                 "params": dict(params if params is not None else {"severity": "critical"}),
                 "triggeredBy": {"kind": "Alert", "alert": {"name": "HighLatency"}}},
    }


def ns(text: str) -> int:
    """Nanoseconds since the epoch, computed independently of the module under test."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def flushed(tracer: ExecutionTracer, receiver: OtlpReceiver, count: int) -> list[ReceivedSpan]:
    assert tracer.force_flush()
    return receiver.wait_for_spans(count)


def run_restart(tracer: ExecutionTracer, info: ExecutionInfo) -> None:
    """drain succeeds; restart fails once, then succeeds; the execution succeeds."""
    tracer.step_span(info, "drain", 1, phase="Succeeded", job="restart-x1-drain-1",
                     exit_code=0, reason="Completed", started_at="2026-11-27T10:57:37.123Z",
                     finished_at="2026-11-27T10:57:41.456Z")
    tracer.step_span(info, "restart", 1, phase="Retrying", job="restart-x1-restart-1",
                     exit_code=1, reason="BackoffLimitExceeded", message="exit code 1",
                     started_at="2026-11-27T10:57:41.500Z",
                     finished_at="2026-11-27T10:57:45.000Z",
                     next_attempt_at="2026-11-27T10:57:55.000Z", circuit="allowed")
    tracer.step_span(info, "restart", 2, phase="Succeeded", job="restart-x1-restart-2",
                     exit_code=0, started_at="2026-11-27T10:57:55.010Z",
                     finished_at="2026-11-27T10:58:01.999Z")
    tracer.execution_span(info, phase="Succeeded", reason="Succeeded",
                          started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:58:02.250Z")


# -- spans, links, attributes, times -------------------------------------------------------


def test_root_and_step_spans_arrive_linked_with_times_from_status(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body())
    assert tracer.enabled
    run_restart(tracer, info)
    spans = flushed(tracer, receiver, 4)
    assert len(spans) == 4
    assert receiver.rejected == 0

    trace_id = tracer.trace_id(UID)
    assert {s.trace_id for s in spans} == {trace_id}
    root = next(s for s in spans if s.name == "execution restart")
    steps = [s for s in spans if s is not root]
    assert root.parent_span_id == ""
    assert all(s.parent_span_id == root.span_id for s in steps)
    assert sorted(s.name for s in steps) == ["step drain", "step restart", "step restart"]
    assert len({s.span_id for s in spans}) == 4

    assert root.start_ns == ns("2026-11-27T10:57:37.000Z")
    assert root.end_ns == ns("2026-11-27T10:58:02.250Z")
    assert root.kind == KIND_INTERNAL
    assert root.status_code == STATUS_OK
    assert root.attributes == {
        "runbook.name": "restart", "runbook.execution.name": "restart-x1",
        "runbook.execution.uid": UID, "k8s.namespace.name": "ops",
        "runbook.severity": "critical", "runbook.trigger.kind": "Alert",
        "runbook.execution.phase": "Succeeded", "runbook.execution.reason": "Succeeded",
    }
    assert root.resource["service.name"] == "rbo-test"
    assert root.scope == "runbook_operator.observability.tracing"

    drain = next(s for s in steps if s.name == "step drain")
    assert drain.start_ns == ns("2026-11-27T10:57:37.123Z")
    assert drain.end_ns == ns("2026-11-27T10:57:41.456Z")
    assert drain.start_ns % 1_000_000_000 == 123_000_000
    assert drain.attributes == {
        "runbook.name": "restart", "runbook.execution.name": "restart-x1",
        "runbook.execution.uid": UID, "k8s.namespace.name": "ops",
        "runbook.step.name": "drain", "runbook.step.attempt": 1,
        "runbook.step.phase": "Succeeded", "runbook.step.outcome": "success",
        "runbook.step.reason": "Completed", "k8s.job.name": "restart-x1-drain-1",
        "process.exit.code": 0,
    }
    assert drain.kind == KIND_INTERNAL
    assert drain.status_code == STATUS_OK

    first, second = sorted((s for s in steps if s.name == "step restart"),
                           key=lambda s: s.attributes["runbook.step.attempt"])
    assert first.attributes["runbook.step.attempt"] == 1
    assert first.attributes["runbook.step.outcome"] == "failure"
    assert first.attributes["runbook.circuit.decision"] == "allowed"
    assert first.status_code == STATUS_ERROR
    assert first.status_message == "exit code 1"
    [retry] = first.events
    assert retry.name == "step.retry"
    assert retry.time_ns == ns("2026-11-27T10:57:45.000Z")
    assert retry.attributes == {"runbook.step.next_attempt": 2,
                                "runbook.step.next_attempt_at": "2026-11-27T10:57:55.000Z",
                                "runbook.step.reason": "BackoffLimitExceeded"}
    assert second.attributes["runbook.step.attempt"] == 2
    assert second.span_id != first.span_id
    assert second.status_code == STATUS_OK


def test_events_for_approvals_circuit_rejections_and_restarts(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body())
    tracer.step_span(info, "approve", 0, phase="Succeeded",
                     started_at="2026-11-27T11:00:00.000Z", finished_at="2026-11-27T11:05:00.000Z",
                     events=[approval_event("2026-11-27T11:04:59.500Z", "Approve", by="alice",
                                            comment="go")])
    tracer.step_span(info, "call-api", 1, phase="Failed", reason="CircuitOpen",
                     circuit="rejected", started_at="2026-11-27T11:05:01.000Z",
                     finished_at=None,
                     events=[circuit_rejection_event(None, "api-policy", "api.internal",
                                                     "Open")])
    tracer.note_restart(UID, "2026-11-27T11:02:00.000Z")
    tracer.execution_span(info, phase="Failed", reason="StepFailed",
                          message="step 'call-api' failed: circuit open",
                          started_at="2026-11-27T11:00:00.000Z",
                          finished_at="2026-11-27T11:05:02.000Z")
    by_name = {s.name: s for s in flushed(tracer, receiver, 3)}

    [approval] = by_name["step approve"].events
    assert (approval.name, approval.time_ns) == ("approval", ns("2026-11-27T11:04:59.500Z"))
    assert approval.attributes == {"runbook.approval.decision": "Approve",
                                   "runbook.approval.by": "alice",
                                   "runbook.approval.comment": "go"}
    rejected = by_name["step call-api"]
    assert rejected.start_ns == rejected.end_ns == ns("2026-11-27T11:05:01.000Z")
    assert rejected.attributes["runbook.circuit.decision"] == "rejected"
    assert "k8s.job.name" not in rejected.attributes
    [event] = rejected.events
    assert event.name == "circuit.rejected"
    assert event.time_ns == rejected.end_ns  # no time: at the span's end
    assert event.attributes == {"runbook.circuit.policy": "api-policy",
                                "runbook.circuit.key": "api.internal",
                                "runbook.circuit.state": "Open"}
    root = by_name["execution restart"]
    [restart] = root.events
    assert (restart.name, restart.time_ns) == ("operator.restart",
                                               ns("2026-11-27T11:02:00.000Z"))
    assert root.status_code == STATUS_ERROR
    assert root.status_message == "step 'call-api' failed: circuit open"


def test_execution_info_from_a_body() -> None:
    info = ExecutionInfo.from_body(body(annotations={"a": "b", "n": 1}))
    assert info == ExecutionInfo(uid=UID, name="restart-x1", namespace="ops",
                                 runbook="restart", annotations={"a": "b"},
                                 severity="critical", trigger="Alert")
    alert = body(params={})
    alert["spec"]["triggeredBy"]["alert"]["labels"] = {"severity": "warning"}
    assert ExecutionInfo.from_body(alert).severity == "warning"
    assert ExecutionInfo.from_body({}) == ExecutionInfo(uid="", name="", namespace="",
                                                        runbook="")
    assert ExecutionInfo.from_body({"spec": {"params": {"severity": 3}}}).severity is None


# -- determinism across processes ----------------------------------------------------------------


def test_trace_is_stable_across_a_restart(tracers: Tracers, receiver: OtlpReceiver) -> None:
    info = ExecutionInfo.from_body(body())
    before = tracers()
    tp_attempt_2 = before.traceparent(UID, info.annotations, "restart", 2)
    before.step_span(info, "drain", 1, phase="Succeeded",
                     started_at="2026-11-27T10:57:37.123Z", finished_at="2026-11-27T10:57:41.456Z")
    before.shutdown()  # the operator dies with the execution running

    after = tracers()
    assert after.trace_id(UID) == before.trace_id(UID)
    assert after.traceparent(UID, info.annotations, "restart", 2) == tp_attempt_2
    after.note_restart(UID, "2026-11-27T10:57:50.000Z")
    after.step_span(info, "restart", 2, phase="Succeeded",
                    started_at="2026-11-27T10:57:55.010Z", finished_at="2026-11-27T10:58:01.999Z")
    after.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                         finished_at="2026-11-27T10:58:02.250Z")
    spans = flushed(after, receiver, 3)

    assert {s.trace_id for s in spans} == {before.trace_id(UID)}
    root = next(s for s in spans if s.name == "execution restart")
    assert all(s.parent_span_id == root.span_id for s in spans if s is not root)
    assert [e.name for e in root.events] == ["operator.restart"]
    restart = next(s for s in spans if s.name == "step restart")
    assert restart.traceparent == tp_attempt_2


def test_ids_are_deterministic_distinct_and_well_formed() -> None:
    tracer = ExecutionTracer()  # off: IDs are computed all the same
    trace_id = tracer.trace_id(UID)
    assert HEX32.match(trace_id) and trace_id != "0" * 32
    # A golden value: changing how IDs are derived splits the traces of executions
    # that run across an operator upgrade.
    assert trace_id == "baa9c4ffb7a96cccdbf66d97994b4308"
    assert tracer.traceparent(UID, None, "drain", 1).split("-")[2] == "bb549b7d70587f38"
    assert ExecutionTracer().trace_id(UID) == trace_id
    assert tracer.trace_id("another-uid") != trace_id
    parents = {tracer.traceparent(UID, None, step, attempt)
               for step in ("drain", "restart", "execution") for attempt in (1, 2, 3)}
    assert len(parents) == 9
    for tp in parents:
        assert W3C.match(tp), tp
        assert tp.split("-")[1] == trace_id
        assert tp.split("-")[2] != "0" * 16


# -- the traceparent annotation ---------------------------------------------------------------


def test_traceparent_annotation_joins_the_callers_trace(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    annotations = {TRACEPARENT_ANNOTATION: f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    info = ExecutionInfo.from_body(body(annotations=annotations))
    assert tracer.trace_id(UID, annotations) == PARENT_TRACE
    tp = tracer.traceparent(UID, annotations, "drain", 1)
    assert tp.startswith(f"00-{PARENT_TRACE}-") and tp.endswith("-01")
    tracer.step_span(info, "drain", 1, phase="Succeeded",
                     started_at="2026-11-27T10:57:37.123Z", finished_at="2026-11-27T10:57:41.456Z")
    tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:57:42.000Z")
    by_name = {s.name: s for s in flushed(tracer, receiver, 2)}
    root, step = by_name["execution restart"], by_name["step drain"]
    assert root.trace_id == step.trace_id == PARENT_TRACE
    assert root.parent_span_id == PARENT_SPAN
    assert root.kind == KIND_CONSUMER
    assert root.flags & 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE: the parent is remote
    assert step.parent_span_id == root.span_id
    assert step.traceparent == tp


MALFORMED = [
    "",
    "garbage",
    f"01-{PARENT_TRACE}-{PARENT_SPAN}-01",            # unknown version
    f"00-{PARENT_TRACE.upper()}-{PARENT_SPAN}-01",    # uppercase is invalid
    f"00-{'0' * 32}-{PARENT_SPAN}-01",                # all-zero trace ID
    f"00-{PARENT_TRACE}-{'0' * 16}-01",               # all-zero span ID
    f"00-{PARENT_TRACE[:-1]}-{PARENT_SPAN}-01",       # short
    f"00-{PARENT_TRACE}-{PARENT_SPAN}-01-extra",
    f"00-{PARENT_TRACE}-{PARENT_SPAN}-zz",
    f"00_{PARENT_TRACE}_{PARENT_SPAN}_01",
    "00-\u0664bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # a non-ASCII digit
]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_traceparent_is_ignored(value: str) -> None:
    tracer = ExecutionTracer()
    annotations = {TRACEPARENT_ANNOTATION: value}
    assert tracer.trace_id(UID, annotations) == tracer.trace_id(UID)
    assert tracer.traceparent(UID, annotations, "drain", 1) == \
        tracer.traceparent(UID, None, "drain", 1)


def test_a_malformed_traceparent_leaves_a_root_without_parent(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    bad = body(annotations={TRACEPARENT_ANNOTATION: "00-nope"})
    odd = body(uid="uid-2", annotations={TRACEPARENT_ANNOTATION: 42})  # not even a string
    for b in (bad, odd):
        info = ExecutionInfo.from_body(b)
        tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                              finished_at="2026-11-27T10:57:42.000Z")
    spans = flushed(tracer, receiver, 2)
    assert {s.trace_id for s in spans} == {tracer.trace_id(UID), tracer.trace_id("uid-2")}
    assert all(s.parent_span_id == "" for s in spans)


# -- TRACEPARENT of a step container ---------------------------------------------------------------


def test_traceparent_of_an_attempt_is_the_span_later_exported(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body())
    # Known when the Job is created, long before the attempt's span exists.
    given = {(step, attempt): tracer.traceparent(UID, info.annotations, step, attempt)
             for step, attempt in (("drain", 1), ("restart", 1), ("restart", 2))}
    run_restart(tracer, info)
    spans = flushed(tracer, receiver, 4)
    exported = {(s.attributes["runbook.step.name"], s.attributes["runbook.step.attempt"]):
                s.traceparent for s in spans if s.name.startswith("step ")}
    assert exported == given


# -- status and redaction --------------------------------------------------------------------------


def test_a_failed_step_and_execution_have_status_error(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body())
    tracer.step_span(info, "drain", 3, phase="Failed", reason="BackoffLimitExceeded",
                     exit_code=2, started_at="2026-11-27T10:57:37.123Z",
                     finished_at="2026-11-27T10:57:41.456Z")
    tracer.step_span(info, "notify", 0, phase="Skipped", reason="UpstreamFailed",
                     started_at="2026-11-27T10:57:41.456Z", finished_at="2026-11-27T10:57:41.456Z")
    tracer.execution_span(info, phase="Failed", reason="StepFailed",
                          started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:57:42.000Z")
    by_name = {s.name: s for s in flushed(tracer, receiver, 3)}
    failed = by_name["step drain"]
    assert failed.status_code == STATUS_ERROR
    assert failed.status_message == "BackoffLimitExceeded"  # no message: the reason
    assert failed.attributes["process.exit.code"] == 2
    assert failed.attributes["runbook.step.outcome"] == "failure"
    skipped = by_name["step notify"]
    assert skipped.status_code == STATUS_UNSET
    assert skipped.attributes["runbook.step.outcome"] == "skipped"
    assert by_name["execution restart"].status_code == STATUS_ERROR


def test_secret_looking_attributes_are_redacted(tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body(params={"severity": "token=sev3r1ty"}))
    tracer.step_span(
        info, "drain", 1, phase="Failed", reason="password=hunter2",
        message="GET https://bob:pa55word@api.internal failed: Authorization: Bearer abc.def",
        started_at="2026-11-27T10:57:37.123Z", finished_at="2026-11-27T10:57:41.456Z",
        attributes={"api_token": "s3cr3tvalue", "note": "db_password: 'q1w2e3'"},
        events=[approval_event("2026-11-27T10:57:40.000Z", "Approve", by="alice",
                               comment="apiKey=k3yk3y")])
    tracer.execution_span(info, phase="Failed", message="secret=t0ps3cret",
                          started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:57:42.000Z")
    spans = flushed(tracer, receiver, 2)
    text = repr(spans)
    for secret in ("sev3r1ty", "hunter2", "pa55word", "abc.def", "s3cr3tvalue", "q1w2e3",
                   "k3yk3y", "t0ps3cret"):
        assert secret not in text, secret
    step = next(s for s in spans if s.name == "step drain")
    assert step.attributes["api_token"] == REDACTED
    assert step.attributes["runbook.step.reason"] == f"password={REDACTED}"
    assert step.attributes["note"] == f"db_password: '{REDACTED}'"
    assert step.status_message == (f"GET https://bob:{REDACTED}@api.internal failed: "
                                   f"Authorization: Bearer {REDACTED}")
    assert step.events[0].attributes["runbook.approval.comment"] == f"apiKey={REDACTED}"
    assert step.events[0].attributes["runbook.approval.by"] == "alice"


# -- off ------------------------------------------------------------------------------------------


def otel_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate()}


@pytest.mark.parametrize("env", [
    {},
    {"OTEL_SERVICE_NAME": "rbo", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
    {"OTEL_EXPORTER_OTLP_ENDPOINT": "RECEIVER", "OTEL_SDK_DISABLED": "true"},
    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "RECEIVER/v1/traces", "OTEL_SDK_DISABLED": "TRUE"},
])
def test_tracing_is_off_without_endpoint_or_when_disabled(
        env: dict[str, str], receiver: OtlpReceiver, otel_env: Callable[..., None]) -> None:
    otel_env(**{k: v.replace("RECEIVER", receiver.endpoint) for k, v in env.items()})
    threads = otel_threads()
    tracer = configure_tracing()
    assert not tracer.enabled
    assert otel_threads() == threads  # no batch processor thread

    info = ExecutionInfo.from_body(body())
    assert HEX32.match(tracer.trace_id(UID))
    assert tracer.traceparent(UID, None, "drain", 1).endswith("-00")  # not recorded
    assert tracer.step_span(info, "drain", 1, phase="Succeeded",
                            started_at="2026-11-27T10:57:37.123Z",
                            finished_at="2026-11-27T10:57:41.456Z") is None
    tracer.note_restart(UID, "2026-11-27T10:57:40.000Z")
    assert tracer.execution_span(info, phase="Succeeded", started_at=None,
                                 finished_at=None) is None
    assert tracer.force_flush()
    tracer.shutdown()
    tracer.shutdown()
    assert receiver.spans == [] and receiver.requests == []


# -- sampling --------------------------------------------------------------------------------------


def test_ratio_sampler_is_deterministic(tracers: Tracers, receiver: OtlpReceiver) -> None:
    env = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    first, second = tracers(**env), tracers(**env)
    sdk = TraceIdRatioBased(0.5)
    uids = [f"uid-{i}" for i in range(400)]
    decisions = {}
    for uid in uids:
        flag = first.traceparent(uid, None, "drain", 1)[-2:]
        assert second.traceparent(uid, None, "drain", 1)[-2:] == flag
        expected = sdk.should_sample(None, int(first.trace_id(uid), 16), "x").decision
        assert (flag == "01") == (expected == Decision.RECORD_AND_SAMPLE)
        decisions[uid] = flag == "01"
    assert 0.35 < sum(decisions.values()) / len(uids) < 0.65

    for uid in uids[:40]:
        info = ExecutionInfo.from_body(body(uid=uid))
        returned = first.execution_span(info, phase="Succeeded",
                                        started_at="2026-11-27T10:57:37.000Z",
                                        finished_at="2026-11-27T10:57:42.000Z")
        assert (returned is not None) == decisions[uid]
    sampled = {first.trace_id(u) for u in uids[:40] if decisions[u]}
    spans = flushed(first, receiver, len(sampled))
    assert {s.trace_id for s in spans} == sampled


@pytest.mark.parametrize(("sampler", "flag", "exported"), [
    ("parentbased_always_on", "00", False),   # the caller did not sample: neither do we
    ("parentbased_always_on", "01", True),
    ("parentbased_always_off", "01", True),
    ("always_on", "00", True),                # not parent-based: the flag is ignored
    ("always_off", "01", False),
    ("parentbased_traceidratio", "01", True),  # ratio 0, but the parent decided
])
def test_parent_based_sampling_follows_the_annotation(
        sampler: str, flag: str, exported: bool, tracers: Tracers) -> None:
    tracer = tracers(OTEL_TRACES_SAMPLER=sampler, OTEL_TRACES_SAMPLER_ARG="0")
    annotations = {TRACEPARENT_ANNOTATION: f"00-{PARENT_TRACE}-{PARENT_SPAN}-{flag}"}
    tp = tracer.traceparent(UID, annotations, "drain", 1)
    assert tp.endswith("-01" if exported else "-00")
    info = ExecutionInfo.from_body(body(annotations=annotations))
    span = tracer.step_span(info, "drain", 1, phase="Succeeded",
                            started_at="2026-11-27T10:57:37.123Z",
                            finished_at="2026-11-27T10:57:41.456Z")
    assert (span == tp) if exported else span is None


# -- settings --------------------------------------------------------------------------------------


def exported_resource(tracer: ExecutionTracer, receiver: OtlpReceiver) -> dict[str, Any]:
    info = ExecutionInfo.from_body(body())
    tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:57:42.000Z")
    spans = flushed(tracer, receiver, len(receiver.spans) + 1)
    return dict(spans[-1].resource)


def test_the_sdk_reads_the_endpoint_headers_and_resource(
        receiver: OtlpReceiver, otel_env: Callable[..., None]) -> None:
    # The traces-specific endpoint is taken as is and wins over the base one.
    otel_env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9/nowhere",
             OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.endpoint + "/v1/traces",
             OTEL_EXPORTER_OTLP_HEADERS="X-Api-Key=abc%20def,tenant=ops",
             OTEL_RESOURCE_ATTRIBUTES="service.name=from-attributes,deployment.environment=prod")
    tracer = configure_tracing()
    try:
        resource = exported_resource(tracer, receiver)
    finally:
        tracer.shutdown()
    assert resource["service.name"] == "from-attributes"  # no OTEL_SERVICE_NAME
    assert resource["deployment.environment"] == "prod"
    [request] = receiver.requests
    assert (request.headers.get("x-api-key"), request.headers.get("tenant")) == ("abc def", "ops")


def test_our_service_name_is_the_default_and_otel_service_name_wins(
        receiver: OtlpReceiver, otel_env: Callable[..., None]) -> None:
    otel_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint + "/")
    tracer = configure_tracing()
    try:
        assert exported_resource(tracer, receiver)["service.name"] == "runbook-operator"
    finally:
        tracer.shutdown()
    otel_env(OTEL_SERVICE_NAME="rbo", OTEL_RESOURCE_ATTRIBUTES="service.name=ignored")
    tracer = configure_tracing()
    try:
        assert exported_resource(tracer, receiver)["service.name"] == "rbo"
    finally:
        tracer.shutdown()


@pytest.mark.parametrize(("sampler", "arg"), [("jaeger_remote", "0"),
                                              ("traceidratio", "7"),
                                              ("TraceIdRatio", "soon")])
def test_an_unknown_sampler_or_bad_ratio_samples_everything(
        sampler: str, arg: str, tracers: Tracers) -> None:
    tracer = tracers(OTEL_TRACES_SAMPLER=sampler, OTEL_TRACES_SAMPLER_ARG=arg)
    assert all(tracer.traceparent(f"uid-{i}", None, "drain", 1).endswith("-01")
               for i in range(50))


def test_export_headers_and_compression_reach_the_receiver(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers(OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-api-key=k123",
                     OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
                     OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test")
    info = ExecutionInfo.from_body(body())
    tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                          finished_at="2026-11-27T10:57:42.000Z")
    [span] = flushed(tracer, receiver, 1)
    [request] = receiver.requests
    assert request.headers.get("x-api-key") == "k123"
    assert request.headers.get("Content-Encoding") == "gzip"
    assert span.resource["deployment.environment"] == "test"
    assert span.resource["service.name"] == "rbo-test"


# -- timestamps ------------------------------------------------------------------------------------


def test_timestamps_offsets_and_gaps(tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    info = ExecutionInfo.from_body(body())
    cases = {
        "offset": ("2026-11-27T12:57:37.123+02:00", "2026-11-27T10:57:38Z"),
        "no-start": (None, "2026-11-27T10:57:38.500Z"),
        "backwards": ("2026-11-27T10:57:39.000Z", "2026-11-27T10:57:38.000Z"),
        "bad-start": ("yesterday", "2026-11-27T10:57:38.000Z"),
    }
    for step, (start, end) in cases.items():
        tracer.step_span(info, step, 1, phase="Succeeded", started_at=start, finished_at=end)
    assert tracer.step_span(info, "never", 1, phase="Succeeded", started_at=None,
                            finished_at="not a time") is None
    by_name = {s.name: s for s in flushed(tracer, receiver, 4)}
    assert len(by_name) == 4
    offset = by_name["step offset"]
    assert (offset.start_ns, offset.end_ns) == (ns("2026-11-27T10:57:37.123Z"),
                                                ns("2026-11-27T10:57:38.000Z"))
    gap = by_name["step no-start"]
    assert gap.start_ns == gap.end_ns == ns("2026-11-27T10:57:38.500Z")
    backwards = by_name["step backwards"]
    assert backwards.start_ns == backwards.end_ns == ns("2026-11-27T10:57:39.000Z")
    assert by_name["step bad-start"].start_ns == ns("2026-11-27T10:57:38.000Z")


def test_spans_after_shutdown_are_dropped(tracers: Tracers, receiver: OtlpReceiver) -> None:
    tracer = tracers()
    tracer.shutdown()
    assert not tracer.enabled
    info = ExecutionInfo.from_body(body())
    assert tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:57:37.000Z",
                                 finished_at="2026-11-27T10:57:42.000Z") is None
    assert tracer.force_flush()
    assert receiver.spans == []



def test_notification_span_is_the_parent_of_the_executions_it_created(
        tracers: Tracers, receiver: OtlpReceiver) -> None:
    from runbook_operator.observability.tracing import format_traceparent

    tracer = tracers()
    trace_id, span_id, sampled = tracer.notification_context()
    assert sampled and trace_id and span_id
    traceparent = format_traceparent(trace_id, span_id, sampled)
    tracer.notification_span(trace_id, span_id, start_ns=ns("2026-11-27T10:00:00Z"),
                             end_ns=ns("2026-11-27T10:00:00.020Z"),
                             attributes={"alertmanager.receiver": "runbook-operator",
                                         "runbook.executions": ["restart-x1"]},
                             executions=[UID])
    info = ExecutionInfo.from_body(body(annotations={TRACEPARENT_ANNOTATION: traceparent}))
    tracer.execution_span(info, phase="Succeeded", started_at="2026-11-27T10:00:01Z",
                          finished_at="2026-11-27T10:00:09Z")
    spans = {s.name: s for s in flushed(tracer, receiver, 2)}
    notification, root = spans["alertmanager notification"], spans["execution restart"]
    assert notification.trace_id == root.trace_id == f"{trace_id:032x}"
    assert root.parent_span_id == notification.span_id == f"{span_id:016x}"
    assert notification.parent_span_id == ""
    assert notification.attributes["runbook.executions"] == ["restart-x1"]
    assert notification.end_ns - notification.start_ns == 20_000_000
    assert tracer.trace_id(UID, info.annotations) == notification.trace_id
