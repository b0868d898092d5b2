"""Notifications' pure core (engine/notify.py): what is owed, what it says, retry verdicts.

Cases:
- happened: nothing for a Pending run; Started once running; WaitingForApproval and
  StepFailed per step; CircuitOpened for a step refused by an open circuit; the end
  phase; the same list for the same status (restart-safe);
- owed: only entries listening for the event; keys stable per (uid, entry, channel,
  event, step) and different otherwise; events older than an hour when first seen
  are not owed, newer ones are;
- Slack: Block Kit header/section/context, the failed step, the duration, the
  describe command; WaitingForApproval names approvers and the approve command;
- PagerDuty: trigger with the severity mapped (SEV1 critical, SEV2 error, SEV3
  warning, SEV4 info, none warning), custom_details with the step table; resolve on
  Succeeded with the same dedup_key; per alert fingerprint when an alert started it;
- webhook: schema version, idempotency key, event; HMAC-SHA256 signature verifies
  and fails for another body or secret; encoding is deterministic;
- classify: 2xx delivered, 5xx/429/no answer retried, other 4xx final;
  Retry-After in seconds, as an HTTP date, capped, garbage ignored;
- hostile inputs: a step message (or reason, or approver) with mrkdwn fences,
  ``<!channel>``, links and ``&`` is escaped and stays in its code block; a 100 KB
  message of any character, and any hypothesis text, gives a payload within Slack's
  limits (header 150, field 2000, text 3000) that is valid JSON; URLs that are not
  http(s), have no host, a bad port, whitespace or control characters, or name a
  link-local/metadata/unspecified/multicast address are refused without quoting
  the URL; loopback, private and cluster names are allowed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.notify import (
    WEBHOOK_SCHEMA_VERSION,
    Delivery,
    blocked_address,
    classify,
    context_of,
    delivery_key,
    encode,
    happened,
    owed,
    pagerduty_payload,
    retry_after,
    signature,
    slack_payload,
    url_problem,
    verify,
    webhook_payload,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FROZEN = {"steps": [{"name": "probe", "image": "x"},
                    {"name": "approve", "type": "approval",
                     "approval": {"approvers": {"users": ["alice"], "groups": ["sre"]}}}]}


def status(phase: str = "Running", **steps: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"phase": phase, "startedAt": "2026-12-01T11:58:00.000Z",
                            "steps": steps, "runbookSpec": FROZEN}
    if phase in ("Succeeded", "Failed", "Cancelled"):
        body["finishedAt"] = "2026-12-01T11:59:30.000Z"
    return body


def execution(st: dict[str, Any], severity: str | None = "SEV2",
              alert: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"runbookRef": {"name": "recover"}}
    if severity:
        spec["severity"] = severity
    if alert:
        spec["triggeredBy"] = {"kind": "Alert", "alert": alert}
    return {"metadata": {"name": "recover-x1", "namespace": "ops", "uid": "u-1"},
            "spec": spec, "status": st}


def test_happened() -> None:
    assert happened({"phase": "Pending"}) == []
    events = [(h.event, h.subject) for h in happened(status(
        "Failed", probe={"phase": "Failed", "finishedAt": "2026-12-01T11:59:00Z"},
        approve={"phase": "WaitingForApproval", "startedAt": "2026-12-01T11:59:00Z"}),
        FROZEN)]
    assert events == [("Started", ""), ("WaitingForApproval", "approve"),
                      ("StepFailed", "probe"), ("Failed", "")]
    circuit = happened(status("Running", probe={"phase": "Waiting", "reason": "CircuitOpen"}))
    assert ("CircuitOpened", "probe") in [(h.event, h.subject) for h in circuit]
    st = status("Succeeded", probe={"phase": "Succeeded"})
    assert happened(st) == happened(dict(st))


def test_owed_and_keys() -> None:
    notifications = [{"on": ["Failed", "Succeeded"], "slack": {"webhookSecretRef": {}}},
                     {"on": ["Failed"], "pagerduty": {"routingKeySecretRef": {}}},
                     {"on": ["Started"], "webhook": {"urlSecretRef": {}}}]
    st = status("Failed", probe={"phase": "Failed"})
    due = owed("u-1", notifications, st, FROZEN, NOW)
    assert [(d.channel, d.event) for d in due] == [("webhook", "Started"), ("slack", "Failed"),
                                                   ("pagerduty", "Failed")]
    assert due == owed("u-1", notifications, st, FROZEN, NOW)
    assert len({d.key for d in due}) == 3
    assert delivery_key("u-1", 0, "slack", "Failed", "") != \
        delivery_key("u-2", 0, "slack", "Failed", "")
    assert delivery_key("u-1", 0, "slack", "StepFailed", "a") != \
        delivery_key("u-1", 0, "slack", "StepFailed", "b")
    late = NOW + timedelta(hours=2)
    assert owed("u-1", notifications, st, FROZEN, late, first_seen=late) == []
    early = NOW - timedelta(minutes=5)  # seen before it happened: still owed after an outage
    assert len(owed("u-1", notifications, st, FROZEN, late, first_seen=early)) == 3


def delivery(event: str, subject: str = "", channel: str = "slack") -> Delivery:
    return Delivery(delivery_key("u-1", 0, channel, event, subject), 0, channel, event,
                    subject, NOW)


def test_slack_blocks() -> None:
    body = execution(status("Failed", probe={"phase": "Failed", "reason": "ExitCode",
                                             "message": "exit 3", "attempts": 2}))
    ctx = context_of(body, delivery("Failed"))
    payload = slack_payload(ctx, "key-1")
    assert payload["text"] == "Runbook recover: recover-x1 failed"
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds[0] == "header" and kinds[-1] == "context"
    fields = " ".join(f["text"] for f in payload["blocks"][1]["fields"])
    assert "*Failed step*\nprobe (ExitCode)" in fields and "*Severity*\nSEV2" in fields
    assert "*Duration*\n1m30s" in fields
    assert "kubectl describe rbx recover-x1 -n ops" in \
        payload["blocks"][-1]["elements"][0]["text"]
    approval = context_of(body, delivery("WaitingForApproval", "approve"))
    text = str(slack_payload(approval, "k")["blocks"])
    assert "alice, group:sre" in text
    assert "kubectl runbook approve recover-x1 approve -n ops" in text


@pytest.mark.parametrize(("severity", "expected"), [
    ("SEV1", "critical"), ("SEV2", "error"), ("SEV3", "warning"), ("SEV4", "info"),
    (None, "warning")])
def test_pagerduty(severity: str | None, expected: str) -> None:
    body = execution(status("Failed", probe={"phase": "Failed", "attempts": 3}), severity)
    trigger = pagerduty_payload(context_of(body, delivery("Failed", channel="pagerduty")),
                                "rk", "u-1")
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "rk"
    assert trigger["payload"]["severity"] == expected
    assert trigger["payload"]["custom_details"]["steps"] == [
        {"name": "probe", "phase": "Failed", "attempts": 3, "reason": None}]
    assert set(trigger["payload"]) >= {"summary", "source", "severity"}
    ok = execution(status("Succeeded"), severity)
    resolve = pagerduty_payload(context_of(ok, delivery("Succeeded", channel="pagerduty")),
                                "rk", "u-1")
    assert resolve == {"routing_key": "rk", "event_action": "resolve",
                       "dedup_key": trigger["dedup_key"]}


def test_pagerduty_dedup_per_alert() -> None:
    alert = {"name": "HighMemory", "fingerprint": "abc"}
    one = execution(status("Failed"), alert=alert)
    two = execution(status("Succeeded"), alert=alert)
    two["metadata"] = {"name": "recover-x2", "namespace": "ops", "uid": "u-2"}
    a = pagerduty_payload(context_of(one, delivery("Failed")), "rk", "u-1")
    b = pagerduty_payload(context_of(two, delivery("Succeeded")), "rk", "u-2")
    assert a["dedup_key"] == b["dedup_key"]
    c = pagerduty_payload(context_of(execution(status("Failed")), delivery("Failed")),
                          "rk", "u-3")
    assert c["dedup_key"] != a["dedup_key"]


def test_webhook_and_signature() -> None:
    body = execution(status("Failed", probe={"phase": "Failed"}))
    d = delivery("Failed", channel="webhook")
    doc = webhook_payload(context_of(body, d), d, NOW)
    assert doc["schemaVersion"] == WEBHOOK_SCHEMA_VERSION
    assert doc["idempotencyKey"] == d.key and doc["event"] == "Failed"
    assert doc["execution"]["failedStep"] == "probe"
    raw = encode(doc)
    assert raw == encode(dict(reversed(list(doc.items()))))
    sig = signature(b"k3y", raw)
    assert sig.startswith("sha256=") and verify(b"k3y", raw, sig)
    assert not verify(b"other", raw, sig) and not verify(b"k3y", raw + b" ", sig)


def test_classify_and_retry_after() -> None:
    assert [classify(s) for s in (200, 202, 204)] == ["delivered"] * 3
    assert [classify(s) for s in (500, 502, 503, 429, None)] == ["retry"] * 5
    assert [classify(s) for s in (400, 401, 403, 404, 410, 413, 301)] == ["final"] * 7
    assert retry_after("3", NOW) == 3.0
    assert retry_after("Tue, 01 Dec 2026 12:00:10 GMT", NOW) == 10.0
    assert retry_after("100000", NOW) == 300.0
    assert retry_after("soon", NOW) is None and retry_after(None, NOW) is None
    assert retry_after("-5", NOW) == 0.0
    assert retry_after("nan", NOW) is None


# -- hostile inputs: Slack mrkdwn and limits, URLs ----------------------------------------


def _mrkdwn_texts(payload: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(kind, text, Slack's limit) of every text object of a Slack message."""
    found = [("text", payload["text"], 3000)]
    for block in payload["blocks"]:
        if block["type"] == "header":
            found.append(("header", block["text"]["text"], 150))
        for field in block.get("fields") or []:
            found.append(("field", field["text"], 2000))
        if block["type"] == "section" and "text" in block:
            found.append(("section", block["text"]["text"], 3000))
        for element in block.get("elements") or []:
            found.append(("context", element["text"], 3000))
    return found


def _assert_valid_slack(payload: dict[str, Any]) -> None:
    import json as _json
    assert _json.loads(encode(payload)) == payload
    for kind, text, limit in _mrkdwn_texts(payload):
        assert 0 < len(text) <= limit, (kind, len(text))
        if kind != "header":  # plain_text is not parsed
            assert "<" not in text and ">" not in text, (kind, text[:200])


def test_slack_step_message_cannot_inject_mrkdwn() -> None:
    hostile = "```\n<!channel> <https://evil.example|click here> & <@U123>\n```*bold*"
    body = execution(status("Failed", probe={"phase": "Failed", "reason": "<!here>",
                                             "message": hostile}))
    payload = slack_payload(context_of(body, delivery("StepFailed", "probe")), "k")
    _assert_valid_slack(payload)
    [block] = [b for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    text = block["text"]["text"]
    assert text.startswith("```") and text.endswith("```") and text.count("```") == 2
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    fields = " ".join(f["text"] for f in payload["blocks"][1]["fields"])
    assert "probe (&lt;!here&gt;)" in fields


def test_slack_approvers_are_escaped() -> None:
    frozen = {"steps": [{"name": "approve", "type": "approval", "approval": {
        "approvers": {"users": ["<!channel>"], "groups": ["a&b"]}}}]}
    st = status("WaitingForApproval", approve={"phase": "WaitingForApproval",
                                               "startedAt": "2026-12-01T11:59:00Z"})
    st["runbookSpec"] = frozen
    payload = slack_payload(context_of(execution(st), delivery("WaitingForApproval",
                                                               "approve")), "k")
    _assert_valid_slack(payload)
    assert "&lt;!channel&gt;, group:a&amp;b" in str(payload["blocks"])


def test_slack_100kb_message_stays_within_limits() -> None:
    for chunk in ("x", "&", "<>", "`", "é", "🚨"):
        huge = chunk * (100_000 // len(chunk))
        st = status("Failed", probe={"phase": "Failed", "message": huge})
        st["message"] = f"step 'probe' failed: {huge}"
        for event, subject in (("Failed", ""), ("StepFailed", "probe")):
            payload = slack_payload(context_of(execution(st), delivery(event, subject)), "k")
            _assert_valid_slack(payload)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=5000), st.text(max_size=300))
def test_slack_any_message_gives_a_valid_payload(message: str, reason: str) -> None:
    st = status("Failed", probe={"phase": "Failed", "message": message, "reason": reason})
    st["message"] = message
    body = execution(st)
    for event, subject in (("Failed", ""), ("StepFailed", "probe")):
        payload = slack_payload(context_of(body, delivery(event, subject)), "k")
        _assert_valid_slack(payload)
        for block in payload["blocks"]:
            if block["type"] == "section" and "text" in block:
                assert block["text"]["text"].count("```") == 2


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:70/", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("hooks.slack.com/services/T0/B0/X", "only http and https"),
    ("", "only http and https"),
    ("http://", "no host"),
    ("https://:443/x", "no host"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://example.com:99999/", "does not parse"),
    ("http://example.com/a b", "whitespace"),
    ("http://example.com/\r\nX-Injected: 1", "control characters"),
])
def test_url_refused(url: str, why: str) -> None:
    problem = url_problem(url)
    assert problem is not None and why in problem
    assert url[8:] == "" or url[8:] not in problem  # never quotes the URL


@pytest.mark.parametrize("url", [
    "https://hooks.slack.com/services/T0/B0/X", "http://127.0.0.1:8080/hook",
    "HTTPS://events.pagerduty.com/v2/enqueue", "http://10.0.0.7/in",
    "http://receiver.ops.svc.cluster.local:9000/x", "http://user:pw@[::1]:80/",
])
def test_url_allowed(url: str) -> None:
    assert url_problem(url) is None
    assert not blocked_address("127.0.0.1") and blocked_address("169.254.169.254")


def test_slack_approve_command_is_the_plugins() -> None:
    """The command Slack shows for WaitingForApproval parses as the plugin's approve."""
    import re
    import shlex

    from runbook_operator.cli.kubectl_plugin import build_parser
    st = status("WaitingForApproval", approve={"phase": "WaitingForApproval",
                                               "startedAt": "2026-12-01T11:59:00Z"})
    payload = slack_payload(context_of(execution(st), delivery("WaitingForApproval",
                                                               "approve")), "k")
    [command] = re.findall(r"`(kubectl runbook approve [^`]*)`", str(payload["blocks"]))
    words = shlex.split(command)
    assert words[:2] == ["kubectl", "runbook"]
    args = build_parser().parse_args(words[2:])
    assert (args.decision, args.execution, args.step, args.namespace) == (
        "Approve", "recover-x1", "approve", "ops")


def test_summary_window_is_bounded() -> None:
    """A day-long storm window would hold Slack messages in memory past MAX_AGE, so a
    restart meanwhile would drop them for good: the window is at most 15 minutes."""
    from runbook_operator.engine.notify import MAX_AGE, summary_window
    assert summary_window(None) == 60.0
    assert summary_window("20s") == 20.0
    assert summary_window("24h") == summary_window("720h") == 900.0 < MAX_AGE.total_seconds()
    assert summary_window("soon") == 60.0


def test_pagerduty_resumed_run_resolves_its_sources_incident() -> None:
    """`kubectl runbook retry` makes a Manual run with spec.resumeFrom: its success
    resolves the incident the failed source opened, per execution or per alert."""
    from runbook_operator.engine.notify import incident_key_of
    for alert in (None, {"name": "HighMemory", "fingerprint": "abc"}):
        source = execution(status("Failed", probe={"phase": "Failed"}), alert=alert)
        trigger = pagerduty_payload(context_of(source, delivery("Failed")), "rk", "u-1")
        retry = execution(status("Succeeded"))  # Manual: no alert of its own
        retry["metadata"] = {"name": "recover-x9", "namespace": "ops", "uid": "u-9"}
        retry["status"]["resumedFrom"] = {"execution": "recover-x1",
                                          "incidentKey": incident_key_of(source)}
        resolve = pagerduty_payload(context_of(retry, delivery("Succeeded")), "rk", "u-9")
        assert resolve["dedup_key"] == trigger["dedup_key"], alert
        # Without the chain it would be an incident of its own.
        del retry["status"]["resumedFrom"]
        alone = pagerduty_payload(context_of(retry, delivery("Succeeded")), "rk", "u-9")
        assert alone["dedup_key"] != trigger["dedup_key"]


def test_storm_decisions() -> None:
    """The first summarizeAfter end-of-run messages of a window go one by one, the rest
    are held for its summary; a window that ended with nothing held is replaced; 0 never
    holds; summarizeAfter defaults to the API's 5, also when it is not a count."""
    from runbook_operator.engine.notify import StormWindow, storm_decision, summarize_after

    window, hold = storm_decision(None, 100.0, 2, 60.0)
    assert (window, hold) == (StormWindow(100.0, 1, False), False)
    window, hold = storm_decision(window, 101.0, 2, 60.0)
    assert (window.sent, hold) == (2, False)
    window, hold = storm_decision(window, 102.0, 2, 60.0)
    assert (window, hold) == (StormWindow(100.0, 2, True), True)
    window, hold = storm_decision(window, 170.0, 2, 60.0)  # ended, but holding: same window
    assert (window.started, hold) == (100.0, True)
    fresh, hold = storm_decision(StormWindow(100.0, 2, False), 170.0, 2, 60.0)
    assert (fresh, hold) == (StormWindow(170.0, 1, False), False)
    assert storm_decision(None, 1.0, 0, 60.0)[1] is False
    assert summarize_after({}) == 5 and summarize_after({"summarizeAfter": "x"}) == 5
    assert summarize_after({"summarizeAfter": True}) == 5
    assert summarize_after({"summarizeAfter": 0}) == 0
