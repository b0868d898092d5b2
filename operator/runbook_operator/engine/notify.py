"""Notifications: which ones an execution owes, what they say, whether to retry.

Pure, with time passed in, like the rest of the engine. The shell
(:mod:`runbook_operator.notify.deliver`) reads Secrets and speaks HTTP.

- **What happened** is read from the execution's status, level-triggered
  (:func:`happened`): Started, WaitingForApproval (per approval step), StepFailed
  (per step), CircuitOpened (per step refused by an open circuit), and the end
  phases Succeeded, Failed, Cancelled. A restart recomputes the same list.
- **What is owed** (:func:`owed`): each of those events times each of the Runbook's
  ``notifications`` entries that listens for it, one :class:`Delivery` each, with
  an idempotency key stable per (execution uid, entry, channel, event) so that a
  receiver can drop the second copy of an at-least-once delivery.
- **What it says**: Slack Block Kit (:func:`slack_payload`), PagerDuty Events API v2
  (:func:`pagerduty_payload`: trigger on Failed, resolve on Succeeded, one
  ``dedup_key`` per execution, or per alert when an alert started it), and a
  versioned JSON document for generic webhooks (:func:`webhook_payload`), signed
  with HMAC-SHA256 (:func:`signature`).
- **Whether to retry** (:func:`classify`): 5xx, 429 (after ``Retry-After``),
  timeouts and connection errors are retried; any other 4xx is final.
- **Where it may go** (:func:`url_problem`, :func:`blocked_address`): a URL read from
  a Secret is only as trusted as whoever may write that Secret, so anything but
  http(s) with a host, and any link-local (cloud metadata), unspecified or multicast
  address, is refused before a request is made: a final failure that says so, not
  six retries of an error that can never go away.
- Slack text is mrkdwn: every value from the execution is escaped (``&``, ``<``,
  ``>``, code fences), so a step's message cannot mention ``@channel``, forge a
  link or leave its code block, and every block stays within Slack's limits.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from runbook_operator.api.common import parse_duration
from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.api.runbook import SlackTarget
from runbook_operator.engine.timeutil import fmt, parse

NotifyEvent = Literal["Started", "WaitingForApproval", "StepFailed", "Failed", "Succeeded",
                      "Cancelled", "CircuitOpened"]
NOTIFY_EVENTS: tuple[str, ...] = ("Started", "WaitingForApproval", "StepFailed", "Failed",
                                  "Succeeded", "Cancelled", "CircuitOpened")
Channel = Literal["slack", "pagerduty", "webhook"]
CHANNELS: tuple[str, ...] = ("slack", "pagerduty", "webhook")

WEBHOOK_SCHEMA_VERSION = "runbooks.dev/notification/v1"
SIGNATURE_HEADER = "X-Runbook-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"

PAGERDUTY_SEVERITY = {"SEV1": "critical", "SEV2": "error", "SEV3": "warning", "SEV4": "info"}
"""Our severities as PagerDuty's; an execution without one is ``warning`` (SEV3)."""

MAX_AGE = timedelta(hours=1)
"""Events older than this when first seen (the operator was down, or notifications
were added later) are not sent: a page about yesterday helps nobody."""

MAX_SUMMARY_WINDOW = timedelta(minutes=15)
"""The longest storm window: held messages live in this process's memory only, and
one held longer than :data:`MAX_AGE` would not be sent at all after a restart."""

_END = FINISHED_EXECUTION_PHASES


def summary_window(text: str | None) -> float:
    """Seconds of a Slack entry's ``summaryWindow`` (default 1m), at most
    :data:`MAX_SUMMARY_WINDOW`."""
    try:
        window = parse_duration(str(text or "1m"))
    except ValueError:
        window = timedelta(minutes=1)
    return min(window, MAX_SUMMARY_WINDOW).total_seconds()


def summarize_after(entry: Mapping[str, Any]) -> int:
    """A Slack entry's ``summarizeAfter`` (the API's default when absent or not a count)."""
    value = entry.get("summarizeAfter")
    default = SlackTarget.model_fields["summarize_after"].default
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else int(default)


@dataclass(frozen=True)
class StormWindow:
    """One window of one runbook's Slack end-of-run messages (monotonic seconds)."""

    started: float
    sent: int = 0
    """Messages sent one by one in this window."""
    holding: bool = False
    """Some message waits for this window's summary."""


def storm_decision(window: StormWindow | None, now: float, after: int, length: float
                   ) -> tuple[StormWindow, bool]:
    """The window after one more end-of-run message at ``now``, and whether the message
    is held for the window's summary (else it is sent on its own).

    The first ``after`` messages of a window go one by one; the rest wait for the
    summary at the window's end. A window that ended with nothing held is replaced
    by a new one; ``after`` 0 never holds.
    """
    if after <= 0:
        return window or StormWindow(now), False
    if window is None or (now - window.started >= length and not window.holding):
        window = StormWindow(now)
    if window.sent < after and not window.holding:
        return StormWindow(window.started, window.sent + 1, False), False
    return StormWindow(window.started, window.sent, True), True


@dataclass(frozen=True)
class Happened:
    """One thing an execution did that someone may want to hear about."""

    event: str
    subject: str = ""
    """The step, for per-step events; empty otherwise."""
    at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    """One notification owed: an event to one channel of one ``notifications`` entry."""

    key: str
    """The idempotency key; also the delivery's id in ``status.notifications``."""
    entry: int
    """Index in the Runbook's ``notifications``."""
    channel: str
    event: str
    subject: str
    at: datetime | None


def happened(status: Mapping[str, Any], frozen_spec: Mapping[str, Any] | None = None
             ) -> list[Happened]:
    """Everything worth notifying that the execution's status shows, in a stable order."""
    found: list[Happened] = []
    phase = status.get("phase")
    started = parse(status.get("startedAt"))
    if started is not None or phase in ("Running", "WaitingForApproval") or (phase in _END \
            and status.get("steps")):
        found.append(Happened("Started", "", started))
    steps: Mapping[str, Any] = status.get("steps") or {}
    approvals = {s.get("name") for s in (frozen_spec or {}).get("steps") or []
                 if isinstance(s, Mapping) and s.get("type") == "approval"}
    for name in sorted(steps):
        step = steps[name] or {}
        at = parse(step.get("finishedAt")) or parse(step.get("startedAt"))
        if step.get("phase") == "WaitingForApproval" or (
                name in approvals and step.get("startedAt")):
            found.append(Happened("WaitingForApproval", name, parse(step.get("startedAt"))))
        if step.get("phase") == "Failed":
            found.append(Happened("StepFailed", name, at))
        if step.get("reason") == "CircuitOpen":
            found.append(Happened("CircuitOpened", name, at))
    if phase in _END:
        found.append(Happened(str(phase), "", parse(status.get("finishedAt"))))
    return found


def delivery_key(uid: str, entry: int, channel: str, event: str, subject: str) -> str:
    """Stable per (execution, entry, channel, event): the same across restarts and replicas."""
    text = f"{uid}\x1f{entry}\x1f{channel}\x1f{event}\x1f{subject}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def channel_of(entry: Mapping[str, Any]) -> str | None:
    return next((c for c in CHANNELS if entry.get(c)), None)


def owed(uid: str, notifications: Sequence[Mapping[str, Any]], status: Mapping[str, Any],
         frozen_spec: Mapping[str, Any] | None, now: datetime,
         first_seen: datetime | None = None) -> list[Delivery]:
    """Deliveries the execution owes, whether or not already made.

    An event older than :data:`MAX_AGE` at ``now`` is owed only if the execution was
    first seen (``first_seen``) before it: nothing stale is sent after a long outage.
    """
    return [d for d, old in _deliveries(uid, notifications, status, frozen_spec, now,
                                        first_seen) if not old]


def expired(uid: str, notifications: Sequence[Mapping[str, Any]], status: Mapping[str, Any],
            frozen_spec: Mapping[str, Any] | None, now: datetime,
            first_seen: datetime | None = None) -> list[Delivery]:
    """The deliveries :func:`owed` leaves out for their age; one recorded Pending
    (attempted before an outage) is to be closed as Failed, not left Pending forever."""
    return [d for d, old in _deliveries(uid, notifications, status, frozen_spec, now,
                                        first_seen) if old]


def _deliveries(uid: str, notifications: Sequence[Mapping[str, Any]],
                status: Mapping[str, Any], frozen_spec: Mapping[str, Any] | None,
                now: datetime, first_seen: datetime | None) -> list[tuple[Delivery, bool]]:
    """Every delivery the execution's events call for, and whether it is too old."""
    result = []
    for thing in happened(status, frozen_spec):
        old = thing.at is not None and now - thing.at > MAX_AGE and \
            (first_seen is None or first_seen > thing.at)
        for index, entry in enumerate(notifications):
            channel = channel_of(entry)
            if channel is None or thing.event not in (entry.get("on") or []):
                continue
            result.append((Delivery(delivery_key(uid, index, channel, thing.event,
                                                 thing.subject),
                                    index, channel, thing.event, thing.subject, thing.at),
                           old))
    return result


# -- payloads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a message says about the execution (nothing secret: params are left out)."""

    namespace: str
    execution: str
    runbook: str
    phase: str
    severity: str | None
    event: str
    subject: str
    reason: str | None
    message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    steps: tuple[tuple[str, str, int, str | None], ...]
    """(name, phase, attempts, reason) of every step."""
    approvers: tuple[str, ...] = ()
    alert: Mapping[str, Any] | None = None
    """``triggeredBy.alert`` when an alert started the execution."""
    incident_key: str | None = None
    """``status.resumedFrom.incidentKey``: the incident of the run this one resumes."""

    @property
    def duration(self) -> str | None:
        if self.started_at is None:
            return None
        seconds = int(((self.finished_at or self.started_at) - self.started_at)
                      .total_seconds())
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" \
            if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"

    @property
    def failed_step(self) -> tuple[str, str | None] | None:
        if self.event == "StepFailed":
            found = next((s for s in self.steps if s[0] == self.subject), None)
            return (self.subject, found[3] if found else None)
        failed = [s for s in self.steps if s[1] == "Failed"]
        return (failed[0][0], failed[0][3]) if failed else None

    def describe_command(self) -> str:
        # The plugin has no describe verb; kubectl's shows the status and the Events.
        return f"kubectl describe rbx {self.execution} -n {self.namespace}"

    def approve_command(self) -> str:
        return f"kubectl runbook approve {self.execution} {self.subject} -n {self.namespace}"


def context_of(body: Mapping[str, Any], delivery: Delivery,
               redact: Any = None) -> Context:
    """The :class:`Context` of one delivery from the execution's body."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    frozen = status.get("runbookSpec") or {}
    steps = tuple((name, str((s or {}).get("phase") or "Pending"),
                   int((s or {}).get("attempts") or 0), (s or {}).get("reason"))
                  for name, s in sorted((status.get("steps") or {}).items()))
    approvers: tuple[str, ...] = ()
    if delivery.event == "WaitingForApproval":
        for step in frozen.get("steps") or []:
            if isinstance(step, Mapping) and step.get("name") == delivery.subject:
                who = ((step.get("approval") or {}).get("approvers") or {})
                approvers = tuple([*(who.get("users") or []),
                                   *(f"group:{g}" for g in who.get("groups") or [])])
    message = status.get("message")
    if delivery.subject:
        message = ((status.get("steps") or {}).get(delivery.subject) or {}).get("message") \
            or message
    if redact is not None and message:
        message = redact(message)
    return Context(
        namespace=str(meta.get("namespace") or ""), execution=str(meta.get("name") or ""),
        runbook=str((spec.get("runbookRef") or {}).get("name") or ""),
        phase=str(status.get("phase") or "Pending"), severity=spec.get("severity"),
        event=delivery.event, subject=delivery.subject, reason=status.get("reason"),
        message=(message or None) and str(message)[:1000],
        started_at=parse(status.get("startedAt")), finished_at=parse(status.get("finishedAt")),
        steps=steps, approvers=approvers,
        alert=(spec.get("triggeredBy") or {}).get("alert"),
        incident_key=(status.get("resumedFrom") or {}).get("incidentKey"))


def _headline(ctx: Context) -> str:
    what = {"Started": "started", "WaitingForApproval": f"waits for approval of {ctx.subject}",
            "StepFailed": f"step {ctx.subject} failed", "Failed": "failed",
            "Succeeded": "succeeded", "Cancelled": "was cancelled",
            "CircuitOpened": f"step {ctx.subject} was refused by an open circuit"}
    return f"Runbook {ctx.runbook}: {ctx.execution} {what.get(ctx.event, ctx.event)}"


SLACK_TEXT_MAX = 3000
"""Slack's limit on a section's (and a context element's) text."""
SLACK_FIELD_MAX = 2000
SLACK_HEADER_MAX = 150


def mrkdwn(text: str) -> str:
    """``text`` as literal Slack mrkdwn: the three characters Slack parses escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fit(text: str, limit: int, escape: bool = True) -> str:
    """``text`` escaped (if asked) and cut to ``limit`` characters without splitting an
    entity; an ellipsis says something was cut."""
    out = mrkdwn(text) if escape else text
    if len(out) <= limit:
        return out
    cut = out[:limit - 1]
    amp = cut.rfind("&")
    if escape and amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]  # never half an entity
    return cut + "…"


def _code_block(text: str, limit: int) -> str:
    # A fence inside the message would close the block early and let the rest be
    # read as mrkdwn; a zero-width space between backticks keeps it literal.
    # Nor may a backtick at either end run into the fences.
    inner = _fit(text.replace("```", "`\u200b`\u200b`"), limit - 8)
    return f"```\u200b{inner}\u200b```" if inner[:1] == "`" or inner[-1:] == "`" \
        else f"```{inner}```"


def slack_payload(ctx: Context, idempotency_key: str) -> dict[str, Any]:
    """An incoming-webhook message with Block Kit blocks (and ``text`` as the fallback).

    Everything taken from the execution is escaped for mrkdwn and cut to Slack's
    limits (header 150, field 2000, section and context text 3000 characters).
    """
    fields = [("Runbook", ctx.runbook), ("Execution", ctx.execution), ("Phase", ctx.phase),
              ("Severity", ctx.severity or "none")]
    if ctx.duration:
        fields.append(("Duration", ctx.duration))
    failed = ctx.failed_step
    if failed is not None:
        fields.append(("Failed step", failed[0] + (f" ({failed[1]})" if failed[1] else "")))
    headline = _headline(ctx)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": _fit(headline, SLACK_HEADER_MAX, escape=False)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{label}*\n" + _fit(value, SLACK_FIELD_MAX - 40)}
            for label, value in fields]},
    ]
    if ctx.message:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": _code_block(ctx.message, SLACK_TEXT_MAX)}})
    if ctx.event == "WaitingForApproval":
        who = ", ".join(ctx.approvers) if ctx.approvers else \
            "anyone who may patch the execution"
        command = _fit(ctx.approve_command(), 1000)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "*May approve:* " + _fit(who, SLACK_TEXT_MAX - len(command) - 40)
            + f"\n`{command}`")}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"`{_fit(ctx.describe_command(), 2000)}` · id "
                                   f"{idempotency_key}"}]})
    return {"text": _fit(headline, SLACK_TEXT_MAX), "blocks": blocks}


def slack_summary_payload(items: Sequence[Context], key: str) -> dict[str, Any]:
    """One Slack message for many finished runs of one runbook (an alert storm)."""
    first = items[0]
    counts: dict[str, int] = {}
    for ctx in items:
        counts[ctx.phase] = counts.get(ctx.phase, 0) + 1
    tally = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))
    headline = f"Runbook {first.runbook}: {len(items)} runs finished ({tally})"
    lines = []
    for ctx in items[:20]:
        failed = ctx.failed_step
        lines.append(f"• {ctx.execution}: {ctx.phase}"
                     + (f" (step {failed[0]})" if failed and ctx.phase == "Failed" else ""))
    if len(items) > 20:
        lines.append(f"… and {len(items) - 20} more")
    return {"text": _fit(headline, SLACK_TEXT_MAX), "blocks": [
        {"type": "header", "text": {"type": "plain_text",
                                    "text": _fit(headline, SLACK_HEADER_MAX, escape=False)}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _fit("\n".join(lines), SLACK_TEXT_MAX)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _fit(
            f"`kubectl get rbx -n {first.namespace}` · summary of {len(items)} "
            f"messages · id {key}", SLACK_TEXT_MAX)}]}]}


def summary_key(keys: Sequence[str]) -> str:
    """The idempotency key of a summary: the same set of deliveries, the same key."""
    return hashlib.sha256("\x1f".join(sorted(keys)).encode()).hexdigest()[:32]


def incident_key(namespace: str, runbook: str, execution: str, uid: str,
                 alert: Mapping[str, Any] | None, resumed_key: str | None = None) -> str:
    """PagerDuty's incident key (``dedup_key``) of an execution.

    A resumed run (``kubectl runbook retry``) belongs to the incident of the run it
    resumes (``resumed_key``, carried down the chain by :mod:`engine.start`); a run an
    alert started, to that alert (runbook, fingerprint), so that a later success for
    the same alert resolves it; any other run is its own incident.
    """
    if resumed_key:
        return resumed_key
    fingerprint = (alert or {}).get("fingerprint")
    if fingerprint:
        basis = f"{namespace}/{runbook}/alert/{fingerprint}"
    else:
        basis = f"{namespace}/{execution}/{uid}"
    return "runbook-" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def incident_key_of(body: Mapping[str, Any]) -> str:
    """:func:`incident_key` of an execution as the API holds it."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    resumed = ((body.get("status") or {}).get("resumedFrom") or {})
    return incident_key(str(meta.get("namespace") or ""),
                        str((spec.get("runbookRef") or {}).get("name") or ""),
                        str(meta.get("name") or ""), str(meta.get("uid") or ""),
                        (spec.get("triggeredBy") or {}).get("alert"),
                        resumed.get("incidentKey") if isinstance(resumed, Mapping) else None)


def dedup_key(ctx: Context, uid: str) -> str:
    """PagerDuty's incident key of the execution ``ctx`` describes (:func:`incident_key`)."""
    return incident_key(ctx.namespace, ctx.runbook, ctx.execution, uid, ctx.alert,
                        ctx.incident_key)


def pagerduty_payload(ctx: Context, routing_key: str, uid: str) -> dict[str, Any]:
    """An Events API v2 event: ``resolve`` on Succeeded, ``trigger`` on anything else."""
    key = dedup_key(ctx, uid)
    if ctx.event == "Succeeded":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    failed = ctx.failed_step
    return {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": key,
        "payload": {
            "summary": _headline(ctx)[:1024],
            "source": f"{ctx.namespace}/{ctx.execution}",
            "severity": PAGERDUTY_SEVERITY.get(ctx.severity or "", "warning"),
            "component": ctx.runbook,
            "group": ctx.namespace,
            "class": ctx.event,
            "custom_details": {
                "phase": ctx.phase, "reason": ctx.reason, "message": ctx.message,
                "failed_step": failed[0] if failed else None,
                "duration": ctx.duration, "describe": ctx.describe_command(),
                "steps": [{"name": n, "phase": p, "attempts": a, "reason": r}
                          for n, p, a, r in ctx.steps],
            },
        },
    }


def webhook_payload(ctx: Context, delivery: Delivery, now: datetime) -> dict[str, Any]:
    """The generic webhook's document (schema :data:`WEBHOOK_SCHEMA_VERSION`)."""
    failed = ctx.failed_step
    return {
        "schemaVersion": WEBHOOK_SCHEMA_VERSION,
        "idempotencyKey": delivery.key,
        "event": ctx.event,
        "subject": ctx.subject or None,
        "sentAt": fmt(now),
        "occurredAt": fmt(delivery.at) if delivery.at else None,
        "execution": {"namespace": ctx.namespace, "name": ctx.execution,
                      "runbook": ctx.runbook, "phase": ctx.phase, "severity": ctx.severity,
                      "reason": ctx.reason, "message": ctx.message,
                      "failedStep": failed[0] if failed else None,
                      "startedAt": fmt(ctx.started_at) if ctx.started_at else None,
                      "finishedAt": fmt(ctx.finished_at) if ctx.finished_at else None,
                      "steps": [{"name": n, "phase": p, "attempts": a, "reason": r}
                                for n, p, a, r in ctx.steps]},
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact, keys sorted, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()


def signature(secret: bytes, body: bytes) -> str:
    """``X-Runbook-Signature``: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does: constant-time comparison of the signature."""
    return hmac.compare_digest(signature(secret, body), header)


# -- answers ------------------------------------------------------------------------------

Verdict = Literal["delivered", "retry", "final"]


def classify(status: int | None) -> Verdict:
    """A response's verdict; ``None`` means no response (timeout, connection error)."""
    if status is None or status == 429 or status >= 500:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    return "final"


def retry_after(header: str | None, now: datetime, cap: float = 300.0) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    if not header:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(cap, seconds))


# -- where a notification may go ---------------------------------------------------------

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})
"""Cloud metadata endpoints outside the link-local ranges (AWS over IPv6)."""


def blocked_address(address: str) -> bool:
    """Whether a notification may not be sent to this IP address.

    Link-local (169.254.0.0/16 and fe80::/10: the cloud metadata services, which hand
    out the node's credentials), unspecified, multicast and the known metadata
    addresses. Loopback and private ranges stay allowed: in-cluster receivers live
    there (and the tests' sinks on 127.0.0.1).
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a host name: checked once resolved
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_link_local or ip.is_unspecified or ip.is_multicast
            or ip in METADATA_ADDRESSES)


def url_problem(url: str) -> str | None:
    """Why a notification may not be sent to ``url``, or None.

    The answer never quotes the URL or any part of it: it came from a Secret.
    """
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "URL refused: it contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        return "URL refused: it does not parse"
    if parts.scheme.lower() not in ("http", "https"):
        return "URL refused: only http and https are allowed"
    if not host:
        return "URL refused: it has no host"
    if blocked_address(host):
        return "URL refused: a link-local, metadata, unspecified or multicast address"
    return None
