"""Alerts to executions (engine/alerts.py): payload parsing, triggers, decisions, names.

Cases:
- parsing: a v4 notification as Alertmanager sends it (and the captured ones under
  tests/unit/triggers/fixtures, when present); unknown fields ignored; each class of
  bad body (not JSON, not UTF-8, nested too deep, not an object, version missing or 3,
  each required field missing or mistyped, bad fingerprint or startsAt, too many
  labels) refused with a one-line reason and a 4xx status;
- startsAt: the same instant written differently gives the same occurrence;
- names: deterministic per (runbook, fingerprint, startsAt), different for a new
  startsAt (a flapping alert) and per runbook, at most 63 characters for runbook
  names up to 253, never ending in '-';
- triggers: compile problems name the trigger (matcher, unknown param, CEL, cooldown);
- decisions: params and severity from CEL over alert and group; first matching
  trigger of a runbook wins; resolved alerts resolve (cancel or record); CEL that
  fails on one alert makes only that alert invalid; non-JSON CEL results and
  severities outside SEV1..SEV4 are invalid; no trigger: unmatched;
- the manifest: triggeredBy records kind Alert, fingerprint, startsAt, groupKey,
  receiver; labels with quotes and newlines are kept as data; cooldown arithmetic;
- property (10,000 generated payloads, valid and broken: 1,000 drawn by hypothesis,
  ten variants each, through parser and matcher/decide): only PayloadError (with a
  4xx) or decisions, nothing else.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import RunbookExecution
from runbook_operator.api.runbook import AlertTrigger
from runbook_operator.engine.alerts import (
    MAX_LABELS,
    CompiledTrigger,
    Invalid,
    PayloadError,
    Resolve,
    Start,
    Unmatched,
    compile_triggers,
    decide,
    execution_manifest,
    in_cooldown,
    occurrence_name,
    parse_notification,
)

FIXTURES = Path(__file__).resolve().parents[1] / "triggers" / "fixtures"


def payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "receiver": "runbook-operator",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "HighMemoryUsage", "service": "api",
                       "severity": "critical", "namespace": "prod"},
            "annotations": {"summary": "api uses 95% of its memory", "value": "0.95"},
            "startsAt": "2026-12-01T20:21:34.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "3f2c4a1b9e8d7c6a",
        }],
        "groupLabels": {"alertname": "HighMemoryUsage"},
        "commonLabels": {"alertname": "HighMemoryUsage", "service": "api"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager-0:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighMemoryUsage"}',
        "truncatedAlerts": 0,
    }
    body.update(overrides)
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def trigger(runbook: str = "high-memory-usage", index: int = 0, namespace: str = "prod",
            **spec: Any) -> CompiledTrigger:
    spec.setdefault("match", ['alertname="HighMemoryUsage"'])
    compiled, problems = compile_triggers(
        namespace, runbook, [AlertTrigger.model_validate(spec)],
        ["service", "threshold", "severity", "x"])
    assert not problems, problems
    return CompiledTrigger(**{**compiled[0].__dict__, "index": index})


# -- parsing -----------------------------------------------------------------------------


def test_parses_a_version_4_notification() -> None:
    n = parse_notification(raw(payload()))
    assert (n.receiver, n.status, n.group_key) == ("runbook-operator", "firing",
                                                    '{}:{alertname="HighMemoryUsage"}')
    (alert,) = n.alerts
    assert alert.name == "HighMemoryUsage"
    assert alert.fingerprint == "3f2c4a1b9e8d7c6a"
    assert alert.labels["service"] == "api"
    assert alert.annotations["value"] == "0.95"


def test_unknown_fields_are_ignored() -> None:
    body = payload(notification_reason="repeat", routeLabels={"x": "y"})
    body["alerts"][0]["silencedBy"] = []
    assert parse_notification(raw(body)).alerts[0].name == "HighMemoryUsage"


@pytest.mark.skipif(not FIXTURES.is_dir() or not list(FIXTURES.glob("*.json")),
                    reason="no captured Alertmanager payloads")
def test_payloads_captured_from_a_real_alertmanager_parse() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        n = parse_notification(path.read_bytes())
        assert n.alerts, path.name
        assert all(a.fingerprint and a.starts_ns > 0 for a in n.alerts), path.name


def _without(path: str) -> dict[str, Any]:
    body = payload()
    parts = path.split(".")
    target = body["alerts"][0] if parts[0] == "alerts[0]" else body
    del target[parts[-1]]
    return body


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{not json", 400, "invalid JSON"),
    (b"\xff\xfe\x00garbage", 400, "invalid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid JSON"),
    (raw([1, 2]), 400, "must be a JSON object"),
    (raw("4"), 400, "must be a JSON object"),
    (raw(payload(version="3")), 422, "unsupported payload version '3'"),
    (raw(payload(version=4)), 422, "unsupported payload version"),
    (raw(_without("version")), 422, "missing field 'version'"),
    (raw(_without("alerts")), 422, "missing field 'alerts'"),
    (raw(_without("groupKey")), 422, "missing field 'groupKey'"),
    (raw(_without("receiver")), 422, "missing field 'receiver'"),
    (raw(_without("status")), 422, "missing field 'status'"),
    (raw(_without("alerts[0].fingerprint")), 422, "alerts[0].fingerprint"),
    (raw(_without("alerts[0].startsAt")), 422, "alerts[0].startsAt"),
    (raw(_without("alerts[0].labels")), 422, "alerts[0].labels"),
    (raw(_without("alerts[0].status")), 422, "alerts[0].status"),
    (raw(payload(alerts="many")), 422, "must be an array"),
    (raw(payload(alerts=[1])), 422, "alerts[0] must be an object"),
    (raw(payload(status="pending")), 422, "\"firing\" or \"resolved\""),
    (raw(payload(groupKey=7)), 422, "'groupKey' must be a string"),
    (raw(payload(truncatedAlerts=-1)), 422, "truncatedAlerts"),
    (raw(payload(commonLabels={"a": 1})), 422, "must be a string"),
])
def test_bad_bodies_are_refused_with_a_reason(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    assert info.value.status == status
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("fingerprint", "not-hex!", "hex digits"),
    ("fingerprint", "a" * 64, "hex digits"),
    ("fingerprint", "", "hex digits"),
    ("startsAt", "yesterday", "RFC 3339"),
    ("startsAt", "2026-13-01T00:00:00Z", "RFC 3339"),
    ("labels", {f"l{i}": "v" for i in range(MAX_LABELS + 1)}, "more than"),
    ("labels", {"a": None}, "must be a string"),
    ("annotations", ["x"], "must be an object"),
])
def test_bad_alert_fields_are_refused(field: str, value: Any, fragment: str) -> None:
    body = payload()
    body["alerts"][0][field] = value
    with pytest.raises(PayloadError) as info:
        parse_notification(raw(body))
    assert fragment in str(info.value) and info.value.status == 422


def test_the_same_instant_written_differently_is_the_same_occurrence() -> None:
    forms = ["2026-12-01T20:21:34.5Z", "2026-12-01T20:21:34.500000000Z",
             "2026-12-01T21:21:34.5+01:00", "2026-12-01T20:21:34.500z"]
    names = set()
    for form in forms:
        body = payload()
        body["alerts"][0]["startsAt"] = form
        alert = parse_notification(raw(body)).alerts[0]
        names.add(occurrence_name("rb", alert.fingerprint, alert.starts_ns))
    assert len(names) == 1


def test_labels_with_quotes_and_newlines_are_kept_as_data() -> None:
    body = payload()
    body["alerts"][0]["labels"]["service"] = 'api"; rm -rf / #\n$(reboot)'
    n = parse_notification(raw(body))
    t = trigger(params={"service": "alert.labels.service"})
    (start,) = decide(n, n.alerts[0], [t])
    assert isinstance(start, Start)
    assert start.params == {"service": 'api"; rm -rf / #\n$(reboot)'}
    manifest = execution_manifest(start, n)
    assert manifest["spec"]["params"]["service"] == 'api"; rm -rf / #\n$(reboot)'
    assert manifest["spec"]["triggeredBy"]["alert"]["labels"]["service"].endswith("(reboot)")


# -- names ---------------------------------------------------------------------------------


def test_names_are_deterministic_and_differ_per_occurrence_and_runbook() -> None:
    a = occurrence_name("high-memory-usage", "3f2c", 1)
    assert a == occurrence_name("high-memory-usage", "3F2C", 1)
    assert a != occurrence_name("high-memory-usage", "3f2c", 2)      # flapped: new startsAt
    assert a != occurrence_name("high-memory-usage", "3f2d", 1)
    assert a != occurrence_name("incident-diagnostics", "3f2c", 1)
    assert a.startswith("high-memory-usage-")


@pytest.mark.parametrize("length", [1, 50, 63, 64, 253])
def test_names_fit_63_characters(length: int) -> None:
    runbook = ("a-" * 200)[:length].rstrip("-") or "a"
    name = occurrence_name(runbook, "ff", 7)
    assert len(name) <= 63
    assert not name.endswith("-") and "--" not in name[-14:]
    assert name == occurrence_name(runbook, "ff", 7)


# -- triggers --------------------------------------------------------------------------------


def test_compile_problems_name_the_trigger_and_the_field() -> None:
    triggers = [AlertTrigger.model_validate(t) for t in [
        {"match": ['alertname="Ok"']},
        {"match": ['alertname="x'], "params": {"nope": "alert.labels.a"},
         "severity": "1 +", "cooldown": "10m"},
    ]]
    compiled, problems = compile_triggers("ns", "rb", triggers, ["service"])
    assert [t.index for t in compiled] == [0]
    text = [str(p) for p in problems]
    assert all(t.startswith("triggers.alerts[1]: ") for t in text)
    assert any("match:" in t and "missing closing quote" in t for t in text)
    assert any("'nope' is not a parameter" in t for t in text)
    assert any("severity:" in t and "does not compile" in t for t in text)


def test_alertname_pin_is_found_for_indexing() -> None:
    assert trigger().alertname() == "HighMemoryUsage"
    assert trigger(match=['alertname=~"High.*"']).alertname() is None


# -- decisions ------------------------------------------------------------------------------


def test_params_and_severity_come_from_cel_over_alert_and_group() -> None:
    n = parse_notification(raw(payload()))
    t = trigger(params={"service": "alert.labels.service",
                        "threshold": "double(alert.annotations.value)",
                        "x": "group.receiver + '/' + group.commonLabels.alertname"},
                severity='alert.labels.severity == "critical" ? "SEV1" : "SEV2"')
    (start,) = decide(n, n.alerts[0], [t])
    assert isinstance(start, Start)
    assert start.params == {"service": "api", "threshold": 0.95,
                            "x": "runbook-operator/HighMemoryUsage"}
    assert start.severity == "SEV1"
    assert start.name == occurrence_name("high-memory-usage", "3f2c4a1b9e8d7c6a",
                                         n.alerts[0].starts_ns)


def test_first_matching_trigger_of_a_runbook_wins_others_still_start() -> None:
    n = parse_notification(raw(payload()))
    first = trigger(index=0, match=['severity="critical"'], severity='"SEV1"')
    second = trigger(index=1, match=['alertname="HighMemoryUsage"'], severity='"SEV3"')
    other = trigger(runbook="incident-diagnostics")
    decisions = decide(n, n.alerts[0], [first, second, other])
    assert [(d.trigger.runbook, d.severity) for d in decisions
            if isinstance(d, Start)] == [("high-memory-usage", "SEV1"),
                                         ("incident-diagnostics", None)]


def test_no_matching_trigger_is_unmatched() -> None:
    n = parse_notification(raw(payload()))
    (d,) = decide(n, n.alerts[0], [trigger(match=['alertname="Other"'])])
    assert isinstance(d, Unmatched)
    (d,) = decide(n, n.alerts[0], [])
    assert isinstance(d, Unmatched)


@pytest.mark.parametrize("on_resolved", ["Cancel", "Ignore"])
def test_resolved_alerts_resolve_their_occurrence(on_resolved: str) -> None:
    body = payload(status="resolved")
    body["alerts"][0].update(status="resolved", endsAt="2026-12-01T20:30:00Z")
    n = parse_notification(raw(body))
    (d,) = decide(n, n.alerts[0], [trigger(onResolved=on_resolved,
                                             params={"service": "alert.labels.nope"})])
    assert isinstance(d, Resolve)  # CEL is not evaluated for a resolved alert
    assert d.cancel is (on_resolved == "Cancel")
    firing = parse_notification(raw(payload())).alerts[0]
    assert d.name == occurrence_name("high-memory-usage", firing.fingerprint, firing.starts_ns)


def test_cel_failing_on_one_alert_makes_only_that_alert_invalid() -> None:
    body = payload()
    second = copy.deepcopy(body["alerts"][0])
    del second["labels"]["service"]
    second["fingerprint"] = "abcdef"
    body["alerts"].append(second)
    n = parse_notification(raw(body))
    t = trigger(params={"service": "alert.labels.service"})
    assert isinstance(decide(n, n.alerts[0], [t])[0], Start)
    (bad,) = decide(n, n.alerts[1], [t])
    assert isinstance(bad, Invalid)
    assert bad.reason.startswith("triggers.alerts[0]: ")


@pytest.mark.parametrize(("severity", "params"), [
    ('"critical"', {}),
    ("1", {}),
    (None, {"x": "alert"}),              # a map is JSON: fine, checked below
    (None, {"x": "timestamp(alert.startsAt)"}),
])
def test_results_that_are_not_params_or_severities(severity: str | None,
                                                   params: dict[str, str]) -> None:
    n = parse_notification(raw(payload()))
    spec: dict[str, Any] = {"params": params}
    if severity is not None:
        spec["severity"] = severity
    (d,) = decide(n, n.alerts[0], [trigger(**spec)])
    if params == {"x": "alert"}:
        assert isinstance(d, Start) and d.params["x"]["fingerprint"] == "3f2c4a1b9e8d7c6a"
    elif "timestamp" in str(params):
        # A CEL timestamp is not a JSON value: either converted to one or refused.
        assert isinstance(d, Start | Invalid)
        if isinstance(d, Start):
            json.dumps(d.params)
    else:
        assert isinstance(d, Invalid) and "SEV1" in d.reason


def test_manifest_records_the_alert_and_validates_as_an_execution() -> None:
    n = parse_notification(raw(payload()))
    (start,) = decide(n, n.alerts[0], [trigger(severity='"SEV2"')])
    assert isinstance(start, Start)
    manifest = execution_manifest(start, n, {"runbooks.dev/traceparent": "00-x-y-01"})
    assert manifest["metadata"]["name"] == start.name
    assert manifest["metadata"]["namespace"] == "prod"
    assert manifest["metadata"]["labels"]["runbooks.dev/alert-fingerprint"] == \
        "3f2c4a1b9e8d7c6a"
    execution = RunbookExecution.from_k8s(manifest)
    ref = execution.spec.triggered_by
    assert ref is not None and ref.kind == "Alert" and ref.alert is not None
    assert (ref.alert.name, ref.alert.fingerprint, ref.alert.starts_at, ref.alert.group_key,
            ref.alert.receiver) == ("HighMemoryUsage", "3f2c4a1b9e8d7c6a",
                                    "2026-12-01T20:21:34.123456789Z",
                                    '{}:{alertname="HighMemoryUsage"}', "runbook-operator")
    assert execution.spec.severity == "SEV2"


def test_cooldown() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    ten = timedelta(minutes=10)
    assert in_cooldown(ten, [now - timedelta(minutes=9)], now)
    assert not in_cooldown(ten, [now - timedelta(minutes=11)], now)
    assert not in_cooldown(None, [now], now)
    assert not in_cooldown(ten, [], now)


# -- property: untrusted payloads ----------------------------------------------------------

_text = st.text(max_size=12)
_labels = st.dictionaries(st.sampled_from(["alertname", "service", "severity", "x", "é"]),
                          st.one_of(st.sampled_from(["HighMemoryUsage", "critical", "api", ""]),
                                    _text), max_size=4)
_junk = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _text,
                  st.lists(st.integers(), max_size=2), st.dictionaries(_text, _text, max_size=2))
_alert = st.fixed_dictionaries(
    {}, optional={
        "status": st.one_of(st.sampled_from(["firing", "resolved"]), _junk),
        "labels": st.one_of(_labels, _junk),
        "annotations": st.one_of(st.dictionaries(_text, _text, max_size=2), _junk),
        "startsAt": st.one_of(st.sampled_from(["2026-12-01T20:21:34Z",
                                               "2026-12-01T20:21:34.999999999+02:00"]), _junk),
        "endsAt": st.one_of(_text, _junk),
        "fingerprint": st.one_of(st.from_regex(r"[0-9a-f]{1,20}", fullmatch=True), _junk),
        "generatorURL": _text,
    })
_payload = st.fixed_dictionaries(
    {}, optional={
        "version": st.one_of(st.just("4"), _junk),
        "status": st.one_of(st.sampled_from(["firing", "resolved"]), _junk),
        "receiver": st.one_of(_text, _junk),
        "groupKey": st.one_of(_text, _junk),
        "alerts": st.one_of(st.lists(_alert, max_size=3), _junk),
        "groupLabels": st.one_of(_labels, _junk),
        "commonLabels": st.one_of(_labels, _junk),
        "commonAnnotations": st.one_of(st.dictionaries(_text, _text, max_size=2), _junk),
        "externalURL": _text,
        "truncatedAlerts": st.one_of(st.integers(-1, 3), _junk),
        "extra": _junk,
    })
_TRIGGERS = [
    trigger(params={"service": "alert.labels.service"},
            severity='alert.labels.severity == "critical" ? "SEV1" : "SEV2"',
            onResolved="Cancel"),
    trigger(runbook="catch-all", match=['service=~".+"', 'x!~"a|b"'],
            params={"x": "group.commonLabels.x + alert.fingerprint"}),
]


def _mutations(body: bytes, seed: int) -> list[bytes]:
    """Ten variants of one generated body: itself, cut short, a byte flipped, wrapped,
    re-encoded, a field dropped or retyped (the shapes a broken sender produces)."""
    out = [body, body[: seed % (len(body) + 1)], body + b"}", b"[" + body + b"]",
           body.replace(b'"4"', b'"3"'), body.decode("latin-1").encode("utf-16"),
           bytes([b ^ 0x20 if i == seed % max(1, len(body)) else b
                  for i, b in enumerate(body)])]
    try:
        data = json.loads(body)
    except ValueError:
        return [*out, body * 2, b"", b"null"]
    if isinstance(data, dict) and data:
        keys = sorted(data)
        dropped = dict(data)
        del dropped[keys[seed % len(keys)]]
        retyped = dict(data)
        retyped[keys[(seed // 7) % len(keys)]] = [seed]
        out += [raw(dropped), raw(retyped), raw({**data, "alerts": [data] * 2})]
    else:
        out += [raw({"version": "4", "alerts": data}), b"", b"null"]
    return out


@settings(max_examples=1_000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(_payload.map(raw), st.binary(max_size=64)), st.integers(0, 1 << 16))
def test_any_payload_is_decided_or_refused_with_a_4xx(generated: bytes, seed: int) -> None:
    # 1,000 examples x 10 variants: 10,000 payloads through the parser and matchers.
    for body in _mutations(generated, seed):
        _decide_or_refuse(body)


def _decide_or_refuse(body: bytes) -> None:
    try:
        n = parse_notification(body)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        assert str(exc) and "\n" not in str(exc)
        return
    for alert in n.alerts:
        decisions = decide(n, alert, _TRIGGERS)
        assert decisions
        for d in decisions:
            if isinstance(d, Start):
                assert len(d.name) <= 63
                json.dumps(execution_manifest(d, n))
