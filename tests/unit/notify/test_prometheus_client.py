"""The query-step client against hostile servers on 127.0.0.1 (real sockets, no mocks).

Each test starts a small HTTP server that misbehaves one way: a huge answer, a body
that is not JSON, a wrong result type, a 503, one byte a second, nothing listening;
and checks what the client makes of it (``notify.prometheus.check``). The bearer
token goes in the header and never into a message.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from runbook_operator.engine.query import MAX_RESPONSE_BYTES
from runbook_operator.engine.query_sources import Source, parse_source
from runbook_operator.notify.prometheus import check

Handler = Callable[[BaseHTTPRequestHandler], None]


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def server(handle: Handler) -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **dict(self.headers)})
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                handle(self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    h.send_response(status)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _source(url: str, tmp: Path | None = None) -> Source:
    text = f"name=prom,url={url}"
    if tmp is not None:
        (tmp / "token").write_text("s3cr3t-token\n")
        text += f",tokenFile={tmp / 'token'}"
    return parse_source(text)


ONE = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"job": "api"}, "value": [1, "0.5"]}]}}).encode()


def test_a_good_answer_and_the_request_it_came_from(tmp_path: Path) -> None:
    with server(lambda h: _send(h, 200, ONE)) as (url, seen):
        made = check(_source(url + "/prefix", tmp_path), 'up{job="a b"}', 5, _now)
    assert made.kind == "Result" and made.result is not None and made.result["value"] == 0.5
    assert seen[0]["path"] == "/prefix/api/v1/query?query=up%7Bjob%3D%22a+b%22%7D"
    assert seen[0]["Authorization"] == "Bearer s3cr3t-token"


def test_a_huge_answer_is_refused_and_reading_stops() -> None:
    sent = []

    def huge(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()
        chunk = b" " * 65536
        for _ in range(MAX_RESPONSE_BYTES // len(chunk) * 4):
            h.wfile.write(chunk)
            sent.append(len(chunk))

    with server(huge) as (url, _):
        made = check(_source(url), "up", 30, _now)
    assert (made.kind, made.reason) == ("BadResponse", "ResponseTooLarge")


def test_a_body_that_is_not_json_says_what_came_back(tmp_path: Path) -> None:
    with server(lambda h: _send(h, 200, b"<html>proxy login</html>")) as (url, _):
        made = check(_source(url, tmp_path), "up", 5, _now)
    assert (made.kind, made.reason) == ("BadResponse", "NotJSON")
    assert "<html>proxy login" in (made.message or "")
    assert "s3cr3t" not in (made.message or "")


def test_a_wrong_result_type_fails_with_its_name() -> None:
    body = json.dumps({"status": "success", "data": {"resultType": "streams",
                                                     "result": []}}).encode()
    with server(lambda h: _send(h, 200, body)) as (url, _):
        made = check(_source(url), "up", 5, _now)
    assert made.reason == "UnexpectedResult" and "streams" in (made.message or "")


def test_a_query_error_is_a_bad_response_with_prometheus_message() -> None:
    body = json.dumps({"status": "error", "errorType": "bad_data",
                       "error": "1:3: parse error"}).encode()
    with server(lambda h: _send(h, 400, body)) as (url, _):
        made = check(_source(url), "up", 5, _now)
    assert made.reason == "QueryError" and "parse error" in (made.message or "")


def test_5xx_and_no_listener_are_unavailable() -> None:
    with server(lambda h: _send(h, 503, b"overloaded")) as (url, _):
        made = check(_source(url), "up", 5, _now)
    assert (made.kind, made.reason) == ("Unavailable", "SourceUnavailable")
    assert "503" in (made.message or "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    made = check(_source(f"http://127.0.0.1:{port}"), "up", 5, _now)
    assert made.kind == "Unavailable"


def test_one_byte_a_second_is_a_timed_out_check_not_a_hung_worker() -> None:
    stop = threading.Event()
    written: list[int] = []

    def slow(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(ONE)))
        h.end_headers()
        for byte in ONE:
            if stop.wait(1.0):
                return
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            written.append(byte)

    with server(slow) as (url, _):
        made = check(_source(url), "up", 2.0, _now)
        sent_by_then = len(written)
        stop.set()
    assert (made.kind, made.reason) == ("Timeout", "QueryTimeout")
    # The check gave up at its deadline, long before the whole answer had trickled in.
    assert sent_by_then < len(ONE)


def test_an_unreadable_token_file_is_said_without_a_request(tmp_path: Path) -> None:
    with server(lambda h: _send(h, 200, ONE)) as (url, seen):
        source = parse_source(f"name=prom,url={url},tokenFile={tmp_path / 'missing'}")
        made = check(source, "up", 5, _now)
    assert made.kind == "Unavailable" and "token file" in (made.message or "")
    assert seen == []
