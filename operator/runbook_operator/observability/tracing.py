"""Traces of executions, rebuilt from what the cluster records, exported over OTLP.

An execution outlives the process that runs it: the operator may restart between a
step's Job being created and it finishing, and the next process only has the
execution's status to go on. So spans are not opened and closed around live code.
Each one is built, finished, from observed state when the thing it describes has
ended (an attempt when its Job finished, the root when the execution did) and handed
to the OTLP exporter in one piece.

That only yields one consistent trace if every process derives the same IDs, so
they are hashes, not random numbers:

* trace ID: from the ``runbooks.dev/traceparent`` annotation (the execution joins
  the caller's trace), else from the execution's uid;
* root span ID: from (uid, ``"execution"``); its parent is the annotation's span;
* attempt span ID: from (uid, step, attempt). It is known before the attempt runs,
  so the step's container gets it as ``TRACEPARENT`` and its own spans nest under it.

Times come from the status timestamps, never from the clock, and the sampling
decision is a function of the trace ID (and the annotation's sampled flag), so two
processes agree on it too. Attribute values, event attributes and status messages
go through the process' redactor, :data:`~runbook_operator.observability.secrets.SECRETS`.

Configured from the standard ``OTEL_*`` variables, read by the SDK itself: the OTLP
exporter takes the endpoint, headers, timeout, compression and certificates, the
SDK's ``TracerProvider`` the sampler and the resource (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``). Without an endpoint, or with ``OTEL_SDK_DISABLED=true``,
the tracer is off: same API, IDs still computed (so ``status.traceID`` and log
correlation work), nothing built, no exporter, no thread.

Usage::

    tracer = configure_tracing()
    info = ExecutionInfo.from_body(body)
    status.trace_id = tracer.trace_id(info.uid, info.annotations)
    env["TRACEPARENT"] = tracer.traceparent(info.uid, info.annotations, "drain", 1)
    tracer.step_span(info, "drain", 1, phase="Succeeded", started_at=..., finished_at=...)
    tracer.execution_span(info, phase="Succeeded", started_at=..., finished_at=...)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from runbook_operator.engine.severity import severity_of
from runbook_operator.engine.timeutil import parse
from runbook_operator.observability.secrets import SECRETS

__all__ = [
    "TRACEPARENT_ANNOTATION",
    "ExecutionInfo",
    "ExecutionTracer",
    "SpanEvent",
    "approval_event",
    "circuit_rejection_event",
    "configure_tracing",
    "format_traceparent",
]

log = logging.getLogger(__name__)

TRACEPARENT_ANNOTATION = "runbooks.dev/traceparent"
"""An execution created with this annotation (a W3C ``traceparent``) joins that trace."""

SERVICE_NAME = "runbook-operator"
"""``service.name`` when ``OTEL_SERVICE_NAME`` is not set."""

MAX_PENDING_EVENTS = 64
"""Root-span events (restarts) kept in memory per execution until its root is emitted."""

MAX_PENDING_EXECUTIONS = 10_000
"""Executions with pending root-span events; beyond this the oldest are forgotten."""

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAILED = frozenset({"Failed", "Retrying"})
_SCOPE = InstrumentationScope("runbook_operator.observability.tracing")


@dataclass(frozen=True)
class ExecutionInfo:
    """Who an execution is: what names its trace and labels every one of its spans."""

    uid: str
    """``metadata.uid``: the seed of the trace and span IDs."""
    name: str
    """``metadata.name``."""
    namespace: str
    """``metadata.namespace``."""
    runbook: str
    """``spec.runbookRef.name``."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """``metadata.annotations``; only :data:`TRACEPARENT_ANNOTATION` is read."""
    severity: str | None = None
    """By :func:`~runbook_operator.engine.severity.severity_of`."""
    trigger: str = "Manual"
    """``spec.triggeredBy.kind``."""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ExecutionInfo:
        """From a RunbookExecution as read from the cluster (missing parts are empty)."""
        meta, spec = _part(body, "metadata"), _part(body, "spec")
        triggered = _part(spec, "triggeredBy")
        severity = severity_of(spec)
        annotations = {k: v for k, v in _part(meta, "annotations").items()
                       if isinstance(k, str) and isinstance(v, str)}
        return cls(
            uid=str(meta.get("uid") or ""),
            name=str(meta.get("name") or ""),
            namespace=str(meta.get("namespace") or ""),
            runbook=str(_part(spec, "runbookRef").get("name") or ""),
            annotations=annotations,
            severity=severity if isinstance(severity, str) else None,
            trigger=str(triggered.get("kind") or "Manual"),
        )


@dataclass(frozen=True)
class SpanEvent:
    """Something that happened at one moment of a span."""

    name: str
    """What happened, e.g. ``circuit.rejected``."""
    time: str | None
    """When: an RFC 3339 status timestamp; None puts it at the span's end."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Details (redacted on the way out; None values are dropped)."""


def approval_event(time: str | None, decision: str, by: str | None = None,
                   comment: str | None = None) -> SpanEvent:
    """An approval decision (``Approve``/``Reject``), for the approval step's span."""
    return SpanEvent("approval", time, {"runbook.approval.decision": decision,
                                        "runbook.approval.by": by,
                                        "runbook.approval.comment": comment})


def circuit_rejection_event(time: str | None, policy: str, key: str,
                            state: str | None = None, reason: str | None = None) -> SpanEvent:
    """A circuit breaker refused the step's call (its circuit was ``state``; ``reason``
    is the breaker's own words, e.g. "ai: circuit default is Open until ...")."""
    return SpanEvent("circuit.rejected", time, {"runbook.circuit.policy": policy,
                                                "runbook.circuit.key": key,
                                                "runbook.circuit.state": state,
                                                "runbook.circuit.reason": reason})


class ExecutionTracer:
    """Builds one execution's spans from its status and exports them; thread-safe.

    Off (``enabled`` is False) when built without a processor: every
    method still works, only nothing is exported.
    """

    def __init__(self, processor: SpanProcessor | None = None, *,
                 sampler: Sampler | None = None, resource: Resource | None = None) -> None:
        """``processor``: where finished spans go (None: tracing off); ``sampler`` and
        ``resource``: the SDK's, as :func:`configure_tracing` reads them from the
        environment (default: parent-based always-on, ``service.name`` only)."""
        self._processor = processor
        self._sampler = sampler or ParentBased(ALWAYS_ON)
        self._resource = resource or Resource({"service.name": SERVICE_NAME})
        self._lock = threading.Lock()
        self._pending: dict[str, list[SpanEvent]] = {}
        self._closed = False

    @property
    def enabled(self) -> bool:
        """Whether spans are exported."""
        return self._processor is not None and not self._closed

    # -- identities ------------------------------------------------------------------

    def trace_id(self, uid: str, annotations: Mapping[str, str] | None = None) -> str:
        """The execution's trace ID, 32 lowercase hex digits (for ``status.traceID``)."""
        return _hex32(self._ids(uid, annotations)[0])

    def traceparent(self, uid: str, annotations: Mapping[str, str] | None, step: str,
                    attempt: int) -> str:
        """The W3C ``traceparent`` of an attempt's span, for the container's ``TRACEPARENT``.

        Its sampled flag says whether this span is exported (always ``00`` when off).
        """
        trace_id, parent = self._ids(uid, annotations)
        flags = "01" if self._sampled(trace_id, parent) else "00"
        return f"00-{_hex32(trace_id)}-{_hex16(_attempt_span_id(uid, step, attempt))}-{flags}"

    # -- spans -------------------------------------------------------------------------

    def step_span(self, info: ExecutionInfo, step: str, attempt: int, *, phase: str,
                  started_at: str | None, finished_at: str | None, job: str | None = None,
                  exit_code: int | None = None, reason: str | None = None,
                  message: str | None = None, circuit: str | None = None,
                  next_attempt_at: str | None = None, events: Sequence[SpanEvent] = (),
                  attributes: Mapping[str, Any] | None = None) -> str | None:
        """Export the finished span of one attempt (once, when the attempt has ended).

        ``phase``: the step's phase after the attempt: ``Succeeded``, ``Failed``,
        ``Retrying`` (this attempt failed, another follows: a ``step.retry`` event is
        added at ``finished_at``) or ``Skipped``. ``Failed`` and ``Retrying`` make the
        span's status ERROR with ``message`` (else ``reason``) as its description.
        ``circuit``: the circuit breaker's decision for the attempt, if one was asked.
        Returns the span's ``traceparent``, or None when nothing was exported
        (tracing off, trace not sampled, or no timestamp at all).
        """
        if not self.enabled:
            return None
        trace_id, parent = self._ids(info.uid, info.annotations)
        if not self._sampled(trace_id, parent):
            return None
        span_events = list(events)
        if phase == "Retrying":
            span_events.append(SpanEvent("step.retry", finished_at, {
                "runbook.step.next_attempt": attempt + 1,
                "runbook.step.next_attempt_at": next_attempt_at,
                "runbook.step.reason": reason}))
        attrs = {**_base_attributes(info),
                 "runbook.step.name": step,
                 "runbook.step.attempt": attempt,
                 "runbook.step.phase": phase,
                 "runbook.step.outcome": _outcome(phase),
                 "runbook.step.reason": reason,
                 "k8s.job.name": job,
                 "process.exit.code": exit_code,
                 "runbook.circuit.decision": circuit,
                 **(attributes or {})}
        error = phase in _FAILED
        return self._emit(
            name=f"step {step}", trace_id=trace_id,
            span_id=_attempt_span_id(info.uid, step, attempt),
            parent=SpanContext(trace_id, _root_span_id(info.uid), is_remote=False,
                               trace_flags=TraceFlags(TraceFlags.SAMPLED)),
            kind=SpanKind.INTERNAL, started_at=started_at, finished_at=finished_at,
            attributes=attrs, events=span_events,
            status=_status(error=error, ok=phase == "Succeeded", description=message or reason))

    def execution_span(self, info: ExecutionInfo, *, phase: str, started_at: str | None,
                       finished_at: str | None, reason: str | None = None,
                       message: str | None = None, events: Sequence[SpanEvent] = (),
                       attributes: Mapping[str, Any] | None = None) -> str | None:
        """Export the root span ``execution <runbook>`` (once, when the execution finished).

        Carries ``events`` and the restarts noted by :meth:`note_restart`. ``Failed``
        makes its status ERROR. Returns its ``traceparent``, or None when nothing was
        exported.
        """
        with self._lock:
            pending = self._pending.pop(info.uid, [])
        if not self.enabled:
            return None
        trace_id, parent = self._ids(info.uid, info.annotations)
        if not self._sampled(trace_id, parent):
            return None
        remote = None
        if parent is not None:
            remote = SpanContext(trace_id, parent[0], is_remote=True,
                                 trace_flags=TraceFlags(parent[1]))
        attrs = {**_base_attributes(info),
                 "runbook.severity": info.severity,
                 "runbook.trigger.kind": info.trigger,
                 "runbook.execution.phase": phase,
                 "runbook.execution.reason": reason,
                 **(attributes or {})}
        return self._emit(
            name=f"execution {info.runbook}", trace_id=trace_id,
            span_id=_root_span_id(info.uid), parent=remote,
            kind=SpanKind.CONSUMER if remote is not None else SpanKind.INTERNAL,
            started_at=started_at, finished_at=finished_at, attributes=attrs,
            events=[*pending, *events],
            status=_status(error=phase == "Failed", ok=phase == "Succeeded",
                           description=message or reason))

    def notification_context(self) -> tuple[int, int, bool]:
        """A fresh (trace ID, span ID, sampled) for one incoming alert notification."""
        trace_id = _nonzero(int.from_bytes(os.urandom(16), "big"))
        span_id = _nonzero(int.from_bytes(os.urandom(8), "big"))
        return trace_id, span_id, self._sampled(trace_id, None)

    def notification_span(self, trace_id: int, span_id: int, *, start_ns: int, end_ns: int,
                          attributes: Mapping[str, Any], executions: Sequence[str],
                          error: str | None = None) -> None:
        """Export the span of one Alertmanager notification (kind SERVER).

        ``executions``: uids of the executions it created; the span links to their
        root spans (which are its children: they were created with its traceparent).
        """
        if not self.enabled or not self._sampled(trace_id, None):
            return
        flags = TraceFlags(TraceFlags.SAMPLED)
        span = ReadableSpan(
            name="alertmanager notification",
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags),
            parent=None, resource=self._resource, attributes=_attributes(attributes),
            links=[Link(SpanContext(trace_id, _root_span_id(uid), is_remote=False,
                                    trace_flags=flags)) for uid in executions],
            kind=SpanKind.SERVER, status=_status(error=error is not None, ok=False,
                                                 description=error),
            start_time=start_ns, end_time=max(start_ns, end_ns), instrumentation_scope=_SCOPE)
        processor = self._processor
        if processor is None or self._closed:
            return
        try:
            processor.on_end(span)
        except Exception:  # tracing must never break the receiver
            log.exception("notification span could not be queued for export")

    def note_restart(self, uid: str, time: str) -> None:
        """This process took over the running execution ``uid`` at ``time`` (RFC 3339).

        Becomes an ``operator.restart`` event of the root span. Held in memory until
        :meth:`execution_span`: a note is lost if this process dies first too.
        """
        if not self.enabled:
            return
        with self._lock:
            events = self._pending.setdefault(uid, [])
            if len(events) < MAX_PENDING_EVENTS:
                events.append(SpanEvent("operator.restart", time))
            while len(self._pending) > MAX_PENDING_EXECUTIONS:
                del self._pending[next(iter(self._pending))]

    # -- lifecycle -----------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued now; False if that did not finish in time. Blocks."""
        if self._processor is None or self._closed:
            return True
        return bool(self._processor.force_flush(timeout_millis))

    def shutdown(self) -> None:
        """Flush and stop the exporter (idempotent); later spans are dropped. Blocks."""
        if self._processor is None or self._closed:
            return
        self._closed = True
        self._processor.shutdown()

    # -- internals -----------------------------------------------------------------------

    def _ids(self, uid: str, annotations: Mapping[str, str] | None
             ) -> tuple[int, tuple[int, int] | None]:
        """The trace ID and the remote parent (span ID, flags) from the annotation."""
        parsed = _parse_traceparent((annotations or {}).get(TRACEPARENT_ANNOTATION))
        if parsed is not None:
            trace_id, span_id, flags = parsed
            return trace_id, (span_id, flags)
        return _nonzero(_hash(16, "trace", uid)), None

    def _sampled(self, trace_id: int, parent: tuple[int, int] | None) -> bool:
        """The SDK sampler's decision: a function of the trace ID and the parent's flag."""
        if not self.enabled:
            return False
        context = None
        if parent is not None:
            remote = SpanContext(trace_id, parent[0], is_remote=True,
                                 trace_flags=TraceFlags(parent[1]))
            context = set_span_in_context(NonRecordingSpan(remote))
        result = self._sampler.should_sample(context, trace_id, "execution")
        return result.decision is Decision.RECORD_AND_SAMPLE

    def _emit(self, *, name: str, trace_id: int, span_id: int, parent: SpanContext | None,
              kind: SpanKind, started_at: str | None, finished_at: str | None,
              attributes: Mapping[str, Any], events: Sequence[SpanEvent],
              status: Status) -> str | None:
        start, end = _ns(started_at), _ns(finished_at)
        if start is None and end is None:
            log.warning("span %r not exported: no start or end time", name)
            return None
        start = start if start is not None else end
        end = end if end is not None and start is not None and end >= start else start
        context = SpanContext(trace_id, span_id, is_remote=False,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
        span = ReadableSpan(
            name=name, context=context, parent=parent, resource=self._resource,
            attributes=_attributes(attributes),
            events=[Event(e.name, _attributes(e.attributes), _ns(e.time) or end)
                    for e in events],
            kind=kind, status=status, start_time=start, end_time=end,
            instrumentation_scope=_SCOPE,
        )
        processor = self._processor
        if processor is None or self._closed:
            return None
        try:
            processor.on_end(span)
        except Exception:  # tracing must never break a reconcile pass
            log.exception("span %r could not be queued for export", name)
            return None
        return f"00-{_hex32(trace_id)}-{_hex16(span_id)}-01"


def configure_tracing() -> ExecutionTracer:
    """The process's tracer, from the ``OTEL_*`` variables; off without an endpoint.

    The SDK reads them: the exporter its endpoint, headers, timeout, compression and
    certificates; a ``TracerProvider`` (never installed globally, only asked) the
    sampler and the resource. Only the decision to export at all is made here: no
    endpoint means off (the SDK would default to a collector on localhost).
    """
    env = os.environ
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    endpoint = (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
                or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
    if disabled or not endpoint:
        log.info("tracing off (%s)", "OTEL_SDK_DISABLED" if disabled
                 else "no OTEL_EXPORTER_OTLP_ENDPOINT")
        return ExecutionTracer()
    # Imported here so a process with tracing off never loads the exporter's dependencies.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    resource = provider.resource
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    tracer = ExecutionTracer(BatchSpanProcessor(OTLPSpanExporter()),
                             sampler=provider.sampler, resource=resource)
    log.info("tracing on: spans go to %s (sampler %s)", SECRETS.value(endpoint),
             provider.sampler.get_description())
    return tracer


# -- helpers -------------------------------------------------------------------------------


def _parse_traceparent(value: object) -> tuple[int, int, int] | None:
    """(trace ID, span ID, flags) of a W3C version-00 ``traceparent``; None if malformed."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(match.group(3), 16)


def format_traceparent(trace_id: int, span_id: int, sampled: bool) -> str:
    """A W3C version-00 ``traceparent``."""
    return f"00-{_hex32(trace_id)}-{_hex16(span_id)}-{'01' if sampled else '00'}"


def _hash(size: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(("runbook-operator", *parts)).encode()).digest()
    return int.from_bytes(digest[:size], "big")


def _nonzero(value: int) -> int:
    return value or 1


def _root_span_id(uid: str) -> int:
    return _nonzero(_hash(8, "span", uid, "execution"))


def _attempt_span_id(uid: str, step: str, attempt: int) -> int:
    return _nonzero(_hash(8, "span", uid, step, str(attempt)))


def _hex32(value: int) -> str:
    return f"{value:032x}"


def _hex16(value: int) -> str:
    return f"{value:016x}"


def _ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp; None if absent or malformed."""
    moment = parse(text) if isinstance(text, str) else None
    if moment is None:
        return None
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _base_attributes(info: ExecutionInfo) -> dict[str, Any]:
    return {"runbook.name": info.runbook, "runbook.execution.name": info.name,
            "runbook.execution.uid": info.uid, "k8s.namespace.name": info.namespace}


def _attributes(values: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """Redacted, None dropped, anything that is not an attribute value made a string."""
    safe = SECRETS.value(dict(values))
    out: dict[str, AttributeValue] = {}
    for key, value in (safe.items() if isinstance(safe, dict) else ()):
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[key] = [str(v) for v in value]
        else:
            out[key] = str(SECRETS.value(repr(value)))
    return out


def _status(*, error: bool, ok: bool, description: str | None) -> Status:
    if error:
        text = SECRETS.value(description) if description else None
        return Status(StatusCode.ERROR, text if isinstance(text, str) else None)
    return Status(StatusCode.OK) if ok else Status(StatusCode.UNSET)


def _outcome(phase: str) -> str:
    if phase == "Succeeded":
        return "success"
    if phase in _FAILED:
        return "failure"
    return phase.lower()


def _part(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name) if isinstance(body, Mapping) else None
    return value if isinstance(value, Mapping) else {}
