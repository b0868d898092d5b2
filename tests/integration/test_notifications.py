"""Notifications end to end: the operator process, the local control plane, real sinks.

The sinks are aiohttp servers on 127.0.0.1 (in a thread) speaking Slack's incoming
webhook, PagerDuty's Events API v2 (the operator pointed at it with
``$RUNBOOK_PAGERDUTY_URL``) and a signed webhook; credentials come from Secrets in
the test namespace. The session's operator is replaced by one with that setting.

Cases:
- a succeeding run: Slack gets Started and Succeeded as Block Kit messages,
  PagerDuty a resolve, the webhook a signed document that verifies; every record
  Delivered with 1 attempt; the Secrets' values appear nowhere in the status;
- a failing run: PagerDuty trigger with severity critical (SEV1) and the step table,
  then a later succeeding run for the same alert resolves the same dedup_key;
- a Slack sink answering 500 twice then 200: delivered once, 3 attempts recorded;
  a sink answering 400: Failed, final, a NotificationFailed Event, the run Succeeded;
  the secret URL (a canary) in no status, Event or log line;
- the operator SIGKILLed 10 times while 20 runs' deliveries are pending (a slow
  sink): every due notification delivered, each (execution, event) under one
  idempotency key, none lost;
- a storm: 8 runs finishing together with summarizeAfter 2: two Slack messages one
  by one, the rest in a summary; every record Delivered;
- a sink that hangs past the operator's 10 s timeout on its first request: the run
  finishes meanwhile (Succeeded, the delivery not yet made), then the request is
  retried with the same idempotency key and Delivered after 2 attempts;
- hostile destinations: a webhook URL Secret naming the metadata address
  169.254.169.254, a file: URL, a missing Secret and a missing key: each Failed
  with 0 attempts and a reason, a NotificationFailed Event, nothing sent, the run
  Succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kube import Kube, step, wait_for

from operator_process import OperatorProcess
from runbook_operator.engine.notify import SIGNATURE_HEADER, verify

pytestmark = pytest.mark.integration


class Sinks:
    """One aiohttp server in a thread; per path a script of answers and the requests."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Any]] = {}
        self.delay: dict[str, float] = {}
        self.first_delay: dict[str, float] = {}
        """Seconds the first request to a path is held before its answer."""
        self.requests: dict[str, list[tuple[dict[str, str], bytes]]] = defaultdict(list)
        self.answered: dict[str, list[tuple[str | None, int]]] = defaultdict(list)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = await request.read()
        self.requests[path].append((dict(request.headers), body))
        if self.delay.get(path):
            await asyncio.sleep(self.delay[path])
        if len(self.requests[path]) == 1 and self.first_delay.get(path):
            await asyncio.sleep(self.first_delay[path])
        script = self.scripts.get(path) or [200]
        answer = script.pop(0) if len(script) > 1 else script[0]
        self.answered[path].append((request.headers.get("Idempotency-Key"), answer))
        return web.Response(status=answer)

    def answers(self, path: str) -> list[tuple[str | None, int]]:
        """(idempotency key, status answered) of each request to ``path``, in order."""
        return list(self.answered[path])

    def __enter__(self) -> Sinks:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(b) for _, b in self.requests[path]]


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    with Sinks() as s:
        yield s


@pytest.fixture
def notifying(kube: Kube, cluster: Any, operator: OperatorProcess, sinks: Sinks,
              tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator whose PagerDuty endpoint is the local sink; the session's waits."""
    proc = OperatorProcess(cluster.kubeconfig, tmp_path / "notifying",
                           env={"RUNBOOK_PAGERDUTY_URL": sinks.url("/pd")})
    operator.stop()
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        operator.start()


def secret(kube: Kube, name: str, data: dict[str, str]) -> None:
    kube.core.create_namespaced_secret(kube.ns, {
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def records(kube: Kube, name: str) -> list[dict[str, Any]]:
    return list((kube.execution(name).get("status") or {}).get("notifications") or [])


def all_final(kube: Kube, name: str, count: int) -> list[dict[str, Any]] | None:
    found = records(kube, name)
    done = [r for r in found if r["state"] in ("Delivered", "Failed")]
    return found if len(done) >= count else None


QUICK = [{"name": "tick", "type": "wait", "wait": {"duration": "100ms"}}]


def test_shapes_of_each_channel(kube: Kube, sinks: Sinks, notifying: OperatorProcess) -> None:
    secret(kube, "slack", {"url": sinks.url("/slack/T0/B0/XOXSECRET")})
    secret(kube, "pd", {"routing-key": "PDROUTINGKEY0001"})
    secret(kube, "hooks", {"url": sinks.url("/hook"), "hmac": "HMACSECRET"})
    kube.ready_runbook("notified", {"steps": QUICK, "notifications": [
        {"on": ["Started", "Succeeded"],
         "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}},
        {"on": ["Failed", "Succeeded"],
         "pagerduty": {"routingKeySecretRef": {"name": "pd", "key": "routing-key"}}},
        {"on": ["Succeeded"], "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"},
                                          "signingSecretRef": {"name": "hooks",
                                                               "key": "hmac"}}}]})
    kube.execute("notified-1", "notified", severity="SEV2")
    kube.wait_finished("notified-1")
    found = wait_for("4 deliveries", lambda: all_final(kube, "notified-1", 4), timeout=60)
    assert {(r["channel"], r["event"], r["state"], r["attempts"]) for r in found} == {
        ("slack", "Started", "Delivered", 1), ("slack", "Succeeded", "Delivered", 1),
        ("pagerduty", "Succeeded", "Delivered", 1), ("webhook", "Succeeded", "Delivered", 1)}
    slack = sinks.bodies("/slack/T0/B0/XOXSECRET")
    assert sorted(m["text"] for m in slack) == ["Runbook notified: notified-1 started",
                                                "Runbook notified: notified-1 succeeded"]
    by_id = {r["id"]: r for r in found}
    for (headers, _), message in zip(sinks.requests["/slack/T0/B0/XOXSECRET"], slack,
                                     strict=True):
        # Slack's incoming-webhook shape: text, then header, fields section, the
        # execution's message (if any) as a section, context.
        assert set(message) == {"text", "blocks"}
        kinds = [b["type"] for b in message["blocks"]]
        assert kinds[:2] == ["header", "section"] and kinds[-1] == "context"
        assert set(kinds[2:-1]) <= {"section"} and len(kinds) <= 4, kinds
        assert message["blocks"][0]["text"] == {"type": "plain_text",
                                                "text": message["text"]}
        labels = [f["text"].split("\n")[0] for f in message["blocks"][1]["fields"]]
        assert labels[:4] == ["*Runbook*", "*Execution*", "*Phase*", "*Severity*"]
        assert "*Severity*\nSEV2" in [f["text"] for f in message["blocks"][1]["fields"]]
        context = message["blocks"][-1]["elements"][0]["text"]
        assert f"kubectl describe rbx notified-1 -n {kube.ns}" in context
        assert headers["Idempotency-Key"] in by_id and headers["Idempotency-Key"] in context
    done = next(m for m in slack if m["text"].endswith("succeeded"))
    assert "*Duration*" in str(done["blocks"][1]["fields"])
    assert done["blocks"][2]["text"] == {"type": "mrkdwn", "text": "```all steps finished```"}
    [resolve] = sinks.bodies("/pd")
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}
    assert resolve["event_action"] == "resolve" and resolve["routing_key"] == "PDROUTINGKEY0001"
    [(headers, raw)] = sinks.requests["/hook"]
    assert verify(b"HMACSECRET", raw, headers[SIGNATURE_HEADER])
    doc = json.loads(raw)
    assert set(doc) == {"schemaVersion", "idempotencyKey", "event", "subject", "sentAt",
                        "occurredAt", "execution"}
    assert (doc["schemaVersion"], doc["event"], doc["subject"]) == (
        "runbooks.dev/notification/v1", "Succeeded", None)
    assert doc["idempotencyKey"] == headers["Idempotency-Key"]
    assert set(doc["execution"]) == {"namespace", "name", "runbook", "phase", "severity",
                                     "reason", "message", "failedStep", "startedAt",
                                     "finishedAt", "steps"}
    assert (doc["execution"]["name"], doc["execution"]["phase"],
            doc["execution"]["severity"]) == ("notified-1", "Succeeded", "SEV2")
    assert doc["execution"]["steps"] == [{"name": "tick", "phase": "Succeeded",
                                          "attempts": doc["execution"]["steps"][0]["attempts"],
                                          "reason": doc["execution"]["steps"][0]["reason"]}]
    text = json.dumps(kube.execution("notified-1"))
    for value in ("XOXSECRET", "PDROUTINGKEY0001", "HMACSECRET"):
        assert value not in text
    assert value not in notifying.log_path.read_text()


def test_pagerduty_trigger_then_resolve(kube: Kube, sinks: Sinks,
                                        notifying: OperatorProcess) -> None:
    secret(kube, "pd", {"routing-key": "RK"})
    kube.ready_runbook("recover", {
        "params": [{"name": "fail", "type": "boolean", "default": False}],
        "steps": [step("probe", exit_code=3, when="params.fail")],
        "notifications": [{"on": ["Failed", "Succeeded"], "pagerduty": {
            "routingKeySecretRef": {"name": "pd", "key": "routing-key"}}}]})
    alert = {"kind": "Alert", "alert": {"name": "HighMemory", "fingerprint": "f00d"}}
    kube.execute("recover-1", "recover", {"fail": True}, severity="SEV1", triggeredBy=alert)
    assert kube.wait_finished("recover-1")["status"]["phase"] == "Failed"
    wait_for("trigger", lambda: all_final(kube, "recover-1", 1), timeout=60)
    [trigger] = sinks.bodies("/pd")
    # Events API v2: routing_key, event_action, dedup_key and a payload with summary,
    # source and severity (required) plus the optional fields.
    assert set(trigger) == {"routing_key", "event_action", "dedup_key", "payload"}
    assert set(trigger["payload"]) == {"summary", "source", "severity", "component", "group",
                                       "class", "custom_details"}
    assert trigger["event_action"] == "trigger" and trigger["routing_key"] == "RK"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == f"{kube.ns}/recover-1"
    assert trigger["payload"]["custom_details"]["failed_step"] == "probe"
    [row] = trigger["payload"]["custom_details"]["steps"]
    assert (row["name"], row["phase"]) == ("probe", "Failed")
    # A later run for the same alert succeeds: it resolves the same incident.
    kube.execute("recover-2", "recover", {"fail": False}, severity="SEV1", triggeredBy=alert)
    assert kube.wait_finished("recover-2")["status"]["phase"] == "Succeeded"
    wait_for("resolve", lambda: all_final(kube, "recover-2", 1), timeout=60)
    resolve = sinks.bodies("/pd")[-1]
    assert resolve == {"routing_key": "RK", "event_action": "resolve",
                       "dedup_key": trigger["dedup_key"]}


def test_retries_and_final_failures(kube: Kube, sinks: Sinks,
                                    notifying: OperatorProcess) -> None:
    sinks.scripts["/flaky"] = [500, 500, 200]
    sinks.scripts["/refuses/canary-4f1c"] = [400]
    secret(kube, "hooks", {"flaky": sinks.url("/flaky"),
                           "refuses": sinks.url("/refuses/canary-4f1c")})
    kube.ready_runbook("retried", {"steps": QUICK, "notifications": [
        {"on": ["Succeeded"], "slack": {"webhookSecretRef": {"name": "hooks", "key": "flaky"}}},
        {"on": ["Succeeded"], "webhook": {"urlSecretRef": {"name": "hooks",
                                                           "key": "refuses"}}}]})
    kube.execute("retried-1", "retried")
    assert kube.wait_finished("retried-1")["status"]["phase"] == "Succeeded"
    found = wait_for("both final", lambda: all_final(kube, "retried-1", 2), timeout=90)
    by = {r["channel"]: r for r in found}
    assert (by["slack"]["state"], by["slack"]["attempts"]) == ("Delivered", 3)
    assert (by["webhook"]["state"], by["webhook"]["attempts"]) == ("Failed", 1)
    assert len(sinks.requests["/flaky"]) == 3
    assert len(sinks.requests["/refuses/canary-4f1c"]) == 1
    failed = wait_for("a NotificationFailed Event", lambda: [
        e for e in kube.events("retried-1") if e.reason == "NotificationFailed"] or None,
        timeout=30)
    assert kube.execution("retried-1")["status"]["phase"] == "Succeeded"
    # The secret URL (the canary) is in no status, Event or log line.
    status = json.dumps({k: v for k, v in kube.execution("retried-1")["status"].items()
                         if k != "runbookSpec"})
    for where, text in (("status", status), ("Events", str([e.message for e in failed])),
                        ("logs", notifying.log_path.read_text())):
        assert "canary-4f1c" not in text, f"the URL canary is in the {where}"


def test_sigkill_while_deliveries_are_pending(kube: Kube, sinks: Sinks,
                                              notifying: OperatorProcess) -> None:
    sinks.delay["/slow"] = 1.5  # every delivery in flight for a while
    secret(kube, "hooks", {"url": sinks.url("/slow")})
    kube.ready_runbook("storm", {"steps": QUICK, "notifications": [
        {"on": ["Started", "Succeeded"],
         "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}}]})
    names = [f"storm-{i}" for i in range(20)]
    for name in names:
        kube.execute(name, "storm")
    for _ in range(10):
        time.sleep(1.0)
        notifying.kill()
        notifying.start()
    for name in names:
        wait_for(f"{name} delivered", lambda n=name: all_final(kube, n, 2), timeout=180)
    keys_by_event: dict[tuple[str, str], set[str]] = defaultdict(set)
    for headers, raw in sinks.requests["/slow"]:
        doc = json.loads(raw)
        assert doc["idempotencyKey"] == headers["Idempotency-Key"]
        keys_by_event[(doc["execution"]["name"], doc["event"])].add(doc["idempotencyKey"])
    assert set(keys_by_event) == {(n, e) for n in names for e in ("Started", "Succeeded")}
    assert all(len(keys) == 1 for keys in keys_by_event.values())
    for name in names:
        assert {r["state"] for r in records(kube, name)} == {"Delivered"}


def test_storm_is_summarised(kube: Kube, sinks: Sinks, notifying: OperatorProcess) -> None:
    secret(kube, "slack", {"url": sinks.url("/storm")})
    kube.ready_runbook("stormy", {"steps": QUICK, "notifications": [
        {"on": ["Succeeded"], "slack": {"webhookSecretRef": {"name": "slack", "key": "url"},
                                        "summarizeAfter": 2, "summaryWindow": "20s"}}]})
    names = [f"stormy-{i}" for i in range(8)]
    for name in names:
        kube.execute(name, "stormy")
    for name in names:
        wait_for(f"{name} notified", lambda n=name: all_final(kube, n, 1), timeout=90)
    texts = [m["text"] for m in sinks.bodies("/storm")]
    singles = [t for t in texts if t.endswith(" succeeded")]
    summaries = [t for t in texts if "runs finished" in t]
    # Two one by one, the rest in summaries (one per window; runs may straddle two).
    assert len(singles) >= 2 and 1 <= len(summaries) <= 2, texts
    assert len(singles) + sum(int(t.split(": ")[1].split()[0]) for t in summaries) == 8
    assert all(r["state"] == "Delivered" for n in names for r in records(kube, n))


def test_hanging_sink_never_holds_the_run(kube: Kube, sinks: Sinks,
                                          notifying: OperatorProcess) -> None:
    sinks.first_delay["/hangs"] = 15.0  # past the operator's 10 s request timeout
    secret(kube, "hooks", {"url": sinks.url("/hangs")})
    kube.ready_runbook("hung", {"steps": QUICK, "notifications": [
        {"on": ["Started"], "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}}]})
    kube.execute("hung-1", "hung")
    wait_for("the first request", lambda: sinks.requests["/hangs"] or None, timeout=60)
    body = kube.wait_finished("hung-1")
    assert body["status"]["phase"] == "Succeeded"
    assert not [r for r in records(kube, "hung-1") if r["state"] == "Delivered"]
    [record] = wait_for("delivered", lambda: all_final(kube, "hung-1", 1), timeout=90)
    assert (record["state"], record["attempts"]) == ("Delivered", 2)
    keys = {headers["Idempotency-Key"] for headers, _ in sinks.requests["/hangs"]}
    assert len(sinks.requests["/hangs"]) == 2 and keys == {record["id"]}


def test_hostile_destinations_fail_clearly(kube: Kube, sinks: Sinks,
                                           notifying: OperatorProcess) -> None:
    secret(kube, "hooks", {"metadata": "http://169.254.169.254/latest/meta-data/",
                           "file": "file:///etc/passwd"})
    refs = [("hooks", "metadata"), ("hooks", "file"), ("absent", "url"), ("hooks", "nokey")]
    kube.ready_runbook("hostile", {"steps": QUICK, "notifications": [
        {"on": ["Succeeded"], "webhook": {"urlSecretRef": {"name": n, "key": k}}}
        for n, k in refs]})
    kube.execute("hostile-1", "hostile")
    assert kube.wait_finished("hostile-1")["status"]["phase"] == "Succeeded"
    found = wait_for("four final", lambda: all_final(kube, "hostile-1", 4), timeout=60)
    errors = sorted(r["lastError"] for r in found)
    assert all(r["state"] == "Failed" and r["attempts"] == 0 for r in found), found
    assert errors == sorted([
        "URL refused: a link-local, metadata, unspecified or multicast address",
        "URL refused: only http and https are allowed",
        "Secret absent (url) not readable: 404 Not Found", "Secret hooks has no key nokey"])
    # Aggregated as Kubernetes' recorder does: one Event, counted four times.
    wait_for("four NotificationFailed occurrences", lambda: sum(
        e.count or 1 for e in kube.events("hostile-1")
        if e.reason == "NotificationFailed") >= 4 or None, timeout=30)
    assert kube.execution("hostile-1")["status"]["phase"] == "Succeeded"
