"""Delivering notifications: durably, at least once, never in the execution's way.

The execution handler hands every execution body it sees to :meth:`Notifier.observe`,
which asks :func:`engine.notify.owed` what the execution owes and starts an asyncio
task for each delivery not yet Delivered or Failed and not already running here.
Nothing is sent on the reconcile path, and a failed notification changes nothing
about the execution.

Durability lives in the execution's ``status.notifications``: a delivery is recorded
Pending (with its attempts) after each failed attempt, and Delivered or Failed at
the end, with an entry in the history. After a restart
the same deliveries are owed again (same idempotency keys); those recorded Delivered
or Failed are skipped, the others resume with their attempt count. A crash between
a successful request and its record sends once more with the same key: at least
once, deduplicated by the receiver.

Storms: when many runs of one runbook finish together, Slack gets the first
``summarizeAfter`` end-of-run messages one by one and then one summary per
``summaryWindow`` (PagerDuty and webhooks stay per execution).

Retries (tenacity): 5xx, 429 (waiting ``Retry-After``), timeouts and connection
errors, with exponential backoff and jitter; any other 4xx is final. Only the
request holds one of the ``concurrency`` slots, never the wait between attempts, so
a receiver that hangs or asks to wait cannot hold back the deliveries to others.
A delivery stopped by something other than its receiver (the API server down while
a Secret is read or a record written) is picked up again after ``resume_after``
seconds from a fresh read of the execution, not left until the execution's next
event (a finished execution may have none).

Credentials come from the Secrets the Runbook names, read one by one with ``get``
(the chart may limit that to the names it is given), cached briefly, and taught to
the process redactor so they never reach logs, Events, status or spans. A URL
from a Secret is checked before any request (:func:`engine.notify.url_problem`:
http(s) only, no link-local, metadata, unspecified or multicast address), and
again once its host name is resolved (:class:`GuardedResolver`), so neither a
typo nor a hostile Secret sends the operator to the cloud metadata service.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from runbook_operator.api.common import EXECUTIONS
from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.engine.history import appended
from runbook_operator.engine.notify import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    StormWindow,
    classify,
    context_of,
    encode,
    expired,
    owed,
    pagerduty_payload,
    retry_after,
    signature,
    slack_payload,
    slack_summary_payload,
    storm_decision,
    summarize_after,
    summary_key,
    summary_window,
    url_problem,
    webhook_payload,
)
from runbook_operator.engine.timeutil import fmt
from runbook_operator.k8s.client import (
    Clients,
    NotLeading,
    is_transient,
    patch_status,
    read_object,
    retry_conflicts,
    retrying,
)
from runbook_operator.k8s.events import EventPoster
from runbook_operator.notify.transport import Refused, Request, Transport
from runbook_operator.observability.metrics import Metrics
from runbook_operator.observability.secrets import SECRETS

log = logging.getLogger("runbook_operator.notify")

PLURAL = EXECUTIONS
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
FINISHED_KEPT = 10_000
END_EVENTS = FINISHED_EXECUTION_PHASES
"""Events a storm summary may take in (Slack only; PagerDuty stays per incident)."""


@dataclass
class NotifierSettings:
    """How deliveries are attempted."""

    timeout: float = 10.0
    """Seconds one request may take (connect, send, answer) before it counts as failed."""
    max_attempts: int = 6
    """Attempts per delivery, across restarts; then it is Failed."""
    backoff_initial: float = 1.0
    """Seconds before the first retry; doubled each time, plus jitter."""
    backoff_max: float = 60.0
    """Longest wait between attempts (also the cap on ``Retry-After``)."""
    jitter: float = 1.0
    """Up to this many seconds added at random to each wait."""
    concurrency: int = 16
    """Requests in flight at once (the others wait their turn; waits between attempts
    hold no slot)."""
    resume_after: float = 30.0
    """Seconds before a delivery stopped by an internal error (the API server down)
    is tried again from a fresh read of its execution."""
    secret_ttl: float = 30.0
    """Seconds a Secret's value is reused before it is read again (rotation)."""
    pagerduty_url: str = field(
        default_factory=lambda: os.environ.get("RUNBOOK_PAGERDUTY_URL") or PAGERDUTY_URL)
    """The Events API v2 endpoint; ``$RUNBOOK_PAGERDUTY_URL`` overrides it (a proxy,
    PagerDuty's EU endpoint, or a test's local server)."""


@dataclass
class _Storm:
    """One window of one runbook's Slack end-of-run messages."""

    started: float
    """``time.monotonic()`` when the window opened."""
    sent: int = 0
    """Messages sent one by one in this window."""
    held: list[tuple[dict[str, Any], Delivery]] = field(default_factory=list)
    """Deliveries waiting for the window's summary."""


class Retryable(Exception):
    """An attempt worth repeating: 5xx, 429, a timeout or a dropped connection."""

    def __init__(self, error: str, wait: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.wait = wait
        """Seconds the receiver asked for (``Retry-After``), if it did."""


class SecretProblem(Exception):
    """A Secret or key the notification names cannot be read: final, nothing sent."""


class Notifier:
    """Owns the delivery tasks of one operator process; see the module docstring."""

    def __init__(self, clients: Clients, metrics: Metrics, events: EventPoster,
                 settings: NotifierSettings | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 may_act: Callable[[], bool] = lambda: True) -> None:
        self.clients = clients
        self.may_act = may_act
        """Asked before every request (the leader's fence: ``LeaderElector.may_act``)."""
        self.metrics = metrics
        self.events = events
        self.settings = settings or NotifierSettings()
        self.clock = clock
        self._active: set[str] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()
        """Keys finished by this process, until the watch shows their final records
        (an older event must not send them again); bounded."""
        self._first_seen: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._secrets: dict[tuple[str, str], tuple[float, Mapping[str, str]]] = {}
        self.transport = Transport(self.settings.timeout, self.settings.concurrency,
                                   may_act)
        self._storms: dict[tuple[str, str, int], _Storm] = {}
        self._resuming: set[tuple[str, str]] = set()

    # -- intake (in the event loop, cheap) ---------------------------------------------

    def observe(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """Start a task for every delivery this execution owes that is not under way."""
        try:
            self._observe(body, deleted)
        except Exception:  # a notification never gets in the execution's way
            log.exception("notifications of an execution could not be planned")

    def _observe(self, body: Mapping[str, Any], deleted: bool) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        if deleted:
            self._first_seen.pop(uid, None)
            return
        status = body.get("status") or {}
        frozen = status.get("runbookSpec") or {}
        entries = frozen.get("notifications") if isinstance(frozen, Mapping) else None
        if not uid or not entries:
            return
        now = self.clock()
        first_seen = self._first_seen.setdefault(uid, now)
        done = {r.get("id") for r in status.get("notifications") or []
                if r.get("state") in ("Delivered", "Failed")}
        attempts = {r.get("id"): int(r.get("attempts") or 0)
                    for r in status.get("notifications") or []}
        pending = {r.get("id") for r in status.get("notifications") or []
                   if r.get("state") == "Pending"}
        for delivery in expired(uid, entries, status, frozen, now, first_seen):
            # Attempted before an outage, too old to send now: closed, not left Pending.
            if delivery.key in pending and delivery.key not in self._active and \
                    delivery.key not in self._finished:
                self._active.add(delivery.key)
                self._start(self._run(dict(body), delivery, attempts.get(delivery.key, 0),
                                      expire=True), delivery.key)
        for delivery in owed(uid, entries, status, frozen, now, first_seen):
            if delivery.key in done or delivery.key in self._active or \
                    delivery.key in self._finished:
                continue
            self._active.add(delivery.key)
            if self._hold(body, delivery):
                continue  # part of a storm: sent in the window's summary
            self._start(self._run(dict(body), delivery, attempts.get(delivery.key, 0)),
                        delivery.key)

    def _start(self, work: Coroutine[Any, Any, None], key: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"notify-{key[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hold(self, body: Mapping[str, Any], delivery: Delivery) -> bool:
        """Whether a Slack end-of-run message waits for its storm's summary.

        Per (namespace, runbook, notification entry) and window: the first
        ``summarizeAfter`` messages go out one by one, the rest as one summary when
        the window ends. Held deliveries are recorded only once the summary is sent,
        so after a restart they are owed again (at least once).
        """
        if delivery.channel != "slack" or delivery.event not in END_EVENTS:
            return False
        entry = body["status"]["runbookSpec"]["notifications"][delivery.entry]["slack"]
        window = summary_window(entry.get("summaryWindow"))
        meta = body["metadata"]
        group = (str(meta.get("namespace")), str(((body.get("spec") or {}).get("runbookRef")
                                                  or {}).get("name")), delivery.entry)
        now = time.monotonic()
        storm = self._storms.get(group)
        decided, hold = storm_decision(
            StormWindow(storm.started, storm.sent, bool(storm.held)) if storm else None,
            now, summarize_after(entry), window)
        if storm is None or decided.started != storm.started:
            storm = self._storms[group] = _Storm(decided.started)
        storm.sent = decided.sent
        if not hold:
            return False
        storm.held.append((dict(body), delivery))
        if len(storm.held) == 1:
            task = asyncio.get_running_loop().create_task(
                self._summarize(group, max(0.0, storm.started + window - now)),
                name=f"notify-summary-{group[1][:20]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def _summarize(self, group: tuple[str, str, int], delay: float) -> None:
        await asyncio.sleep(delay)
        storm = self._storms.pop(group, None)  # the next message opens a new window
        if storm is None or not storm.held:
            return
        held = storm.held
        stopped = False
        try:
            await self._deliver_summary(held)
        except Exception:
            stopped = True
            log.exception("storm summary of %s/%s stopped; its messages are owed again",
                          group[0], group[1])
        finally:
            for _, delivery in held:
                self._active.discard(delivery.key)
        if stopped:
            for item, _ in held:
                self._resume_later(item)

    async def _deliver_summary(self, held: list[tuple[dict[str, Any], Delivery]]) -> None:
        body, first = held[0]
        error: str | None
        attempts = 0
        try:
            request = await asyncio.to_thread(self._summary_request, held)
        except SecretProblem as exc:
            state, error = "Failed", str(exc)
        else:
            attempts, state, error = await self._send(body, first, request, 0)
        for item, delivery in held:
            await asyncio.to_thread(self._record, item, delivery, state, attempts, error, True)
            self._finished[delivery.key] = None
            self.metrics.notification("slack", delivery.event,
                                      "delivered" if state == "Delivered" else "failed")
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        meta = body["metadata"]
        if state == "Failed":
            self.events.post(body, "NotificationFailed",
                             f"slack summary of {len(held)} runs failed after {attempts} "
                             f"attempt(s): {error}", warning=True)
        log.info("slack summary of %d runs of %s/%s: %s (%d attempt(s))", len(held),
                 meta.get("namespace"),
                 ((body.get("spec") or {}).get("runbookRef") or {}).get("name"),
                 state, attempts)

    def _summary_request(self, held: list[tuple[dict[str, Any], Delivery]]) -> Request:
        body, first = held[0]
        namespace = str(body["metadata"]["namespace"])
        entry = body["status"]["runbookSpec"]["notifications"][first.entry]["slack"]
        url = self._secret(namespace, entry["webhookSecretRef"])
        key = summary_key([d.key for _, d in held])
        contexts = [context_of(item, d, SECRETS.text) for item, d in held]
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key,
                   "User-Agent": "runbook-operator"}
        return Request(url, encode(slack_summary_payload(contexts, key)), headers)

    async def drain(self, timeout: float = 5.0) -> None:
        """Let running deliveries finish (a graceful stop); the rest resume after restart."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        await self.transport.close()

    # -- one delivery ------------------------------------------------------------------

    async def _run(self, body: dict[str, Any], delivery: Delivery, attempts: int,
                   expire: bool = False) -> None:
        stopped = False
        try:
            await self._deliver(body, delivery, attempts, expire)
        except NotLeading:
            pass  # the leader now owes it, from the status this replica wrote last
        except Exception:
            stopped = True
            log.exception("notification %s of %s/%s stopped; tried again in %gs",
                          delivery.key, body["metadata"].get("namespace"),
                          body["metadata"].get("name"), self.settings.resume_after)
        finally:
            self._active.discard(delivery.key)
        if stopped:
            self._resume_later(body)

    def _resume_later(self, body: Mapping[str, Any]) -> None:
        """Observe the execution again, freshly read, after ``resume_after`` seconds."""
        meta = body["metadata"]
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if key in self._resuming:
            return
        self._resuming.add(key)

        async def later() -> None:
            try:
                await asyncio.sleep(self.settings.resume_after)
                current = await asyncio.to_thread(read_object, self.clients, PLURAL, *key)
            except Exception as exc:
                log.warning("execution %s/%s not readable (%s); notifications tried again "
                            "in %gs", *key, type(exc).__name__, self.settings.resume_after)
                self._resuming.discard(key)
                self._resume_later(body)
                return
            self._resuming.discard(key)
            if current is not None and \
                    (current.get("metadata") or {}).get("uid") == meta.get("uid"):
                self.observe(current)

        task = asyncio.get_running_loop().create_task(later(), name=f"notify-resume-{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: dict[str, Any], delivery: Delivery, attempts: int,
                       expire: bool = False) -> None:
        meta = body["metadata"]
        # No record before the first attempt: what is owed is recomputed from the
        # status after a restart anyway, and skipping it halves the API calls and the
        # latency (bench/schedules_notify.py). Failed attempts are recorded (Pending).
        error: str | None
        if expire:
            state, error = "Failed", "expired: over an hour old when the operator came back"
        else:
            try:
                request = await asyncio.to_thread(self._request, body, delivery)
            except SecretProblem as exc:
                state, error = "Failed", str(exc)
            else:
                attempts, state, error = await self._send(body, delivery, request, attempts)
        await asyncio.to_thread(self._record, body, delivery, state, attempts, error, True)
        self._finished[delivery.key] = None
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        outcome = "delivered" if state == "Delivered" else "failed"
        self.metrics.notification(delivery.channel, delivery.event, outcome)
        what = f"{delivery.channel} notification of {delivery.event}" + (
            f" ({delivery.subject})" if delivery.subject else "")
        if state == "Failed":
            self.events.post(body, "NotificationFailed",
                             f"{what} failed after {attempts} attempt(s): {error}",
                             warning=True)
            log.warning("%s for %s/%s failed after %d attempt(s): %s", what,
                        meta.get("namespace"), meta.get("name"), attempts, error)
        else:
            log.info("%s for %s/%s delivered (%d attempt(s))", what, meta.get("namespace"),
                     meta.get("name"), attempts)

    async def _send(self, body: dict[str, Any], delivery: Delivery, request: Request,
                    attempts: int) -> tuple[int, str, str | None]:
        """Attempt until delivered, final, or out of attempts: (attempts, state, error)."""
        problem = url_problem(request.url)
        if problem is not None:
            return attempts, "Failed", problem  # nothing sent: no attempt
        left = self.settings.max_attempts - attempts
        if left <= 0:
            return attempts, "Failed", "no attempts left"
        exponential = wait_exponential_jitter(multiplier=self.settings.backoff_initial,
                                              max=self.settings.backoff_max,
                                              jitter=self.settings.jitter)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, Retryable) and exc.wait is not None:
                return exc.wait
            return float(exponential(state))

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(left), wait=wait,
                                               retry=retry_if_exception_type(Retryable),
                                               reraise=True):
                with attempt:
                    attempts += 1
                    try:
                        status, header = await self.transport.post(request)
                    except Refused as exc:
                        return attempts, "Failed", str(exc)
                    verdict = classify(status)
                    if verdict == "delivered":
                        return attempts, "Delivered", None
                    if verdict == "final":
                        return attempts, "Failed", f"HTTP {status} (not retried)"
                    error = f"HTTP {status}" if status is not None else header or "no answer"
                    wait_for = retry_after(header, self.clock(), self.settings.backoff_max) \
                        if status == 429 else None
                    # The attempt count survives a restart: a crash loop cannot retry forever.
                    await asyncio.to_thread(self._record, body, delivery, "Pending", attempts,
                                            error)
                    raise Retryable(error, wait_for)
        except Retryable as exc:
            return attempts, "Failed", f"{exc.error} after {attempts} attempt(s)"
        return attempts, "Failed", "no attempts left"  # pragma: no cover

    # -- secrets and payloads (in a thread: the kubernetes client blocks) --------------

    def _request(self, body: Mapping[str, Any], delivery: Delivery) -> Request:
        meta = body["metadata"]
        namespace = str(meta["namespace"])
        entry = (body["status"]["runbookSpec"]["notifications"])[delivery.entry]
        target = entry[delivery.channel]
        ctx = context_of(body, delivery, SECRETS.text)
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: delivery.key,
                   "User-Agent": "runbook-operator"}
        if delivery.channel == "slack":
            url = self._secret(namespace, target["webhookSecretRef"])
            return Request(url, encode(slack_payload(ctx, delivery.key)), headers)
        if delivery.channel == "pagerduty":
            key = self._secret(namespace, target["routingKeySecretRef"])
            payload = pagerduty_payload(ctx, key, str(meta.get("uid") or ""))
            return Request(self.settings.pagerduty_url, encode(payload), headers)
        url = self._secret(namespace, target["urlSecretRef"])
        raw = encode(webhook_payload(ctx, delivery, self.clock()))
        if target.get("signingSecretRef"):
            secret = self._secret(namespace, target["signingSecretRef"])
            headers[SIGNATURE_HEADER] = signature(secret.encode(), raw)
        return Request(url, raw, headers)

    def _secret(self, namespace: str, ref: Mapping[str, str]) -> str:
        name, key = ref["name"], ref["key"]
        cached = self._secrets.get((namespace, name))
        if cached is None or time.monotonic() - cached[0] > self.settings.secret_ttl:
            try:
                secret = self._read_secret(namespace, name)
            except ApiException as exc:
                if is_transient(exc):
                    raise  # the API server's trouble, not the Secret's: resumed later
                raise SecretProblem(f"Secret {name} ({key}) not readable: {exc.status} "
                                    f"{exc.reason}") from None
            data = {k: base64.b64decode(v).decode(errors="replace")
                    for k, v in (secret.data or {}).items()}
            SECRETS.learn(("notify", namespace, name), data.values())
            cached = (time.monotonic(), data)
            self._secrets[(namespace, name)] = cached
        value = cached[1].get(key, "").strip()
        if not value:
            raise SecretProblem(f"Secret {name} has no key {key}")
        return value

    @retrying
    def _read_secret(self, namespace: str, name: str) -> Any:
        return self.clients.core.read_namespaced_secret(name, namespace)

    # -- status --------------------------------------------------------------------------

    def _record(self, body: Mapping[str, Any], delivery: Delivery, state: str, attempts: int,
                error: str | None, history: bool = False) -> bool:
        """Write the delivery's record (and a history entry); False when there is no point
        going on: the execution is gone, or the record is already final."""
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])

        def attempt() -> bool:
            current = read_object(self.clients, PLURAL, namespace, name)
            if current is None:
                return False
            if (current.get("metadata") or {}).get("uid") != meta.get("uid"):
                return False
            status = current.get("status") or {}
            records = list(status.get("notifications") or [])
            old = next((r for r in records if r.get("id") == delivery.key), None)
            if old is not None and old.get("state") in ("Delivered", "Failed"):
                return False
            record = {"id": delivery.key, "channel": delivery.channel, "event": delivery.event,
                      "state": state, "attempts": attempts, "updatedAt": fmt(self.clock())}
            if delivery.subject:
                record["step"] = delivery.subject
            if error:
                record["lastError"] = SECRETS.text(error)[:256]
            if old is not None and {k: v for k, v in old.items() if k != "updatedAt"} == \
                    {k: v for k, v in record.items() if k != "updatedAt"}:
                return True
            records = [r for r in records if r.get("id") != delivery.key] + [record]
            patch: dict[str, Any] = {"notifications": records}
            if history:
                patch.update(self._history(status, delivery, state, attempts, error))
            try:
                patch_status(self.clients, PLURAL, namespace, name, patch,
                             resource_version=current["metadata"]["resourceVersion"])
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return retry_conflicts(attempt, 5, f"execution {namespace}/{name}")

    def _history(self, status: Mapping[str, Any], delivery: Delivery, state: str,
                 attempts: int, error: str | None) -> dict[str, Any]:
        word = "delivered" if state == "Delivered" else f"failed ({error})"
        entry: dict[str, Any] = {
            "time": fmt(self.clock()),
            "event": "NotificationDelivered" if state == "Delivered" else "NotificationFailed",
            "message": SECRETS.text(f"{delivery.channel} {delivery.event}: {word}, "
                                    f"{attempts} attempt(s)")[:512]}
        if delivery.subject:
            entry["step"] = delivery.subject
        return appended(status, entry)
