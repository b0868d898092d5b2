"""Hostile and careless alert payloads through engine/alerts.py (issue 9's acceptance audit).

Alertmanager itself sends well-formed bodies; anyone holding the token, a proxy in
between or a buggy sender may not. Cases:
- strings that are JSON but not Unicode (a lone surrogate escape, ``"\\ud800"``): in
  a label a regex matcher reads, RE2's UTF-8 encoding raised and the whole post was
  answered 500 (Alertmanager retried it forever). They become U+FFFD, as Go's decoder
  (Alertmanager's, the API server's) makes them; property: any code point, NUL,
  newlines, long values, in label names and values, through parser, all four matcher
  operators, CEL params and the manifest, which always encodes as strict UTF-8;
- ``startsAt`` with non-ASCII digits (fullwidth, Arabic-Indic) is not RFC 3339 (Python's
  ``\\d`` matched them, so they were accepted and aliased the ASCII instant);
  property: one instant written in any offset, fraction padding, separator or zone
  letter case is one occurrence name, and another instant is another name;
- fingerprints: upper case is the same occurrence and label as lower case; padded,
  non-ASCII or over-long ones are refused;
- size: 10,000 alerts in one post parse, 10,001 are 413; the same alert twice in one
  post decides the same name twice (the API server's 409 makes it one execution);
- an object with the occurrence's name that the alert did not start (a manual run, a
  run of another runbook, of another fingerprint or instant, a scheduled one) is told
  from the receiver's own run by its immutable spec, also from the store's slim copy
  of a finished run: it is not the occurrence's run (see started_by_alert).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.engine.alerts import (
    MAX_ALERTS,
    MAX_EXECUTION_BYTES,
    MAX_LABEL_NAME,
    MAX_PARAMS_BYTES,
    RECORDED_LABELS_BYTES,
    Invalid,
    PayloadError,
    Start,
    decide,
    execution_manifest,
    occurrence_name,
    parse_notification,
    started_by_alert,
    stored_size,
)
from runbook_operator.k8s.store import slim_finished_execution

from .test_alerts import payload, raw, trigger

PROPERTY = settings(max_examples=1_000, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def with_alert(**fields: Any) -> bytes:
    body = payload()
    body["alerts"][0].update(fields)
    return raw(body)


def strict_utf8(value: Any) -> None:
    """What goes to the API server, the logs and spans must be real Unicode."""
    json.dumps(value, ensure_ascii=False).encode("utf-8")


# -- strings that are JSON but not Unicode ---------------------------------------------


def test_a_lone_surrogate_in_a_regex_matched_label_is_a_decision_not_a_crash() -> None:
    body = payload()
    body["alerts"][0]["labels"]["severity"] = "crit\ud800ical"
    n = parse_notification(raw(body))   # json.dumps escapes it as \ud800: valid JSON
    (alert,) = n.alerts
    assert alert.labels["severity"] == "crit\ufffdical"
    decisions = decide(n, alert, [trigger(match=['alertname="HighMemoryUsage"',
                                                 'severity=~"crit.*"'],
                                          params={"service": "alert.labels.severity"})])
    (start,) = decisions
    assert isinstance(start, Start)
    assert start.params == {"service": "crit\ufffdical"}
    strict_utf8(execution_manifest(start, n))


@pytest.mark.parametrize("where", ["label name", "annotation", "receiver", "groupKey",
                                   "commonLabels", "generatorURL", "alertname"])
def test_lone_surrogates_anywhere_become_replacement_characters(where: str) -> None:
    body = payload()
    bad, good = "a\udc00b\ud83d", "a\ufffdb\ufffd"
    alert = body["alerts"][0]
    if where == "label name":
        alert["labels"][bad] = "v"
    elif where == "annotation":
        alert["annotations"]["summary"] = bad
    elif where in ("receiver", "groupKey"):
        body[where] = bad
    elif where == "commonLabels":
        body["commonLabels"]["x"] = bad
    elif where == "generatorURL":
        alert["generatorURL"] = bad
    else:
        alert["labels"]["alertname"] = bad
    n = parse_notification(raw(body))
    text = json.dumps([n.cel(), n.alerts[0].cel()], ensure_ascii=False)
    assert good in text and "\\ud" not in text
    strict_utf8([n.cel(), n.alerts[0].cel()])


_any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_hostile = st.one_of(
    st.text(_any_char, max_size=20),
    st.sampled_from(["", "\x00", "\n", "a\r\nb", '"', "\\", "\u202e", "\ud800", "\udfff",
                     "critical", "crit\x00ical", "é", "🔥", "x" * 16 * 1024, "<" * 16 * 1024,
                     "&\u2028" * 8 * 1024]))
_HOSTILE_TRIGGERS = [
    trigger(runbook="eq", match=['severity="critical"'],
            params={"service": "alert.labels.service"}),
    trigger(runbook="ne", match=['severity!="critical"'],
            params={"x": "alert.annotations.summary + group.receiver"}),
    trigger(runbook="re", match=['service=~".*[\\\\x00-\\\\x{10FFFF}].*"']),
    trigger(runbook="nre", match=['service!~"api|web"', '"é"=~".*"'],
            severity='alert.labels.severity == "critical" ? "SEV1" : "SEV2"'),
]


@PROPERTY
@given(st.dictionaries(_hostile, _hostile, max_size=6), _hostile, _hostile)
def test_hostile_labels_are_decided_and_recorded_as_unicode(
        labels: dict[str, str], service: str, summary: str) -> None:
    body = payload()
    body["alerts"][0]["labels"] = {**labels, "service": service}
    body["alerts"][0]["annotations"] = {"summary": summary}
    try:
        n = parse_notification(raw(body))
    except PayloadError as exc:
        assert exc.status == 422 and "too long" in str(exc), exc  # only the 16 KiB value
        return
    for alert in n.alerts:
        decisions = decide(n, alert, _HOSTILE_TRIGGERS)
        assert decisions
        for d in decisions:
            strict_utf8(d.alert.cel())
            if isinstance(d, Start):
                manifest = execution_manifest(d, n)
                strict_utf8(manifest)
                assert len(manifest["metadata"]["name"]) <= 63
                assert stored_size(manifest) <= MAX_EXECUTION_BYTES
            if isinstance(d, Invalid):
                assert d.reason.startswith("triggers.alerts[0]: ")


def test_long_label_names_are_bounded() -> None:
    ok = parse_notification(with_alert(labels={"alertname": "A", "n" * MAX_LABEL_NAME: "v"}))
    assert len(ok.alerts[0].labels) == 2
    with pytest.raises(PayloadError) as info:
        parse_notification(with_alert(labels={"n" * (MAX_LABEL_NAME + 1): "v"}))
    assert info.value.status == 422 and "too long" in str(info.value)


# -- startsAt ----------------------------------------------------------------------------


@pytest.mark.parametrize("starts_at", [
    "\uff12\uff10\uff12\uff16-12-01T10:00:00Z",      # fullwidth year
    "2026-12-01T10:00:00.\uff15Z",                   # fullwidth fraction digit
    "\u0662\u0660\u0662\u0666-12-01T10:00:00Z",      # Arabic-Indic year
    "2026-12-01T1\u09e6:00:00Z",                     # a Bengali zero in the hour
    " 2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z\n",
    "2026-12-01T10:00:00.1234567890Z",               # more than Go's nine digits
    "2026-12-01T10:00:00+24:00", "2026-12-01T10:00:00", "",
])
def test_starts_at_that_is_not_ascii_rfc3339_is_refused(starts_at: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_notification(with_alert(startsAt=starts_at))
    assert info.value.status == 422 and "startsAt" in str(info.value)


def _written(moment: datetime, offset_minutes: int, digits: int, sep: str, zulu: str) -> str:
    """``moment`` written in another offset, fraction padding, separator and zone spelling."""
    local = moment + timedelta(minutes=offset_minutes)
    text = local.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    nanos = f"{moment.microsecond * 1000:09d}"
    fraction = nanos.rstrip("0")
    if fraction or digits:
        text += "." + (fraction.ljust(digits, "0") if len(fraction) <= digits else nanos)
    if offset_minutes == 0 and zulu:
        return text + zulu
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


_moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.just(UTC))
_spellings = st.tuples(st.integers(-23 * 60 - 59, 23 * 60 + 59), st.integers(0, 9),
                       st.sampled_from(["T", "t", " "]), st.sampled_from(["Z", "z", ""]))


@PROPERTY
@given(_moments, _spellings, _spellings, st.integers(1, 10**9))
def test_one_instant_however_written_is_one_occurrence(
        moment: datetime, one: tuple[int, int, str, str], two: tuple[int, int, str, str],
        shift_ns: int) -> None:
    names = set()
    for spelling in (one, two):
        alert = parse_notification(with_alert(startsAt=_written(moment, *spelling))).alerts[0]
        assert alert.starts_ns == int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
        names.add(occurrence_name("rb", alert.fingerprint, alert.starts_ns))
    assert len(names) == 1
    assert occurrence_name("rb", "3f2c4a1b9e8d7c6a", alert.starts_ns + shift_ns) not in names


# -- fingerprints -------------------------------------------------------------------------


def test_an_upper_case_fingerprint_is_the_same_occurrence_and_label() -> None:
    lower = parse_notification(with_alert(fingerprint="3f2c4a1b9e8d7c6a"))
    upper = parse_notification(with_alert(fingerprint="3F2C4A1B9E8D7C6A"))
    t = trigger()
    (a,) = decide(lower, lower.alerts[0], [t])
    (b,) = decide(upper, upper.alerts[0], [t])
    assert isinstance(a, Start) and isinstance(b, Start)
    assert a.name == b.name
    assert execution_manifest(b, upper)["metadata"]["labels"][
        "runbooks.dev/alert-fingerprint"] == "3f2c4a1b9e8d7c6a"


@pytest.mark.parametrize("fingerprint", [
    " 3f2c", "3f2c\n", "3f2c\x00", "\uff13f2c", "0x3f2c", "3f-2c", "f" * 64, 12, None,
])
def test_weird_fingerprints_are_refused(fingerprint: Any) -> None:
    with pytest.raises(PayloadError) as info:
        parse_notification(with_alert(fingerprint=fingerprint))
    assert info.value.status == 422 and "fingerprint" in str(info.value)


# -- size ---------------------------------------------------------------------------------


def test_ten_thousand_alerts_parse_and_one_more_is_413() -> None:
    one = payload()["alerts"][0]
    many = [{**one, "fingerprint": f"{i:x}"} for i in range(MAX_ALERTS)]
    n = parse_notification(raw(payload(alerts=many)))
    assert len(n.alerts) == MAX_ALERTS
    with pytest.raises(PayloadError) as info:
        parse_notification(raw(payload(alerts=[*many, one])))
    assert info.value.status == 413


def test_the_same_alert_twice_in_one_post_names_one_occurrence() -> None:
    one = payload()["alerts"][0]
    twin = {**one, "startsAt": "2026-12-01T21:21:34.123456789+01:00",
            "fingerprint": one["fingerprint"].upper()}
    n = parse_notification(raw(payload(alerts=[one, twin])))
    names = {d.name for a in n.alerts for d in decide(n, a, [trigger()])
             if isinstance(d, Start)}
    assert len(names) == 1


# -- an object that took the occurrence's name -----------------------------------------


def _ours() -> dict[str, Any]:
    n = parse_notification(raw(payload()))
    (start,) = decide(n, n.alerts[0], [trigger()])
    assert isinstance(start, Start)
    return execution_manifest(start, n)


FP, STARTS = "3f2c4a1b9e8d7c6a", parse_notification(raw(payload())).alerts[0].starts_ns


def test_the_receivers_own_run_is_recognised_however_startsat_is_written() -> None:
    body = _ours()
    assert started_by_alert(body, "high-memory-usage", FP, STARTS)
    assert started_by_alert(body, "high-memory-usage", FP.upper())
    body["spec"]["triggeredBy"]["alert"]["startsAt"] = "2026-12-01T21:21:34.123456789+01:00"
    assert started_by_alert(body, "high-memory-usage", FP, STARTS)
    # What the store keeps of a finished run is enough to tell.
    assert started_by_alert(slim_finished_execution({**body, "status": {
        "phase": "Succeeded"}}), "high-memory-usage", FP, STARTS)


@pytest.mark.parametrize("change", [
    "manual", "other runbook", "other fingerprint", "other instant", "schedule",
    "no spec", "spec not an object", "alert not an object"])
def test_a_same_named_object_the_alert_did_not_start_is_not_its_run(change: str) -> None:
    body = _ours()
    spec = body["spec"]
    if change == "manual":
        del spec["triggeredBy"]
    elif change == "other runbook":
        spec["runbookRef"]["name"] = "incident-diagnostics"
    elif change == "other fingerprint":
        spec["triggeredBy"]["alert"]["fingerprint"] = "ffff"
    elif change == "other instant":
        spec["triggeredBy"]["alert"]["startsAt"] = "2026-12-01T20:21:34.123456788Z"
    elif change == "schedule":
        spec["triggeredBy"] = {"kind": "Schedule", "alert": spec["triggeredBy"]["alert"]}
    elif change == "no spec":
        del body["spec"]
    elif change == "spec not an object":
        body["spec"] = ["x"]
    else:
        spec["triggeredBy"]["alert"] = "HighMemoryUsage"
    assert not started_by_alert(body, "high-memory-usage", FP, STARTS)
    slim = slim_finished_execution({**body, "status": {"phase": "Failed"}})
    assert not started_by_alert(slim, "high-memory-usage", FP, STARTS)


# -- what an alert's execution may take in etcd ------------------------------------------


def _fat(char: str = "<") -> dict[str, Any]:
    """~600 KB of labels (under the 1 MiB body cap) that Go writes six times larger."""
    body = payload()
    size = 16_000 if char.isascii() else 2_600     # \uXXXX on the wire: six bytes
    body["alerts"][0]["labels"].update({f"l{i:02d}": char * size for i in range(38)})
    return body


def test_stored_size_counts_gos_html_escapes() -> None:
    assert stored_size({"a": "x"}) == len('{"a":"x"}')
    assert stored_size({"a": "<&>"}) == len('{"a":"<&>"}') + 15
    assert stored_size("é\u2028") == len('"é"'.encode()) + 3 + 5


@pytest.mark.parametrize("char", ["<", "x", "\u2028", "é"])
def test_fat_labels_are_recorded_cut_short_and_the_execution_fits(char: str) -> None:
    body = _fat(char)
    assert len(raw(body)) < 1 << 20
    n = parse_notification(raw(body))
    (start,) = decide(n, n.alerts[0], [trigger(params={"service": "alert.labels.service"})])
    assert isinstance(start, Start)
    manifest = execution_manifest(start, n)
    assert stored_size(manifest) <= MAX_EXECUTION_BYTES
    recorded = manifest["spec"]["triggeredBy"]["alert"]["labels"]
    assert stored_size(recorded) <= RECORDED_LABELS_BYTES
    assert recorded["alertname"] == "HighMemoryUsage" and recorded["severity"] == "critical"
    assert manifest["spec"]["params"] == {"service": "api"}


def test_small_labels_are_recorded_whole() -> None:
    n = parse_notification(raw(payload()))
    (start,) = decide(n, n.alerts[0], [trigger()])
    assert isinstance(start, Start)
    labels = execution_manifest(start, n)["spec"]["triggeredBy"]["alert"]["labels"]
    assert labels == payload()["alerts"][0]["labels"]


@pytest.mark.parametrize("source", ["alert.labels", "alert.labels.l00 + alert.labels.l01"])
def test_params_too_large_to_store_make_the_alert_invalid(source: str) -> None:
    n = parse_notification(raw(_fat()))
    (d,) = decide(n, n.alerts[0], [trigger(params={"x": source})])
    assert isinstance(d, Invalid)
    assert "bytes stored" in d.reason and str(MAX_PARAMS_BYTES) in d.reason
