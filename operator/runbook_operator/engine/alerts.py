"""Alerts to executions: parsing Alertmanager's webhook, matching triggers, naming runs.

Everything the receiver decides is decided here, without I/O and with time passed
in, so that it can be fuzzed: the payload (untrusted, from the network) is parsed
with limits into :class:`Notification`; each Runbook's ``spec.triggers.alerts`` is
compiled once into :class:`CompiledTrigger`; :func:`decide` turns one alert and
the triggers that may apply into decisions (start this execution, resolve that
one, this alert is invalid, nothing matched).

Exactly one execution per alert occurrence needs no state outside the cluster:
the execution's name is a function of (runbook, fingerprint, startsAt) alone
(:func:`occurrence_name`), so a repeated notification, a retry, or the same alert
from both members of an Alertmanager HA pair creates the same name, and the API
server answers the second create with 409 AlreadyExists.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from runbook_operator.api.common import parse_duration
from runbook_operator.api.execution import AlertRef, TriggeredBy
from runbook_operator.api.runbook import AlertTrigger
from runbook_operator.engine.cel import CelError, compile_expression, evaluate
from runbook_operator.engine.matchers import Matcher, MatcherError, matches_all, parse_matcher

PAYLOAD_VERSION = "4"
MAX_BODY_BYTES = 1 << 20
"""Default cap of a webhook body (Alertmanager's own notifications are far smaller)."""
MAX_ALERTS = 10_000
MAX_LABELS = 256
MAX_LABEL_NAME = 1024
MAX_LABEL_VALUE = 16 * 1024
FINGERPRINT = re.compile(r"[0-9a-fA-F]{1,63}")
_RFC3339 = re.compile(  # ASCII digits only: Python's \d also takes fullwidth and other scripts
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})",
    re.ASCII)
_SURROGATE = re.compile("[\ud800-\udfff]")
SEVERITIES = frozenset({"SEV1", "SEV2", "SEV3", "SEV4"})
MAX_NAME = 63
MAX_EXECUTION_BYTES = 256 * 1024
"""What an alert's execution may take as stored, at most (etcd refuses objects over
1.5 MiB with a 500, and the execution's status still has to fit). A 1 MiB body can
become several MiB stored: Go's JSON encoder writes ``<``, ``>`` and ``&`` as six
bytes each, and params may copy labels. So the parts an alert fills are budgeted:"""
MAX_PARAMS_BYTES = 128 * 1024
"""Params (CEL results) larger than this make the alert ``invalid``."""
RECORDED_LABELS_BYTES = 32 * 1024
"""``triggeredBy.alert.labels`` is a record (params carry what the runbook uses): past
this, labels are recorded cut short, ``alertname`` and ``severity`` first."""
RECORDED_LABEL = 256

LABEL_FINGERPRINT = "runbooks.dev/alert-fingerprint"
"""On executions an alert started: finds the earlier runs of an alert (``cooldown``)."""
LABEL_TRIGGER = "runbooks.dev/trigger"
ANNOTATION_STARTS_AT = "runbooks.dev/alert-starts-at"

AlertStatus = Literal["firing", "resolved"]


class PayloadError(ValueError):
    """A webhook body that is not an Alertmanager v4 notification; a one-line reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
        """The HTTP status to answer with: 400, 413, 415 or 422."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as Alertmanager sent it."""

    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    starts_ns: int
    """``startsAt`` as nanoseconds since the epoch: the same instant however written."""
    ends_at: str
    generator_url: str
    fingerprint: str

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def cel(self) -> dict[str, Any]:
        return {"status": self.status, "labels": dict(self.labels),
                "annotations": dict(self.annotations), "startsAt": self.starts_at,
                "endsAt": self.ends_at, "generatorURL": self.generator_url,
                "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Notification:
    """One webhook post: a group of alerts."""

    receiver: str
    status: AlertStatus
    group_key: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]

    def cel(self) -> dict[str, Any]:
        return {"groupKey": self.group_key, "groupLabels": dict(self.group_labels),
                "commonLabels": dict(self.common_labels),
                "commonAnnotations": dict(self.common_annotations),
                "externalURL": self.external_url, "receiver": self.receiver,
                "status": self.status}


# -- parsing -----------------------------------------------------------------------------


def parse_notification(body: bytes) -> Notification:
    """Parse a webhook body; raise :class:`PayloadError` with a one-line reason.

    Unknown fields are ignored (newer Alertmanagers add some); missing or mistyped
    known ones, another version, or values past the limits are errors.
    """
    try:
        data = json.loads(body)
    except RecursionError:
        raise PayloadError("invalid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise PayloadError("invalid JSON: the body is not UTF-8") from None
    except ValueError as exc:
        raise PayloadError(f"invalid JSON: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise PayloadError(f"the payload must be a JSON object, not {_kind(data)}")
    version = data.get("version")
    if version is None:
        raise PayloadError("missing field 'version' (expected Alertmanager's webhook "
                           "payload version \"4\")", 422)
    if version != PAYLOAD_VERSION:
        raise PayloadError(f"unsupported payload version {str(version)[:20]!r}: this "
                           "receiver speaks version \"4\" of Alertmanager's webhook", 422)
    alerts_raw = _field(data, "alerts", list)
    if len(alerts_raw) > MAX_ALERTS:
        raise PayloadError(f"too many alerts in one notification ({len(alerts_raw)} > "
                           f"{MAX_ALERTS})", 413)
    alerts = tuple(_alert(raw, i) for i, raw in enumerate(alerts_raw))
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError("field 'truncatedAlerts' must be a non-negative integer", 422)
    return Notification(
        receiver=_field(data, "receiver", str),
        status=_status(data, "status"),
        group_key=_field(data, "groupKey", str),
        group_labels=_labels(data, "groupLabels"),
        common_labels=_labels(data, "commonLabels"),
        common_annotations=_labels(data, "commonAnnotations"),
        external_url=_field(data, "externalURL", str, required=False),
        truncated_alerts=truncated,
        alerts=alerts,
    )


def _alert(raw: Any, index: int) -> Alert:
    where = f"alerts[{index}]"
    if not isinstance(raw, dict):
        raise PayloadError(f"{where} must be an object, not {_kind(raw)}", 422)
    fingerprint = _field(raw, "fingerprint", str, where)
    if not FINGERPRINT.fullmatch(fingerprint):
        raise PayloadError(f"{where}.fingerprint must be 1 to 63 hex digits", 422)
    starts_at = _field(raw, "startsAt", str, where)
    starts_ns = rfc3339_ns(starts_at)
    if starts_ns is None:
        raise PayloadError(f"{where}.startsAt is not an RFC 3339 time", 422)
    return Alert(
        status=_status(raw, "status", where),
        labels=_labels(raw, "labels", where, required=True),
        annotations=_labels(raw, "annotations", where),
        starts_at=starts_at,
        starts_ns=starts_ns,
        ends_at=_field(raw, "endsAt", str, where, required=False),
        generator_url=_field(raw, "generatorURL", str, where, required=False),
        fingerprint=fingerprint.lower(),
    )


def _field(data: Mapping[str, Any], name: str, kind: type, where: str = "",
           required: bool = True) -> Any:
    path = f"{where}.{name}" if where else name
    if name not in data or data[name] is None:
        if required:
            raise PayloadError(f"missing field {path!r}", 422)
        return kind()
    value = data[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PayloadError(f"field {path!r} must be {_kind_name(kind)}, not {_kind(value)}",
                           422)
    if isinstance(value, str):
        if len(value) > MAX_LABEL_VALUE:
            raise PayloadError(f"field {path!r} is longer than {MAX_LABEL_VALUE} characters",
                               422)
        return _unicode(value)
    return value


def _status(data: Mapping[str, Any], name: str, where: str = "") -> AlertStatus:
    value = _field(data, name, str, where)
    if value not in ("firing", "resolved"):
        path = f"{where}.{name}" if where else name
        raise PayloadError(f"field {path!r} must be \"firing\" or \"resolved\"", 422)
    return value  # type: ignore[no-any-return]


def _labels(data: Mapping[str, Any], name: str, where: str = "",
            required: bool = False) -> dict[str, str]:
    value = _field(data, name, dict, where, required)
    path = f"{where}.{name}" if where else name
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{path} has more than {MAX_LABELS} entries", 422)
    for key, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(f"{path}[{key[:40]!r}] must be a string, not {_kind(item)}",
                               422)
        if len(key) > MAX_LABEL_NAME or len(item) > MAX_LABEL_VALUE:
            raise PayloadError(f"{path}[{key[:40]!r}] is too long", 422)
    return {_unicode(k): _unicode(v) for k, v in value.items()}


def _unicode(text: str) -> str:
    """``text`` with lone surrogates (JSON's ``"\\ud800"``, valid JSON but not Unicode)
    replaced by U+FFFD, as Go's decoder (Alertmanager's, the API server's) does.

    Left in, they cannot be encoded as UTF-8: RE2 raised on them in a matcher, and
    logs, spans and the API request would too.
    """
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), "a value")


def _kind_name(kind: type) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer"}.get(
        kind, kind.__name__)


def rfc3339_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (Go's, up to 9 fraction digits)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second), tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return None
        offset = sign * (hours * 3600 + minutes * 60)
    seconds = int((moment - _EPOCH).total_seconds()) - offset
    return seconds * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# -- triggers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledTrigger:
    """One ``spec.triggers.alerts[i]`` of one Runbook, parsed and compiled."""

    namespace: str
    runbook: str
    index: int
    matchers: tuple[Matcher, ...]
    params: Mapping[str, str]
    severity: str | None
    on_resolved: Literal["Ignore", "Cancel"]
    cooldown: timedelta | None

    @property
    def where(self) -> str:
        return f"triggers.alerts[{self.index}]"

    def alertname(self) -> str | None:
        """The alert name an equality matcher pins, for indexing; None if it pins none."""
        return next((m.value for m in self.matchers if m.name == "alertname" and m.op == "="),
                    None)


@dataclass(frozen=True)
class TriggerProblem:
    index: int
    message: str

    def __str__(self) -> str:
        return f"triggers.alerts[{self.index}]: {self.message}"


def compile_triggers(namespace: str, runbook: str, triggers: Sequence[AlertTrigger],
                     param_names: Iterable[str]
                     ) -> tuple[list[CompiledTrigger], list[TriggerProblem]]:
    """Compile a Runbook's alert triggers; problems name the trigger and what is wrong."""
    compiled: list[CompiledTrigger] = []
    problems: list[TriggerProblem] = []
    known = set(param_names)
    for index, trigger in enumerate(triggers):
        errors: list[str] = []
        matchers: list[Matcher] = []
        for text in trigger.match:
            try:
                matchers.append(parse_matcher(text))
            except MatcherError as exc:
                errors.append(f"match: {exc}")
        for name, source in trigger.params.items():
            if name not in known:
                errors.append(f"params: {name!r} is not a parameter of the runbook "
                              f"(declared: {', '.join(sorted(known)) or 'none'})")
            errors += _compile_error(f"params.{name}", source)
        if trigger.severity is not None:
            errors += _compile_error("severity", trigger.severity)
        cooldown = None
        if trigger.cooldown is not None:
            try:
                cooldown = parse_duration(trigger.cooldown)
            except ValueError as exc:
                errors.append(f"cooldown: {exc}")
        if errors:
            problems += [TriggerProblem(index, e) for e in errors]
            continue
        compiled.append(CompiledTrigger(
            namespace=namespace, runbook=runbook, index=index, matchers=tuple(matchers),
            params=dict(trigger.params), severity=trigger.severity,
            on_resolved=trigger.on_resolved, cooldown=cooldown))
    return compiled, problems


def _compile_error(field: str, source: str) -> list[str]:
    try:
        compile_expression(source)
    except CelError as exc:
        return [f"{field}: {source!r} does not compile: {exc}"]
    return []


# -- decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Create this execution (409 means another delivery already did: a duplicate)."""

    trigger: CompiledTrigger
    alert: Alert
    name: str
    params: Mapping[str, Any]
    severity: str | None


@dataclass(frozen=True)
class Resolve:
    """The occurrence behind execution ``name`` resolved: cancel it, or only record it."""

    trigger: CompiledTrigger
    alert: Alert
    name: str
    cancel: bool


@dataclass(frozen=True)
class Invalid:
    """A trigger matched, but its CEL failed on this alert: this alert starts nothing."""

    trigger: CompiledTrigger
    alert: Alert
    reason: str


@dataclass(frozen=True)
class Unmatched:
    alert: Alert


Decision = Start | Resolve | Invalid | Unmatched


def decide(notification: Notification, alert: Alert,
           triggers: Iterable[CompiledTrigger]) -> list[Decision]:
    """What to do about one alert, given the triggers that may apply to it.

    At most one decision per Runbook (its first matching trigger wins); an alert no
    trigger matches gives one :class:`Unmatched`.
    """
    decisions: list[Decision] = []
    seen: set[tuple[str, str]] = set()
    variables: dict[str, Any] | None = None
    for trigger in triggers:
        runbook = (trigger.namespace, trigger.runbook)
        if runbook in seen or not matches_all(trigger.matchers, alert.labels):
            continue
        seen.add(runbook)
        name = occurrence_name(trigger.runbook, alert.fingerprint, alert.starts_ns)
        if alert.status == "resolved":
            decisions.append(Resolve(trigger, alert, name, trigger.on_resolved == "Cancel"))
            continue
        if variables is None:
            variables = {"alert": alert.cel(), "group": notification.cel()}
        try:
            params = {k: _json_value(evaluate(src, variables), f"params.{k}")
                      for k, src in trigger.params.items()}
            severity = None
            if trigger.severity is not None:
                severity = evaluate(trigger.severity, variables)
                if severity not in SEVERITIES:
                    raise CelError(f"severity gave {str(severity)[:40]!r}, not one of "
                                   "SEV1, SEV2, SEV3, SEV4")
            size = stored_size(params)
            if size > MAX_PARAMS_BYTES:
                raise CelError(f"params would take {size} bytes stored, over the "
                               f"{MAX_PARAMS_BYTES} an alert's execution may hold")
        except CelError as exc:
            decisions.append(Invalid(trigger, alert, f"{trigger.where}: {exc}"[:1000]))
            continue
        decisions.append(Start(trigger, alert, name, params, severity))
    if not decisions:
        decisions.append(Unmatched(alert))
    return decisions


def _json_value(value: Any, where: str) -> Any:
    """A CEL result as plain JSON (what a parameter may hold)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise CelError(f"{where} gave a {type(value).__name__}, not a JSON value") from None
    return json.loads(text)


def stored_size(value: Any) -> int:
    """Bytes ``value`` takes as JSON written by Go's encoder, as the API server stores it
    (``<``, ``>``, ``&``, U+2028 and U+2029 become six-byte escapes there)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass")) + 5 * sum(
        text.count(c) for c in "<>&\u2028\u2029")


def recorded_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels as ``triggeredBy`` records them: all of them, unless that would take
    more than :data:`RECORDED_LABELS_BYTES` (then each cut to :data:`RECORDED_LABEL`
    characters, ``alertname`` and ``severity`` first, as many as fit)."""
    if stored_size(labels) <= RECORDED_LABELS_BYTES:
        return dict(labels)
    kept: dict[str, str] = {}
    size = 2
    for name in sorted(labels, key=lambda n: (n not in ("alertname", "severity"), n)):
        if len(name) > RECORDED_LABEL:
            continue
        value = labels[name][:RECORDED_LABEL]
        entry = stored_size({name: value})
        if size + entry > RECORDED_LABELS_BYTES:
            break
        kept[name] = value
        size += entry
    return kept


def occurrence_name(runbook: str, fingerprint: str, starts_ns: int) -> str:
    """The execution name of one occurrence of one alert for one runbook.

    ``<runbook>-<12 hex digits>``, the runbook name shortened so the whole fits 63
    characters (it becomes a label value of the step Jobs).
    """
    digest = hashlib.sha256(
        f"{runbook}\x1f{fingerprint.lower()}\x1f{starts_ns}".encode()).hexdigest()[:12]
    head = runbook[: MAX_NAME - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}" if head else f"alert-{digest}"


def started_by_alert(body: Mapping[str, Any], runbook: str, fingerprint: str,
                     starts_ns: int | None = None) -> bool:
    """Whether execution ``body`` is a run of ``runbook`` an alert with this fingerprint
    started (and, given ``starts_ns``, this occurrence of it).

    The name alone does not say so: anyone who may create executions in the namespace
    can take the name the receiver would derive (by accident or to suppress the run).
    Such an object is not counted as the occurrence's run, is not cancelled or marked
    when the alert resolves, and puts no alert in ``cooldown``. What is compared is
    ``spec`` (immutable once created): runbookRef and triggeredBy's kind, fingerprint
    and startsAt, the instant, however it is written.
    """
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return False
    ref = spec.get("runbookRef")
    triggered = spec.get("triggeredBy")
    if not isinstance(ref, Mapping) or ref.get("name") != runbook or \
            not isinstance(triggered, Mapping) or triggered.get("kind") != "Alert":
        return False
    alert = triggered.get("alert")
    if not isinstance(alert, Mapping) or \
            str(alert.get("fingerprint") or "").lower() != fingerprint.lower():
        return False
    return starts_ns is None or rfc3339_ns(str(alert.get("startsAt") or "")) == starts_ns


def in_cooldown(cooldown: timedelta | None, earlier_starts: Iterable[datetime],
                now: datetime) -> bool:
    """Whether an earlier execution for the same alert started within ``cooldown``."""
    if cooldown is None:
        return False
    return any(now - started < cooldown for started in earlier_starts)


def execution_manifest(decision: Start, notification: Notification,
                       annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The RunbookExecution an alert starts (``metadata.name`` is the occurrence's)."""
    trigger, alert = decision.trigger, decision.alert
    triggered_by = TriggeredBy(kind="Alert", alert=AlertRef.model_validate({
        "name": alert.name[:1024], "fingerprint": alert.fingerprint,
        "startsAt": alert.starts_at, "labels": recorded_labels(alert.labels),
        "groupKey": notification.group_key[:4096], "receiver": notification.receiver[:1024],
        "generatorURL": alert.generator_url[:4096] or None}))
    spec: dict[str, Any] = {"runbookRef": {"name": trigger.runbook},
                            "params": dict(decision.params),
                            "triggeredBy": triggered_by.to_k8s()}
    if decision.severity is not None:
        spec["severity"] = decision.severity
    return {
        "apiVersion": "runbooks.dev/v1alpha1",
        "kind": "RunbookExecution",
        "metadata": {
            "name": decision.name,
            "namespace": trigger.namespace,
            "labels": {LABEL_FINGERPRINT: alert.fingerprint, LABEL_TRIGGER: "alert"},
            "annotations": {ANNOTATION_STARTS_AT: alert.starts_at, **(annotations or {})},
        },
        "spec": spec,
    }


@dataclass
class Tally:
    """Decisions of one notification by outcome, for the response and the metric."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n
