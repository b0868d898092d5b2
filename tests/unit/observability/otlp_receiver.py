"""A real OTLP/HTTP trace receiver for tests: what the exporter sends, decoded.

Tracing tests should see spans the way a collector does, after protobuf encoding
and an HTTP round trip, not as SDK objects in memory: that is where IDs, parent
links, timestamps and attribute types either survive or do not. This is an aiohttp
server on 127.0.0.1 (a free port) running in a thread with its own event loop; it
accepts ``POST /v1/traces`` with ``application/x-protobuf`` bodies (aiohttp
undoes a gzip or deflate encoding), decodes ``ExportTraceServiceRequest`` and
keeps every span as a :class:`ReceivedSpan` with hex IDs and plain attributes.

Usage::

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        ...
        spans = receiver.wait_for_spans(3)
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedEvent:
    """One span event as received."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received: IDs as lowercase hex, ``parent_span_id`` empty for a root."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    status_code: int
    status_message: str
    flags: int
    resource: dict[str, Any]
    scope: str

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` of this span (sampled: it was exported)."""
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass
class ReceivedRequest:
    """One export request: its headers and how many spans it held."""

    headers: dict[str, str]
    spans: int = 0


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on 127.0.0.1, served from a background thread."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests: list[ReceivedRequest] = []
        self.rejected = 0
        """Requests refused (wrong path, method or content type, undecodable body)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start serving; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="otlp-receiver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OTLP receiver did not start within 10 s")
        if failure:
            raise RuntimeError("the OTLP receiver did not start") from failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """The base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``; the exporter adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.port}"

    # -- reading -----------------------------------------------------------------------

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """At least ``count`` spans received (all of them), or AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.spans)} spans received, {count} expected: {self.spans}")
                self._changed.wait(left)
            return list(self.spans)

    def by_name(self) -> dict[str, ReceivedSpan]:
        """Spans received so far by name (the last one wins)."""
        with self._lock:
            return {s.name: s for s in self.spans}

    # -- serving ------------------------------------------------------------------------

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            self._reject()
            return web.Response(status=415, text=f"expected {PROTOBUF}")
        body = await request.read()  # aiohttp has undone any gzip or deflate encoding
        try:
            message = ExportTraceServiceRequest()
            message.ParseFromString(body)
        except Exception as exc:
            self._reject()
            return web.Response(status=400, text=f"undecodable body: {exc}")
        spans = _decode(message)
        with self._changed:
            self.requests.append(ReceivedRequest(dict(request.headers), len(spans)))
            self.spans.extend(spans)
            self._changed.notify_all()
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type=PROTOBUF)

    def _reject(self) -> None:
        with self._lock:
            self.rejected += 1


def _decode(message: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    name=span.name,
                    kind=int(span.kind),
                    start_ns=int(span.start_time_unix_nano),
                    end_ns=int(span.end_time_unix_nano),
                    attributes=_attributes(span.attributes),
                    events=[ReceivedEvent(e.name, int(e.time_unix_nano),
                                          _attributes(e.attributes)) for e in span.events],
                    status_code=int(span.status.code),
                    status_message=span.status.message,
                    flags=int(span.flags),
                    resource=resource,
                    scope=scope_spans.scope.name,
                ))
    return out


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)
