"""The receiver's HTTP edge (triggers/alertmanager.py), before any Kubernetes call.

Cases: off without a token file (never open); 503 until the Runbooks have been read
once (an alert matched against a half-filled index would be lost); 401 without a
header, with a wrong token, another scheme, or an empty/missing token file, counted
``unauthorized``, and a flood of them logged once (each still counted); the token
file re-read after rotation; 415 for a wrong content
type; 413 by Content-Length and by a chunked body past the cap, even one byte
past it; a valid body up to the cap is read whole however it arrives (a single
stream read returns only what has arrived so far); 400/422 for bodies
that are not a v4 notification, counted ``rejected``; a valid notification that
matches no Runbook is 200 with ``unmatched`` and makes no API call (the client is
absent, so any call would fail the test); the API's answers to a create, scripted
by a stand-in for this one adapter: 201 created, 409 duplicate, 422 rejected (200
to Alertmanager: retrying would not help), 503 or a dropped connection 503
(Alertmanager retries), a transient error retried. Creating executions is proven
against the real API server in tests/integration/test_alerts.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from runbook_operator.k8s.store import Store
from runbook_operator.observability.metrics import Metrics
from runbook_operator.observability.tracing import ExecutionTracer
from runbook_operator.triggers.alertmanager import (
    AlertReceiver,
    ReceiverSettings,
    start_receiver,
)
from runbook_operator.triggers.index import TriggerIndex

TOKEN = "s3cret-token"
BODY = {
    "version": "4", "status": "firing", "receiver": "r", "groupKey": "{}:{}",
    "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
    "alerts": [{"status": "firing", "labels": {"alertname": "NoRunbookForThis"},
                "annotations": {}, "startsAt": "2026-12-01T00:00:00Z", "endsAt": "",
                "generatorURL": "", "fingerprint": "abc123"}],
}


def receiver(token_file: Path | None, max_body: int = 1 << 20,
             ready: bool = True) -> AlertReceiver:
    rx = AlertReceiver(None, Store(), TriggerIndex(), Metrics(),  # type: ignore[arg-type]
                       ExecutionTracer(), ReceiverSettings(
                           token_file=str(token_file) if token_file else None,
                           max_body_bytes=max_body))
    rx.ready = ready
    return rx


def run(rx: AlertReceiver, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(rx.app())) as client:
            await scenario(client)
    asyncio.run(main())


def counted(rx: AlertReceiver, outcome: str) -> float:
    value = rx.metrics.registry.get_sample_value("runbook_alerts_received_total",
                                                 {"outcome": outcome})
    return value or 0.0


async def reason(response: ClientResponse) -> str:
    body = await response.json()
    assert body["status"] == "error"
    assert "\n" not in body["error"]
    return str(body["error"])


def post(client: TestClient[Any, Any], body: Any = BODY, token: str | None = TOKEN,
         scheme: str = "Bearer", **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    data = body if isinstance(body, bytes) or hasattr(body, "__aiter__") \
        else json.dumps(body).encode()
    headers.setdefault("Content-Type", "application/json")
    return client.post("/alerts", data=data, headers=headers, **kwargs)


def token_file(tmp_path: Path, value: str = TOKEN) -> Path:
    path = tmp_path / "token"
    path.write_text(value + "\n")
    return path


def test_without_a_token_file_the_receiver_does_not_listen() -> None:
    assert asyncio.run(start_receiver(receiver(None))) is None


@pytest.mark.parametrize("kwargs", [
    {"token": None}, {"token": "wrong"}, {"token": TOKEN[:-1]}, {"token": TOKEN + "x"},
    {"token": TOKEN, "scheme": "Basic"}, {"token": ""}],
    ids=["no-token", "wrong-token", "token-prefix", "token-longer", "basic-scheme",
         "empty-token"])
def test_requests_without_the_right_token_are_401(tmp_path: Path,
                                                  kwargs: dict[str, Any]) -> None:
    rx = receiver(token_file(tmp_path))

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, **kwargs) as response:
            assert response.status == 401, kwargs
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in await reason(response)
    run(rx, scenario)
    assert counted(rx, "unauthorized") == 1
    assert counted(rx, "unmatched") == 0


def test_a_flood_of_unauthorized_requests_is_counted_but_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rx = receiver(token_file(tmp_path))

    async def scenario(client: TestClient[Any, Any]) -> None:
        for _ in range(50):
            async with post(client, token="wrong") as response:
                assert response.status == 401
    with caplog.at_level(logging.WARNING, logger="runbook_operator.alerts"):
        run(rx, scenario)
    assert counted(rx, "unauthorized") == 50
    refused = [r for r in caplog.records if "bearer token" in r.getMessage()]
    assert len(refused) == 1


def test_an_empty_or_missing_token_file_refuses_everything(tmp_path: Path) -> None:
    empty = token_file(tmp_path, "   ")
    rx = receiver(empty)

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, token="") as response:
            assert response.status == 401
        empty.unlink()
        async with post(client) as response:
            assert response.status == 401
    run(rx, scenario)


def test_a_rotated_token_takes_effect_without_a_restart(tmp_path: Path) -> None:
    path = token_file(tmp_path)
    rx = receiver(path)

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client) as response:
            assert response.status == 200
        path.write_text("rotated-token-value")
        os.utime(path, (1, 1))  # a new mtime even within the same clock tick
        async with post(client) as response:
            assert response.status == 401
        async with post(client, token="rotated-token-value") as response:
            assert response.status == 200
    run(rx, scenario)


def test_until_the_runbooks_are_read_notifications_are_503(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path), ready=False)

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, token="wrong") as response:
            assert response.status == 401     # authentication first, always
        async with post(client) as response:
            assert response.status == 503     # Alertmanager retries; nothing is lost
            assert "retry" in await reason(response)
    run(rx, scenario)
    assert counted(rx, "unmatched") == 0


def test_wrong_content_type_is_415(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path))

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
            assert "application/json" in await reason(response)
    run(rx, scenario)
    assert counted(rx, "rejected") == 1


def test_bodies_over_the_cap_are_413_by_length_and_when_streamed(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path), max_body=1000)
    big = json.dumps({**BODY, "pad": "x" * 2000}).encode()

    async def chunks() -> Any:
        for i in range(0, len(big), 100):
            yield big[i:i + 100]

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, big) as response:
            assert response.status == 413
            assert "1000 bytes" in await reason(response)
        async with post(client, chunks()) as response:  # no Content-Length
            assert response.status == 413
    run(rx, scenario)
    assert counted(rx, "rejected") == 2


def _alert_without(field: str) -> bytes:
    alert = {k: v for k, v in BODY["alerts"][0].items() if k != field}  # type: ignore[index]
    return json.dumps({**BODY, "alerts": [alert]}).encode()


@pytest.mark.parametrize(("body", "status", "fragment"), [
    (b"{oops", 400, "invalid JSON"),
    (b"", 400, "invalid JSON"),
    (b"[]", 400, "JSON object"),
    (json.dumps({**BODY, "version": "3"}).encode(), 422, "version '3'"),
    (json.dumps({k: v for k, v in BODY.items() if k != "version"}).encode(), 422, "version"),
    (json.dumps({k: v for k, v in BODY.items() if k != "alerts"}).encode(), 422, "'alerts'"),
    (json.dumps({k: v for k, v in BODY.items() if k != "groupKey"}).encode(), 422,
     "'groupKey'"),
    (_alert_without("fingerprint"), 422, "fingerprint"),
    (_alert_without("startsAt"), 422, "startsAt"),
    (_alert_without("labels"), 422, "labels"),
], ids=["invalid-json", "empty-body", "not-an-object", "version-3", "no-version",
        "no-alerts", "no-groupKey", "alert-no-fingerprint", "alert-no-startsAt",
        "alert-no-labels"])
def test_bodies_that_are_not_a_v4_notification_are_4xx(tmp_path: Path, body: bytes,
                                                       status: int, fragment: str) -> None:
    rx = receiver(token_file(tmp_path))

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, body) as response:
            assert response.status == status, body
            assert fragment in await reason(response)
    run(rx, scenario)
    assert counted(rx, "rejected") == 1
    assert counted(rx, "unmatched") == 0
    assert rx.metrics.registry.get_sample_value(
        "runbook_alert_request_duration_seconds_count", {"code": str(status)}) == 1


def test_an_alert_no_runbook_wants_is_200_unmatched_without_api_calls(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path))

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client) as response:
            assert response.status == 200
            assert (await response.json())["outcomes"] == {"unmatched": 1}
    run(rx, scenario)
    assert counted(rx, "unmatched") == 1


class FakeCustomObjects:
    """Stands in for the API server in this adapter test only: answers each create
    with the next scripted status (201, 409, 422, 503 or a dropped connection). After
    a 409, a read returns ``existing`` (default: what was sent, as if another delivery
    of the same alert had created it)."""

    def __init__(self, *answers: int | Exception,
                 existing: dict[str, Any] | None = None) -> None:
        self.answers = list(answers)
        self.creates = 0
        self.existing = existing
        self.sent: dict[str, dict[str, Any]] = {}

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                        plural: str, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        self.creates += 1
        self.sent[body["metadata"]["name"]] = body
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if answer != 201:
            raise ApiException(status=answer, reason="scripted")
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{self.creates}"}}

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                     plural: str, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        found = self.existing if self.existing is not None else self.sent.get(name)
        if found is None:
            raise ApiException(status=404, reason="scripted")
        return found


class FakeClients:
    def __init__(self, custom: FakeCustomObjects) -> None:
        self.custom = custom


def matching_receiver(tmp_path: Path, custom: FakeCustomObjects) -> AlertReceiver:
    rx = receiver(token_file(tmp_path))
    rx.clients = FakeClients(custom)  # type: ignore[assignment]
    rx.index.observe({"metadata": {"name": "rb", "namespace": "ns", "resourceVersion": "1"},
                      "spec": {"triggers": {"alerts": [
                                   {"match": ['alertname="NoRunbookForThis"']}]},
                               "steps": [{"name": "a", "image": "busybox"}]}})
    return rx


def test_api_answers_map_to_outcomes_and_only_unavailability_is_503(tmp_path: Path) -> None:
    import urllib3

    cases = [((201,), 200, {"created": 1}), ((409,), 200, {"duplicate": 1}),
             ((422,), 200, {"rejected": 1}),
             ((503,), 503, None), ((urllib3.exceptions.ProtocolError("reset"),), 503, None),
             ((503, 201), 200, {"created": 1})]          # a transient error, retried
    for answers, status, outcomes in cases:
        custom = FakeCustomObjects(*answers)
        rx = matching_receiver(tmp_path, custom)

        async def scenario(client: TestClient[Any, Any], status: int = status,
                           outcomes: Any = outcomes) -> None:
            async with post(client) as response:
                assert response.status == status
                body = await response.json()
                if outcomes is not None:
                    assert body["outcomes"] == outcomes
                else:
                    assert "retry" in body["error"]
        run(rx, scenario)


# -- bodies that arrive in pieces ----------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid notification of exactly ``size`` bytes (an unknown field pads it)."""
    base = json.dumps({**BODY, "pad": ""}).encode()
    body = json.dumps({**BODY, "pad": "x" * (size - len(base))}).encode()
    assert len(body) == size
    return body


async def in_pieces(body: bytes, size: int) -> Any:
    """``body`` as a chunked upload of ``size``-byte pieces, yielding between them."""
    for i in range(0, len(body), size):
        await asyncio.sleep(0)
        yield body[i:i + size]


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_a_large_valid_body_under_the_cap_is_read_whole(tmp_path: Path, streamed: bool) -> None:
    # One read of the request stream returns what has arrived so far, not the whole
    # body: a notification of several TCP segments was cut and answered "invalid JSON".
    limit = 1 << 20
    rx = receiver(token_file(tmp_path), max_body=limit)
    body = _padded(limit)  # exactly at the cap: accepted

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, in_pieces(body, 4096) if streamed else body) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["outcomes"] == {"unmatched": 1}
    run(rx, scenario)
    assert counted(rx, "rejected") == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_one_byte_over_the_cap_is_413(tmp_path: Path, streamed: bool) -> None:
    limit = 64 * 1024
    rx = receiver(token_file(tmp_path), max_body=limit)
    body = _padded(limit + 1)

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, in_pieces(body, 1000) if streamed else body) as response:
            assert response.status == 413
    run(rx, scenario)
    assert counted(rx, "rejected") == 1
