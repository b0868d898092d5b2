"""Notification delivery (notify/deliver.py) to real HTTP servers on 127.0.0.1.

The sinks are aiohttp servers speaking each wire format; the Kubernetes API is a
stand-in holding one execution (status patches guarded by resourceVersion) and
the Secrets.

Cases:
- Slack: the incoming-webhook body (text + Block Kit blocks), Idempotency-Key;
  the record Delivered with 1 attempt, a NotificationDelivered history entry, the
  metric; nothing sent twice when the same execution is observed again, nor when an
  older event (without the Delivered record) arrives late;
- a sink answering 500 twice then 200: delivered once, 3 attempts recorded, one
  idempotency key on all three requests;
- 400: Failed after 1 attempt, a NotificationFailed Event and history entry, the
  execution's own status untouched otherwise;
- a sink that hangs past the timeout, then answers: retried, delivered;
- 429 with Retry-After: the wait honoured;
- PagerDuty Events v2: trigger on Failed then resolve on a later Succeeded with
  the same dedup_key; severity mapped;
- webhook: schema version, the HMAC-SHA256 signature verifies with the secret;
- restart: a new Notifier resumes a Pending record from its attempt count, and
  sends nothing for a Delivered one;
- a missing Secret key: Failed, nothing sent; secrets (URL path, routing key,
  signing key) appear in no status, Event or log line;
- a storm: six runs of one runbook finishing together with summarizeAfter 2: two
  messages one by one, then one summary of the other four at the window's end,
  every record Delivered;
- hostile destinations: a URL that is not http(s), does not parse, or names a
  link-local/metadata/unspecified address is Failed with 0 attempts and nothing
  sent (the URL in no record or Event); a host name resolving to 169.254.169.254
  is refused at connect while another name resolving to the sink is delivered;
  a redirect (to itself) is not followed: Failed, final, 1 request; integer, hex,
  short and octal spellings of 169.254.169.254 are refused at the first attempt
  (by the client as non-canonical or by the resolver guard), not retried;
- hostile receivers: a 32 MB answer body is not read (Delivered, 1 attempt); a 200
  whose announced body stalls past the timeout is Delivered at 1 attempt (it was a
  timeout, retried: the notification sent four times and Failed); a 2xx
  after the client's timeout is sent again with the same idempotency key; a
  Retry-After that is negative, garbage, a past date, NaN, infinite or huge still
  delivers (capped); with one request slot, a receiver asking to wait does not hold
  back another execution's delivery (requests A, B, A);
- the API server answering 503 to Secret reads beyond one read's retries: the
  delivery resumes later and is Delivered, no NotificationFailed; a missing Secret
  (404): Failed, nothing sent, the execution's phase untouched;
- a delivery recorded Pending before a two-hour outage: too old to send, closed as
  Failed (expired, attempts kept, Event, metric) once, not left Pending forever.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.notify import SIGNATURE_HEADER, verify
from runbook_operator.notify.deliver import Notifier, NotifierSettings
from runbook_operator.observability.metrics import Metrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Sink:
    """An HTTP server on 127.0.0.1 answering from a script; records every request."""

    def __init__(self, answers: list[Any] | None = None) -> None:
        self.answers = list(answers or [200])
        self.requests: list[tuple[dict[str, str], bytes, str]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, request.path))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer == "hang":
            await asyncio.sleep(5)
            return web.Response(status=200)
        if isinstance(answer, tuple):
            return web.Response(status=answer[0], headers=answer[1])
        return web.Response(status=answer, text="ok")

    async def __aenter__(self) -> Sink:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def json(self, i: int = -1) -> Any:
        return json.loads(self.requests[i][1])


class FakeSecret:
    def __init__(self, data: dict[str, str]) -> None:
        self.data = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


class FakeApi:
    """Custom objects (one execution) and core (Secrets) as the notifier calls them."""

    def __init__(self, execution: dict[str, Any], secrets: dict[str, dict[str, str]]) -> None:
        self.execution = execution
        self.secrets = secrets
        self.secret_reads: list[str] = []
        self.rv = 10

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return copy.deepcopy(self.execution)

    def patch_namespaced_custom_object_status(self, group: str, version: str, ns: str,
                                              plural: str, name: str,
                                              body: dict[str, Any]) -> None:
        if body["metadata"]["resourceVersion"] != self.execution["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.execution["status"].update(copy.deepcopy(body["status"]))
        self.rv += 1
        self.execution["metadata"]["resourceVersion"] = str(self.rv)

    def read_namespaced_secret(self, name: str, namespace: str) -> FakeSecret:
        self.secret_reads.append(name)
        if name not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        return FakeSecret(self.secrets[name])

    # Clients has .custom and .core
    @property
    def custom(self) -> FakeApi:
        return self

    @property
    def core(self) -> FakeApi:
        return self


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self.posted.append((reason, message))


def execution(phase: str, notifications: list[dict[str, Any]], severity: str = "SEV1",
              **status: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "phase": phase, "startedAt": _now_text(-60),
        "steps": {"probe": {"phase": "Failed" if phase == "Failed" else "Succeeded",
                            "attempts": 1, "reason": "ExitCode" if phase == "Failed" else None,
                            "message": "exit 3"}},
        "runbookSpec": {"steps": [{"name": "probe", "image": "x"}],
                        "notifications": notifications},
        "history": [], **status}
    if phase in ("Failed", "Succeeded", "Cancelled"):
        st["finishedAt"] = _now_text(0)
    return {"metadata": {"name": "recover-x1", "namespace": "ops", "uid": "uid-1",
                         "resourceVersion": "10"},
            "spec": {"runbookRef": {"name": "recover"}, "severity": severity},
            "status": st}


def _now_text(offset: int) -> str:
    from datetime import UTC, datetime, timedelta
    return (datetime.now(UTC) + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


FAST = NotifierSettings(timeout=0.5, max_attempts=4, backoff_initial=0.05, backoff_max=2.0,
                        jitter=0.01)


async def settle(notifier: Notifier) -> None:
    for _ in range(400):
        if not notifier._tasks:
            await notifier.drain()  # closes the HTTP session; the next send opens one
            return
        await asyncio.sleep(0.02)
    raise AssertionError("deliveries did not finish")


def records(api: FakeApi) -> list[dict[str, Any]]:
    return list(api.execution["status"].get("notifications") or [])


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


SLACK = [{"on": ["Failed"], "slack": {"webhookSecretRef": {"name": "slack", "key": "url"}}}]


def make(api: FakeApi, settings: NotifierSettings = FAST) -> tuple[Notifier, Metrics, FakeEvents]:
    metrics, events = Metrics(), FakeEvents()
    return Notifier(api, metrics, events, settings), metrics, events  # type: ignore[arg-type]


def test_slack_delivered_once() -> None:
    async def main() -> None:
        async with Sink() as sink:
            url = sink.url("/services/T000/B000/SECRETPATH")
            api = FakeApi(execution("Failed", SLACK), {"slack": {"url": url}})
            notifier, metrics, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert len(sink.requests) == 1
            headers, _, path = sink.requests[0]
            body = sink.json()
            assert body["text"] == "Runbook recover: recover-x1 failed"
            assert [b["type"] for b in body["blocks"]][:2] == ["header", "section"]
            assert path == "/services/T000/B000/SECRETPATH"
            [record] = records(api)
            assert headers["Idempotency-Key"] == record["id"]
            assert (record["state"], record["attempts"], record["channel"],
                    record["event"]) == ("Delivered", 1, "slack", "Failed")
            assert api.execution["status"]["history"][-1]["event"] == "NotificationDelivered"
            assert metrics.registry.get_sample_value("runbook_notifications_total", {
                "channel": "slack", "event": "Failed", "outcome": "delivered"}) == 1.0
            notifier.observe(api.execution)
            await settle(notifier)
            assert len(sink.requests) == 1
            # An older event (without the Delivered record) arriving late: not sent again.
            stale = copy.deepcopy(api.execution)
            stale["status"]["notifications"] = []
            notifier.observe(stale)
            await settle(notifier)
            assert len(sink.requests) == 1
            assert "SECRETPATH" not in json.dumps(api.execution["status"])
    run(main())


def test_500_twice_then_200() -> None:
    async def main() -> None:
        async with Sink([500, 503, 200]) as sink:
            api = FakeApi(execution("Failed", SLACK), {"slack": {"url": sink.url("/hook")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert len(sink.requests) == 3
            assert len({h["Idempotency-Key"] for h, _, _ in sink.requests}) == 1
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 3)
    run(main())


def test_400_is_final_and_reported() -> None:
    async def main() -> None:
        async with Sink([400]) as sink:
            api = FakeApi(execution("Failed", SLACK), {"slack": {"url": sink.url("/hook")}})
            phase_before = api.execution["status"]["phase"]
            notifier, metrics, events = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert len(sink.requests) == 1
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Failed", 1)
            assert "HTTP 400" in record["lastError"]
            assert [r for r, _ in events.posted] == ["NotificationFailed"]
            assert api.execution["status"]["history"][-1]["event"] == "NotificationFailed"
            assert api.execution["status"]["phase"] == phase_before
            assert metrics.registry.get_sample_value("runbook_notifications_total", {
                "channel": "slack", "event": "Failed", "outcome": "failed"}) == 1.0
    run(main())


def test_hanging_sink_times_out_and_is_retried() -> None:
    async def main() -> None:
        async with Sink(["hang", 200]) as sink:
            api = FakeApi(execution("Failed", SLACK), {"slack": {"url": sink.url("/hook")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 2)
    run(main())


def test_429_retry_after_is_honoured() -> None:
    async def main() -> None:
        async with Sink([(429, {"Retry-After": "1"}), 200]) as sink:
            api = FakeApi(execution("Failed", SLACK), {"slack": {"url": sink.url("/hook")}})
            notifier, _, _ = make(api)
            loop = asyncio.get_running_loop()
            started = loop.time()
            notifier.observe(api.execution)
            await settle(notifier)
            assert loop.time() - started >= 1.0
            assert records(api)[0]["attempts"] == 2
    run(main())


def test_pagerduty_trigger_then_resolve() -> None:
    async def main() -> None:
        pd = [{"on": ["Failed", "Succeeded"],
               "pagerduty": {"routingKeySecretRef": {"name": "pd", "key": "routing-key"}}}]
        async with Sink([202]) as sink:
            settings = NotifierSettings(**{**FAST.__dict__,
                                           "pagerduty_url": sink.url("/v2/enqueue")})
            alert = {"name": "HighMemory", "fingerprint": "f00"}
            failed = execution("Failed", pd)
            failed["spec"]["triggeredBy"] = {"kind": "Alert", "alert": alert}
            api = FakeApi(failed, {"pd": {"routing-key": "R0UT1NGKEY"}})
            notifier, _, _ = make(api, settings)
            notifier.observe(api.execution)
            await settle(notifier)
            trigger = sink.json()
            assert trigger["event_action"] == "trigger"
            assert trigger["routing_key"] == "R0UT1NGKEY"
            assert trigger["payload"]["severity"] == "critical"
            # A later run for the same alert succeeds: resolve the same incident.
            later = execution("Succeeded", pd)
            later["metadata"]["uid"], later["metadata"]["name"] = "uid-2", "recover-x2"
            later["spec"]["triggeredBy"] = {"kind": "Alert", "alert": alert}
            api2 = FakeApi(later, {"pd": {"routing-key": "R0UT1NGKEY"}})
            notifier2, _, _ = make(api2, settings)
            notifier2.observe(api2.execution)
            await settle(notifier2)
            resolve = sink.json()
            assert resolve == {"routing_key": "R0UT1NGKEY", "event_action": "resolve",
                               "dedup_key": trigger["dedup_key"]}
            assert sink.requests[-1][2] == "/v2/enqueue"
            assert "R0UT1NGKEY" not in json.dumps(api.execution["status"])
    run(main())


def test_webhook_signed() -> None:
    async def main() -> None:
        hook = [{"on": ["Failed"], "webhook": {
            "urlSecretRef": {"name": "hooks", "key": "url"},
            "signingSecretRef": {"name": "hooks", "key": "hmac"}}}]
        async with Sink() as sink:
            api = FakeApi(execution("Failed", hook),
                          {"hooks": {"url": sink.url("/in"), "hmac": "S1GNING"}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            headers, raw, _ = sink.requests[0]
            assert verify(b"S1GNING", raw, headers[SIGNATURE_HEADER])
            doc = json.loads(raw)
            assert doc["schemaVersion"] == "runbooks.dev/notification/v1"
            assert doc["idempotencyKey"] == headers["Idempotency-Key"] == records(api)[0]["id"]
    run(main())


def test_restart_resumes_pending_and_skips_delivered(caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        two = [*SLACK, {"on": ["Failed"], "webhook": {
            "urlSecretRef": {"name": "hooks", "key": "url"}}}]
        async with Sink([500, 200]) as sink:
            api = FakeApi(execution("Failed", two), {"slack": {"url": sink.url("/s")},
                                                     "hooks": {"url": sink.url("/w")}})
            first, _, _ = make(api)
            # What the killed process left: slack Pending after 2 attempts, webhook done.
            from runbook_operator.engine.notify import owed
            due = owed("uid-1", two, api.execution["status"],
                       api.execution["status"]["runbookSpec"], _dt())
            slack, hook = sorted(due, key=lambda d: d.channel)
            api.execution["status"]["notifications"] = [
                {"id": slack.key, "channel": "slack", "event": "Failed", "state": "Pending",
                 "attempts": 2},
                {"id": hook.key, "channel": "webhook", "event": "Failed",
                 "state": "Delivered", "attempts": 1}]
            first.observe(api.execution)
            await settle(first)
            assert [p for _, _, p in sink.requests] == ["/s", "/s"]
            by_channel = {r["channel"]: r for r in records(api)}
            assert (by_channel["slack"]["state"], by_channel["slack"]["attempts"]) == \
                ("Delivered", 4)
            assert by_channel["webhook"]["attempts"] == 1
    run(main())
    assert not [r for r in caplog.records if "127.0.0.1" in r.getMessage()]


def _dt() -> Any:
    from datetime import UTC, datetime
    return datetime.now(UTC)


def test_missing_secret_key_fails_without_sending() -> None:
    async def main() -> None:
        async with Sink() as sink:
            api = FakeApi(execution("Failed", SLACK), {"slack": {"other": "x"}})
            notifier, _, events = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert sink.requests == []
            [record] = records(api)
            assert record["state"] == "Failed" and "no key url" in record["lastError"]
            assert [r for r, _ in events.posted] == ["NotificationFailed"]
    run(main())


class ManyApi(FakeApi):
    """Several executions, by name."""

    def __init__(self, executions: list[dict[str, Any]], secrets: dict[str, dict[str, str]]
                 ) -> None:
        super().__init__(executions[0], secrets)
        self.by_name = {e["metadata"]["name"]: e for e in executions}

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return copy.deepcopy(self.by_name[args[-1]])

    def patch_namespaced_custom_object_status(self, group: str, version: str, ns: str,
                                              plural: str, name: str,
                                              body: dict[str, Any]) -> None:
        self.execution = self.by_name[name]
        super().patch_namespaced_custom_object_status(group, version, ns, plural, name, body)


def test_storm_becomes_one_summary() -> None:
    async def main() -> None:
        storm = [{"on": ["Succeeded", "Failed"], "slack": {
            "webhookSecretRef": {"name": "slack", "key": "url"},
            "summarizeAfter": 2, "summaryWindow": "500ms"}}]
        runs = []
        for i in range(6):
            run_ = execution("Failed" if i % 3 == 0 else "Succeeded", storm)
            run_["metadata"].update(name=f"recover-{i}", uid=f"uid-{i}")
            runs.append(run_)
        async with Sink() as sink:
            api = ManyApi(runs, {"slack": {"url": sink.url("/hook")}})
            notifier, metrics, _ = make(api)
            for run_ in runs:
                notifier.observe(run_)
            # The first two go one by one; the other four wait for the window's summary.
            (window,) = notifier._storms.values()
            assert (window.sent, len(window.held)) == (2, 4)
            await settle(notifier)
            assert len(sink.requests) == 3
            summary = sink.json()
            assert summary["text"] == "Runbook recover: 4 runs finished (1 Failed, 3 Succeeded)"
            listed = summary["blocks"][1]["text"]["text"]
            assert all(f"recover-{i}" in listed for i in range(2, 6)), listed
            for run_ in runs:
                [record] = run_["status"]["notifications"]
                assert (record["state"], record["attempts"]) == ("Delivered", 1)
            assert metrics.registry.get_sample_value("runbook_notifications_total", {
                "channel": "slack", "event": "Succeeded", "outcome": "delivered"}) == 4.0
    run(main())


# -- hostile receivers, URLs and Secrets ------------------------------------------------------


def hook_to(key: str = "url") -> list[dict[str, Any]]:
    return [{"on": ["Failed"], "webhook": {"urlSecretRef": {"name": "hooks", "key": key}}}]


@pytest.mark.parametrize(("url", "why"), [
    ("file:///etc/passwd", "only http and https"),
    ("gopher://127.0.0.1:70/x", "only http and https"),
    ("not a url at all", "whitespace"),
    ("http://169.254.169.254/latest/meta-data/iam/", "link-local"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://0.0.0.0:1/", "unspecified"),
])
def test_refused_url_is_final_without_a_request(url: str, why: str) -> None:
    async def main() -> None:
        api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": url}})
        notifier, _, events = make(api)
        notifier.observe(api.execution)
        await settle(notifier)
        [record] = records(api)
        assert (record["state"], record["attempts"]) == ("Failed", 0)
        assert record["lastError"].startswith("URL refused") and why in record["lastError"]
        assert [r for r, _ in events.posted] == ["NotificationFailed"]
        assert url not in json.dumps(api.execution["status"]) + str(events.posted)
        assert api.execution["status"]["phase"] == "Failed"
    run(main())


class FakeResolver:
    """Names the tests own: one resolves to the metadata address, one to the sink."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[Any]:
        self.asked.append(host)
        address = {"metadata.test": "169.254.169.254", "sink.test": "127.0.0.1"}[host]
        return [{"hostname": host, "host": address, "port": port, "family": 2,
                 "proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


def test_a_name_resolving_to_metadata_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_operator.notify import transport
    resolver = FakeResolver()
    monkeypatch.setattr(transport, "ThreadedResolver", lambda: resolver)

    async def main() -> None:
        async with Sink() as sink:
            two = [*hook_to("bad"), *hook_to("good")]
            api = FakeApi(execution("Failed", two), {"hooks": {
                "bad": f"http://metadata.test:{sink.port}/latest",
                "good": f"http://sink.test:{sink.port}/in"}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            by_state = {r["state"]: r for r in records(api)}
            assert by_state["Failed"]["lastError"].startswith("URL refused: its host resolves")
            assert (by_state["Delivered"]["attempts"]) == 1
            assert [p for _, _, p in sink.requests] == ["/in"]  # the refused one never left
            assert set(resolver.asked) == {"metadata.test", "sink.test"}
    run(main())


def test_redirect_is_not_followed() -> None:
    async def main() -> None:
        async with Sink() as sink:
            sink.answers = [(302, {"Location": sink.url("/loop")})]
            api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/loop")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert len(sink.requests) == 1
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Failed", 1)
            assert record["lastError"] == "HTTP 302 (not retried)"
    run(main())


class BigSink(Sink):
    """Answers 200 with a body far larger than the client reads."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, request.path))
        return web.Response(status=200, body=b"x" * (32 * 1024 * 1024))


def test_huge_answer_body_is_not_read() -> None:
    async def main() -> None:
        async with BigSink() as sink:
            api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/big")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 1)
    run(main())


class LateSink(Sink):
    """Answers 200 every time, the first time only after the client gave up."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, request.path))
        if len(self.requests) == 1:
            await asyncio.sleep(1.5)  # FAST.timeout is 0.5 s
        return web.Response(status=200)


def test_2xx_after_the_client_timeout_is_sent_again_with_the_same_key() -> None:
    async def main() -> None:
        async with LateSink() as sink:
            api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/late")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 2)
            keys = [h["Idempotency-Key"] for h, _, _ in sink.requests]
            bodies = [json.loads(b)["idempotencyKey"] for _, b, _ in sink.requests]
            assert len(keys) == 2 and set(keys) == set(bodies) == {record["id"]}
    run(main())


@pytest.mark.parametrize("header", ["-5", "garbage", "Wed, 21 Oct 2015 07:28:00 GMT",
                                    "1e400", "nan", "99999999999", "", "  3  "])
def test_hostile_retry_after_still_delivers(header: str) -> None:
    quick = NotifierSettings(**{**FAST.__dict__, "backoff_max": 0.3})

    async def main() -> None:
        async with Sink([(429, {"Retry-After": header}), 200]) as sink:
            api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/r")}})
            notifier, _, _ = make(api, quick)
            notifier.observe(api.execution)
            await settle(notifier)  # a wait not capped at backoff_max would not settle
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 2)
    run(main())


def test_a_waiting_delivery_holds_no_slot() -> None:
    """One request slot; A's receiver asks to wait: B's goes out meanwhile, not after."""
    one = NotifierSettings(**{**FAST.__dict__, "concurrency": 1})

    async def main() -> None:
        async with Sink() as sink:
            sink.answers = [(429, {"Retry-After": "1"}), 200]
            a = execution("Failed", hook_to("a"))
            b = execution("Failed", hook_to("b"))
            b["metadata"].update(name="recover-x2", uid="uid-2")
            api = ManyApi([a, b], {"hooks": {"a": sink.url("/a"), "b": sink.url("/b")}})
            notifier, _, _ = make(api, one)
            notifier.observe(a)
            for _ in range(500):  # A's first attempt has reached the sink
                if sink.requests:
                    break
                await asyncio.sleep(0.01)
            notifier.observe(b)
            await settle(notifier)
            assert [p for _, _, p in sink.requests] == ["/a", "/b", "/a"]
    run(main())


class FlakyApi(FakeApi):
    """The API server answers 503 to the first ``failures`` Secret reads."""

    def __init__(self, *args: Any, failures: int) -> None:
        super().__init__(*args)
        self.failures = failures

    def read_namespaced_secret(self, name: str, namespace: str) -> FakeSecret:
        if self.failures > 0:
            self.failures -= 1
            self.secret_reads.append(name)
            raise ApiException(status=503, reason="Service Unavailable")
        return super().read_namespaced_secret(name, namespace)


def test_api_server_down_while_reading_the_secret_resumes() -> None:
    resume = NotifierSettings(**{**FAST.__dict__, "resume_after": 0.1})

    async def main() -> None:
        async with Sink() as sink:
            api = FlakyApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/in")}},
                           failures=5)  # more than one read's own retries
            notifier, _, events = make(api, resume)
            notifier.observe(api.execution)
            await settle(notifier)
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 1)
            assert len(sink.requests) == 1 and events.posted == []
    run(main())


def test_missing_secret_fails_without_sending() -> None:
    async def main() -> None:
        async with Sink() as sink:
            api = FakeApi(execution("Failed", hook_to()), {})
            notifier, _, events = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            assert sink.requests == []
            [record] = records(api)
            assert record["state"] == "Failed" and "not readable: 404" in record["lastError"]
            assert [r for r, _ in events.posted] == ["NotificationFailed"]
            assert api.execution["status"]["phase"] == "Failed"
    run(main())


@pytest.mark.parametrize("host", ["2852039166", "0xa9fea9fe", "169.254.43518",
                                  "0251.0376.0251.0376"])
def test_metadata_address_spelled_otherwise_is_refused(host: str) -> None:
    """Integer, hex, short and octal spellings of 169.254.169.254: the HTTP client
    refuses some as non-canonical, libc reads the others as that address and the
    resolver guard refuses them; either way final at the first attempt, nothing sent."""
    async def main() -> None:
        api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": f"http://{host}/x"}})
        notifier, _, _ = make(api)
        notifier.observe(api.execution)
        await settle(notifier)
        [record] = records(api)
        assert (record["state"], record["attempts"]) == ("Failed", 1)
        assert record["lastError"].startswith("URL refused: ")
    run(main())


def test_pending_delivery_too_old_after_an_outage_is_closed_not_left_pending() -> None:
    """Attempted twice, then the operator was down for two hours: the event is too old
    to send now, and the record says so (Failed, expired) instead of Pending forever."""
    async def main() -> None:
        two = [*SLACK, *hook_to()]
        async with Sink() as sink:
            body = execution("Failed", two)
            body["status"]["startedAt"] = _now_text(-7300)
            body["status"]["finishedAt"] = _now_text(-7200)
            api = FakeApi(body, {"slack": {"url": sink.url("/s")},
                                 "hooks": {"url": sink.url("/w")}})
            from runbook_operator.engine.notify import delivery_key
            slack = delivery_key("uid-1", 0, "slack", "Failed", "")
            api.execution["status"]["notifications"] = [
                {"id": slack, "channel": "slack", "event": "Failed", "state": "Pending",
                 "attempts": 2}]
            notifier, metrics, events = make(api)  # a new process: first sees it now
            notifier.observe(api.execution)
            await settle(notifier)
            assert sink.requests == []
            [record] = records(api)  # the never-attempted webhook stays unrecorded
            assert (record["id"], record["state"], record["attempts"]) == (slack, "Failed", 2)
            assert record["lastError"].startswith("expired")
            assert [r for r, _ in events.posted] == ["NotificationFailed"]
            assert metrics.registry.get_sample_value("runbook_notifications_total", {
                "channel": "slack", "event": "Failed", "outcome": "failed"}) == 1.0
            notifier.observe(api.execution)  # closed once, not again
            await settle(notifier)
            assert len(events.posted) == 1
    run(main())


def test_signing_key_and_url_from_files_lose_their_trailing_newline() -> None:
    """`kubectl create secret --from-file` keeps the file's newline: the URL still
    works and the HMAC is keyed with the value less surrounding whitespace, as the
    Notifications page (docs/notifications.md) tells receivers."""
    async def main() -> None:
        hook = [{"on": ["Failed"], "webhook": {
            "urlSecretRef": {"name": "hooks", "key": "url"},
            "signingSecretRef": {"name": "hooks", "key": "hmac"}}}]
        async with Sink() as sink:
            api = FakeApi(execution("Failed", hook),
                          {"hooks": {"url": sink.url("/in") + "\n", "hmac": "S1GNING\n"}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            headers, raw, _ = sink.requests[0]
            assert verify(b"S1GNING", raw, headers[SIGNATURE_HEADER])
            assert not verify(b"S1GNING\n", raw, headers[SIGNATURE_HEADER])
    run(main())


class StallingSink(Sink):
    """Answers 200 at once, then stalls before the body it announced."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((dict(request.headers), body, request.path))
        response = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await response.prepare(request)
        await asyncio.sleep(3)  # past FAST.timeout (0.5 s)
        return response


def test_2xx_whose_body_stalls_is_delivered_not_retried() -> None:
    """The status is the answer: a body that never comes does not turn a 200 into a
    timeout (which was retried, and sent the notification again)."""
    async def main() -> None:
        async with StallingSink() as sink:
            api = FakeApi(execution("Failed", hook_to()), {"hooks": {"url": sink.url("/s")}})
            notifier, _, _ = make(api)
            notifier.observe(api.execution)
            await settle(notifier)
            [record] = records(api)
            assert (record["state"], record["attempts"]) == ("Delivered", 1)
            assert len(sink.requests) == 1
    run(main())
