"""The receiver's HTTP edge against careless and hostile senders (issue 9's audit).

Real HTTP on 127.0.0.1 (aiohttp's test server), the API stood in for by the
scripted adapter of test_receiver.py. Cases: Content-Type parameters and case
(JSON with a charset is JSON; ``application/json-seq``, ``text/json``, a form or
none is 415); a gzip-encoded notification is read, and a gzip bomb is 413 by its
decompressed size; the token file with a trailing newline, CRLF or spaces (as
``kubectl create secret --from-file`` leaves it) still matches, the scheme is
case-insensitive, and a header with non-ASCII bytes or no credentials is 401, not
500; the comparison is hmac.compare_digest (constant time); a label holding a lone
surrogate escape, read by a regex matcher, is 200 and the execution sent to the API
is strict UTF-8 (it was a 500 before); an execution that took the occurrence's name but
which this alert did not start (planted, in the cache or found after a 409) is
counted `rejected`, not `duplicate`, and our own run written with another startsAt
spelling is a duplicate.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from runbook_operator.triggers import alertmanager

from .test_receiver import (
    BODY,
    TOKEN,
    FakeClients,
    FakeCustomObjects,
    counted,
    matching_receiver,
    post,
    receiver,
    run,
    token_file,
)


def status_of(rx: alertmanager.AlertReceiver, body: Any = BODY, **kwargs: Any) -> int:
    seen: list[int] = []

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client, body, **kwargs) as response:
            seen.append(response.status)
    run(rx, scenario)
    return seen[0]


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8",
    "APPLICATION/JSON ; charset=\"utf-8\""])
def test_json_with_parameters_or_another_case_is_json(tmp_path: Path, content_type: str) -> None:
    rx = receiver(token_file(tmp_path))
    assert status_of(rx, headers={"Content-Type": content_type}) == 200
    assert counted(rx, "unmatched") == 1


@pytest.mark.parametrize("content_type", [
    "application/json-seq", "text/json", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "text/plain; charset=utf-8"])
def test_other_content_types_are_415(tmp_path: Path, content_type: str) -> None:
    rx = receiver(token_file(tmp_path))
    assert status_of(rx, headers={"Content-Type": content_type}) == 415
    assert counted(rx, "rejected") == 1


def test_a_gzip_encoded_notification_is_read(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path))
    body = gzip.compress(json.dumps(BODY).encode())
    assert status_of(rx, body, headers={"Content-Encoding": "gzip"}) == 200
    assert counted(rx, "unmatched") == 1


def test_a_gzip_bomb_is_413_by_its_decompressed_size(tmp_path: Path) -> None:
    rx = receiver(token_file(tmp_path), max_body=64 * 1024)
    body = gzip.compress(json.dumps({**BODY, "pad": "x" * 20_000_000}).encode())
    assert len(body) < 64 * 1024           # small on the wire, 20 MB once inflated
    assert status_of(rx, body, headers={"Content-Encoding": "gzip"}) == 413
    assert counted(rx, "rejected") == 1


@pytest.mark.parametrize("written", [TOKEN + "\n", TOKEN + "\r\n", f"  {TOKEN}  \n\n", TOKEN])
def test_token_file_whitespace_does_not_matter(tmp_path: Path, written: str) -> None:
    path = tmp_path / "token"
    path.write_text(written)
    assert status_of(receiver(path)) == 200


@pytest.mark.parametrize(("scheme", "token", "status"), [
    ("bearer", TOKEN, 200), ("BEARER", TOKEN, 200), ("Bearer", TOKEN + " ", 200),
    ("Bearer", "", 401), ("Bearer", "\u00fc" + TOKEN, 401), ("Bearer", TOKEN + "\u00ff", 401),
    ("Bearer", TOKEN + "\n", 401), ("Token", TOKEN, 401)])
def test_authorization_header_variants(tmp_path: Path, scheme: str, token: str,
                                       status: int) -> None:
    rx = receiver(token_file(tmp_path))
    try:
        got = status_of(rx, token=token, scheme=scheme)
    except ValueError:       # the client itself refuses a header with a newline
        assert "\n" in token
        return
    assert got == status
    assert counted(rx, "unauthorized") == (status == 401)


def test_the_token_is_compared_in_constant_time(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = alertmanager.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(alertmanager.hmac, "compare_digest", spy)
    rx = receiver(token_file(tmp_path))
    assert status_of(rx, token="wrong") == 401
    assert status_of(rx) == 200
    assert calls == [(b"wrong", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_a_lone_surrogate_in_a_matched_label_starts_the_runbook(tmp_path: Path) -> None:
    custom = FakeCustomObjects(201)
    sent: list[bytes] = []
    create = custom.create_namespaced_custom_object

    def recording(group: str, version: str, namespace: str, plural: str,
                  body: dict[str, Any]) -> dict[str, Any]:
        sent.append(json.dumps(body, ensure_ascii=False).encode("utf-8"))  # strict UTF-8
        return create(group, version, namespace, plural, body)
    custom.create_namespaced_custom_object = recording  # type: ignore[method-assign]
    rx = receiver(token_file(tmp_path))
    rx.clients = FakeClients(custom)  # type: ignore[assignment]
    rx.index.observe({"metadata": {"name": "rb", "namespace": "ns", "resourceVersion": "1"},
                      "spec": {"triggers": {"alerts": [
                          {"match": ['alertname="NoRunbookForThis"', 'service=~"a.*"']}]},
                          "steps": [{"name": "a", "image": "busybox"}]}})
    body = json.loads(json.dumps(BODY))
    body["alerts"][0]["labels"]["service"] = "api\ud800"
    assert status_of(rx, json.dumps(body).encode()) == 200
    assert counted(rx, "created") == 1
    (manifest,) = sent
    assert "api\ufffd" in manifest.decode()


# -- an execution that took the occurrence's name ----------------------------------------


def _outcomes(rx: alertmanager.AlertReceiver) -> dict[str, int]:
    seen: list[dict[str, int]] = []

    async def scenario(client: TestClient[Any, Any]) -> None:
        async with post(client) as response:
            assert response.status == 200
            seen.append((await response.json())["outcomes"])
    run(rx, scenario)
    return seen[0]


def _name() -> str:
    from runbook_operator.engine.alerts import occurrence_name, rfc3339_ns

    alert = BODY["alerts"][0]  # type: ignore[index]
    return occurrence_name("rb", alert["fingerprint"], rfc3339_ns(alert["startsAt"]) or 0)


def _manual(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "5"},
            "spec": {"runbookRef": {"name": "rb"}, "params": {}}}


def test_a_planted_execution_with_the_occurrences_name_is_not_a_duplicate(
        tmp_path: Path) -> None:
    custom = FakeCustomObjects(409, existing=_manual(_name()))
    rx = matching_receiver(tmp_path, custom)
    assert _outcomes(rx) == {"rejected": 1}
    assert counted(rx, "duplicate") == 0 and counted(rx, "rejected") == 1


def test_a_planted_execution_in_the_cache_is_not_a_duplicate_either(tmp_path: Path) -> None:
    custom = FakeCustomObjects(201)
    rx = matching_receiver(tmp_path, custom)
    rx.store.put_execution(_manual(_name()))
    assert _outcomes(rx) == {"rejected": 1}
    assert custom.creates == 0


def test_our_own_run_written_with_another_starts_at_spelling_is_a_duplicate(
        tmp_path: Path) -> None:
    first = matching_receiver(tmp_path, FakeCustomObjects(201))
    assert _outcomes(first) == {"created": 1}
    ours = first.clients.custom.sent[_name()]  # type: ignore[attr-defined]
    ours["spec"]["triggeredBy"]["alert"]["startsAt"] = "2026-12-01T02:00:00+02:00"
    rx = matching_receiver(tmp_path, FakeCustomObjects(409, existing=ours))
    assert _outcomes(rx) == {"duplicate": 1}
