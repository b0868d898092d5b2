"""The Alertmanager webhook receiver: alerts in, RunbookExecutions out.

Served by every operator replica on a port of its own (``--alerts-port``): it keeps
no state of its own, so any replica may take any notification. What it decides
comes from :mod:`runbook_operator.engine.alerts`; this module authenticates,
reads the body within its cap, and carries the decisions out against the API:

- **Start**: create the occurrence's execution. The name is deterministic, so a
  second delivery (``repeat_interval``, a retry, the other member of an HA pair)
  gets 409 AlreadyExists and counts as a duplicate; an execution already in the
  operator's cache is a duplicate without a call. ``cooldown`` is checked against
  the API server's executions of the same alert (by the fingerprint label), not a
  memory this process could lose.
- **Resolve**: with ``onResolved: Cancel`` a queued or running execution of the
  occurrence is asked to cancel (through its status, reason ``AlertResolved``);
  otherwise the resolution goes into its history.

Answers: 200 with counts by outcome; 401 without the right bearer token; 413, 415,
400 or 422 for a body that is too large, not JSON, or not a version 4 payload (each
with a one-line reason, nothing created); 503 only when the Kubernetes API cannot be
reached, so that Alertmanager retries (it retries 5xx, never 4xx).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import StreamReader, web
from kubernetes.client.exceptions import ApiException

from runbook_operator.api.common import EXECUTIONS, GROUP, VERSION
from runbook_operator.engine.alerts import (
    LABEL_FINGERPRINT,
    MAX_BODY_BYTES,
    Decision,
    Invalid,
    Notification,
    PayloadError,
    Resolve,
    Start,
    Tally,
    Unmatched,
    decide,
    execution_manifest,
    in_cooldown,
    parse_notification,
    started_by_alert,
)
from runbook_operator.engine.resolution import resolve, squatted
from runbook_operator.engine.timeutil import parse
from runbook_operator.k8s.client import (
    Clients,
    StillConflicting,
    is_transient,
    patch_status,
    read_object,
    retry_conflicts,
    retrying,
)
from runbook_operator.k8s.store import Store
from runbook_operator.observability.logs import LogThrottle, get_logger
from runbook_operator.observability.metrics import Metrics
from runbook_operator.observability.tracing import (
    TRACEPARENT_ANNOTATION,
    ExecutionTracer,
    format_traceparent,
)
from runbook_operator.triggers.index import TriggerIndex

log = logging.getLogger("runbook_operator.alerts")
decisions_log = get_logger("runbook_operator.alerts")

PLURAL = EXECUTIONS
PATH = "/alerts"


@dataclass
class ReceiverSettings:
    """How the Alertmanager receiver listens and whom it believes."""

    address: str = "0.0.0.0"
    """Where it listens."""
    port: int = 9095
    """Its own port: Alertmanager's ``webhook_configs.url`` points here."""
    token_file: str | None = None
    """A file holding the bearer token (a mounted Secret key); re-read when it changes,
    so a rotated Secret takes effect without a restart. None: the receiver is off."""
    max_body_bytes: int = MAX_BODY_BYTES
    """Larger bodies are refused with 413 before they are read."""
    namespaces: tuple[str, ...] = ()
    """Where Runbooks are read from at start (the operator's watched namespaces; empty:
    the whole cluster)."""


class ApiUnavailable(Exception):
    """The Kubernetes API did not answer (after retries): Alertmanager should retry."""


class TokenFile:
    """The expected bearer token, from a file, re-read when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._token: bytes | None = None

    def current(self) -> bytes | None:
        """The token (stripped of surrounding whitespace), or None if unreadable/empty."""
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime, stat.st_size)
            if stamp != self._stamp:
                with open(self.path, "rb") as handle:
                    token = handle.read(4096).strip()
                self._token, self._stamp = token or None, stamp
        except OSError:
            self._token, self._stamp = None, None
        return self._token

    def accepts(self, header: str | None) -> bool:
        """Whether ``Authorization: <header>`` carries the token (constant-time compare)."""
        expected = self.current()
        if expected is None or not header:
            return False
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(errors="replace"), expected)


@dataclass
class Outcomes:
    """What one notification led to, for the response, the metric and the span."""

    tally: Tally = field(default_factory=Tally)
    created: list[str] = field(default_factory=list)
    """Names of the executions created."""
    uids: list[str] = field(default_factory=list)


class AlertReceiver:
    """Handles Alertmanager's webhook posts; see the module docstring."""

    def __init__(self, clients: Clients, store: Store, index: TriggerIndex, metrics: Metrics,
                 tracer: ExecutionTracer, settings: ReceiverSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clients = clients
        self.store = store
        self.index = index
        self.metrics = metrics
        self.tracer = tracer
        self.settings = settings
        self.clock = clock
        self.token = TokenFile(settings.token_file) if settings.token_file else None
        self.ready = False
        self.unauthorized_lines = LogThrottle()
        self.priming: asyncio.Task[None] | None = None
        """Whether every Runbook has been read once. Until then a notification is
        answered 503 (Alertmanager retries): an alert matched against a half-filled
        index would be answered "unmatched" and lost."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(PATH, self.handle)
        app.router.add_post(PATH + "/{namespace}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        response = await self._handle(request)
        self.metrics.alert_request(response.status, time.perf_counter() - started)
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        if self.token is None or not self.token.accepts(request.headers.get("Authorization")):
            self.metrics.alert_decided("unauthorized")
            held = self.unauthorized_lines.allow(time.monotonic())
            if held is not None:
                log.warning("alert notification refused: missing or wrong bearer token "
                            "(from %s; %d more refused since the last such line)",
                            request.remote, held)
            return _reply(401, "missing or wrong bearer token",
                          headers={"WWW-Authenticate": 'Bearer realm="runbook-operator"'})
        if not self.ready:
            return _reply(503, "the receiver is still reading the Runbooks; retry shortly")
        if request.content_type != "application/json":
            return self._rejected(415, f"content type must be application/json, not "
                                       f"{request.content_type[:60]!r}")
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._rejected(413, f"body larger than {limit} bytes")
        body = await read_capped(request.content, limit)
        if body is None:
            return self._rejected(413, f"body larger than {limit} bytes")
        try:
            notification = parse_notification(body)
        except PayloadError as exc:
            return self._rejected(exc.status, str(exc))
        namespace = request.match_info.get("namespace")
        start_ns = time.time_ns()
        trace_id, span_id, sampled = self.tracer.notification_context()
        traceparent = (format_traceparent(trace_id, span_id, sampled)
                       if self.tracer.enabled else None)
        try:
            outcomes = await asyncio.to_thread(self.carry_out, notification, namespace,
                                               traceparent)
        except ApiUnavailable as exc:
            self._span(notification, trace_id, span_id, start_ns, Outcomes(), str(exc))
            return _reply(503, f"the Kubernetes API is unavailable ({exc}); retry later")
        self._span(notification, trace_id, span_id, start_ns, outcomes, None)
        return web.json_response({"status": "ok", "outcomes": outcomes.tally.counts,
                                  "created": outcomes.created})

    def _rejected(self, status: int, reason: str) -> web.Response:
        self.metrics.alert_decided("rejected")
        log.warning("alert notification rejected (%d): %s", status, reason)
        return _reply(status, reason)

    def prime(self) -> int:
        """Read every Runbook once into the index (blocking); then the receiver is ready.

        The watch fills the index too, but a receiver that answered before the watch's
        first listing completed would call a matching alert unmatched. Returns how
        many Runbooks were read.
        """
        count = 0
        for body in self._list_runbooks():
            self.index.observe(body, listed=True)
            count += 1
        self.ready = True
        return count

    def _list_runbooks(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for namespace in self.settings.namespaces or (None,):
            token = None
            while True:
                page = self._list_page(namespace, token)
                items += page.get("items") or []
                token = (page.get("metadata") or {}).get("continue")
                if not token:
                    break
        return items

    @retrying
    def _list_page(self, namespace: str | None, token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"limit": 500}
        if token:
            kwargs["_continue"] = token
        custom = self.clients.custom
        if namespace is None:
            result = custom.list_cluster_custom_object(GROUP, VERSION, "runbooks", **kwargs)
        else:
            result = custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          "runbooks", **kwargs)
        return dict(result)

    # -- decisions, carried out (in a thread: the kubernetes client blocks) -------------

    def carry_out(self, notification: Notification, namespace: str | None = None,
                  traceparent: str | None = None) -> Outcomes:
        """Decide every alert of ``notification`` and act on the decisions."""
        outcomes = Outcomes()
        for alert in notification.alerts:
            for decision in decide(notification, alert,
                                   self.index.candidates(alert.name, namespace)):
                outcome, detail = self._act(decision, notification, traceparent, outcomes)
                outcomes.tally.add(outcome)
                self.metrics.alert_decided(outcome)
                self._log(decision, outcome, detail)
        return outcomes

    def _act(self, decision: Decision, notification: Notification, traceparent: str | None,
             outcomes: Outcomes) -> tuple[str, str | None]:
        if isinstance(decision, Unmatched):
            return "unmatched", None
        if isinstance(decision, Invalid):
            return "invalid", decision.reason
        namespace = decision.trigger.namespace
        try:
            if isinstance(decision, Start):
                return self._start(decision, notification, traceparent, outcomes)
            return self._resolve(decision)
        except ApiException as exc:
            if is_transient(exc):
                raise ApiUnavailable(f"{exc.status} {exc.reason}") from None
            # 403, 404 (namespace gone), 422 (the schema refused it): final, not retried.
            return "rejected", f"the API server refused it in {namespace}: " \
                               f"{exc.status} {exc.reason}"
        except Exception as exc:
            if is_transient(exc):
                raise ApiUnavailable(type(exc).__name__) from None
            raise

    def _start(self, decision: Start, notification: Notification, traceparent: str | None,
               outcomes: Outcomes) -> tuple[str, str | None]:
        namespace, name = decision.trigger.namespace, decision.name
        cached = self.store.executions.get((namespace, name))
        if cached is not None:
            return self._existing(decision, cached)
        cooldown = decision.trigger.cooldown
        if cooldown is not None:
            earlier = [created for other, created in self._earlier_runs(decision)
                       if other != name]
            if in_cooldown(cooldown, earlier, self.clock()):
                return "cooldown", f"an execution for this alert started less than " \
                                   f"{_human(cooldown.total_seconds())} ago"
        annotations = {TRACEPARENT_ANNOTATION: traceparent} if traceparent else {}
        manifest = execution_manifest(decision, notification, annotations)
        try:
            created = self._create(namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = self.store.executions.get((namespace, name)) or \
                self._read(namespace, name)
            # Gone again between the 409 and the read: it was there, so not created now.
            return self._existing(decision, existing) if existing else ("duplicate", None)
        outcomes.created.append(name)
        uid = (created.get("metadata") or {}).get("uid")
        if uid:
            outcomes.uids.append(uid)
        return "created", None

    def _existing(self, decision: Start, body: Mapping[str, Any]) -> tuple[str, str | None]:
        """An execution of the occurrence's name exists: a duplicate if this alert
        started it, else an object that took the name (see started_by_alert)."""
        alert = decision.alert
        if started_by_alert(body, decision.trigger.runbook, alert.fingerprint,
                            alert.starts_ns):
            return "duplicate", None
        return "rejected", squatted(decision.name, body)

    @retrying
    def _create(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.clients.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest)
        return result

    @retrying
    def _earlier_runs(self, decision: Start) -> list[tuple[str, datetime]]:
        """(name, created) of this runbook's executions for the same alert fingerprint.

        A consistent read (no ``resourceVersion``), not the API server's watch cache:
        from the cache, a run created a moment ago, even by this receiver for the
        previous alert, could be missing, and rapid flaps each started a run inside
        ``cooldown``. Only Starts of triggers with a cooldown, not yet seen, pay it.
        """
        listing = self.clients.custom.list_namespaced_custom_object(
            GROUP, VERSION, decision.trigger.namespace, PLURAL,
            label_selector=f"{LABEL_FINGERPRINT}={decision.alert.fingerprint}")
        found = []
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            created = parse(meta.get("creationTimestamp"))
            # The label is only a selector: a manual run carrying it is no earlier run.
            if created is not None and started_by_alert(item, decision.trigger.runbook,
                                                        decision.alert.fingerprint):
                found.append((str(meta.get("name")), created))
        return found

    def _resolve(self, decision: Resolve) -> tuple[str, str | None]:
        """Carry out :func:`engine.resolution.resolve` on the execution as read now."""
        namespace, name = decision.trigger.namespace, decision.name

        def attempt() -> tuple[str, str | None]:
            body = self._read(namespace, name)
            resolution = resolve(body, decision, self.clock())
            if resolution.patch is not None and body is not None:
                version = body["metadata"]["resourceVersion"] if resolution.guarded else None
                patch_status(self.clients, PLURAL, namespace, name, resolution.patch,
                             resource_version=version)
            return resolution.outcome, resolution.detail

        try:
            return retry_conflicts(attempt, 3, f"execution {namespace}/{name}")
        except StillConflicting as exc:
            raise ApiUnavailable(f"could not record the resolution: {exc}") from None

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The execution as the server has it now (the cache keeps finished ones slim)."""
        return read_object(self.clients, PLURAL, namespace, name)

    # -- telemetry ---------------------------------------------------------------------

    def _log(self, decision: Decision, outcome: str, detail: str | None) -> None:
        alert = decision.alert
        fields: dict[str, Any] = {"outcome": outcome, "fingerprint": alert.fingerprint,
                                  "alertname": alert.name[:200], "alert_status": alert.status,
                                  "starts_at": alert.starts_at[:64]}
        if not isinstance(decision, Unmatched):
            fields.update(namespace=decision.trigger.namespace,
                          runbook=decision.trigger.runbook)
        if isinstance(decision, Start | Resolve):
            fields["execution"] = decision.name
        if detail:
            fields["reason"] = detail
        level = decisions_log.warning if outcome in ("invalid", "rejected") else \
            decisions_log.info
        level("alert decision", **fields)

    def _span(self, notification: Notification, trace_id: int, span_id: int, start_ns: int,
              outcomes: Outcomes, error: str | None) -> None:
        attributes: Mapping[str, Any] = {
            "alertmanager.receiver": notification.receiver[:256],
            "alertmanager.group_key": notification.group_key[:1024],
            "alertmanager.status": notification.status,
            "alertmanager.alerts": len(notification.alerts),
            "runbook.alerts.created": outcomes.tally.counts.get("created", 0),
            "runbook.alerts.duplicate": outcomes.tally.counts.get("duplicate", 0),
            "runbook.executions": list(outcomes.created),
        }
        self.tracer.notification_span(trace_id, span_id, start_ns=start_ns,
                                      end_ns=time.time_ns(), attributes=attributes,
                                      executions=outcomes.uids, error=error)


async def read_capped(stream: StreamReader, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is past ``limit`` bytes.

    One ``read(n)`` returns what has arrived so far (at most ``n``), not the whole
    body: a notification larger than a few TCP segments would be cut short and
    answered "invalid JSON". So read until the end of the body, keeping the cap.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


def _reply(status: int, reason: str, headers: Mapping[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"status": "error", "error": reason}, status=status,
                             headers=headers)


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


async def start_receiver(receiver: AlertReceiver) -> web.AppRunner | None:
    """Listen for Alertmanager, or stay off (and say so) when no token is configured."""
    settings = receiver.settings
    if receiver.token is None:
        log.info("alert receiver off: no --alerts-token-file (it never runs open)")
        return None
    if receiver.token.current() is None:
        log.warning("alert receiver: token file %s is missing or empty; every request "
                    "is refused until it holds a token", settings.token_file)
    runner = web.AppRunner(receiver.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.address, settings.port).start()
    log.info("alert receiver listening on %s:%d%s", settings.address, settings.port, PATH)
    receiver.priming = asyncio.create_task(_prime(receiver), name="alerts-prime")
    return runner


async def _prime(receiver: AlertReceiver) -> None:
    """Read the Runbooks until that works; the receiver answers 503 until then."""
    delay = 0.5
    while True:
        try:
            count = await asyncio.to_thread(receiver.prime)
        except Exception as exc:
            log.warning("alert receiver: could not list Runbooks (%s); again in %.0fs",
                        exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        log.info("alert receiver ready: %d Runbooks read", count)
        return
