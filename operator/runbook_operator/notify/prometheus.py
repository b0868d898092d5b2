"""The Prometheus client of query steps: one instant query, bounded in time and size.

Why it exists: a query step's check is an HTTP request the operator makes itself,
to a source the cluster admin named (``engine.query_sources``). It lives at the
notifier's layer (outbound HTTP) and keeps its address policy: the host is
resolved here and an address ``engine.notify.blocked_address`` refuses
(link-local, cloud metadata) is never connected to, even when DNS is rebound.

Stdlib only (``http.client``, ``ssl``): the reconciler's worker threads call it.
Every read is bounded by the check's deadline (a Prometheus answering one byte a
second is a timed-out check, not a hung worker) and the body by
``engine.query.MAX_RESPONSE_BYTES`` (reading stops there). The bearer token is
read from its file on each check (a rotated Secret is picked up) and never
appears in a message.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode, urlsplit

from runbook_operator.engine.notify import blocked_address
from runbook_operator.engine.query import MAX_RESPONSE_BYTES, Check, ResponseError, read_response
from runbook_operator.engine.query_sources import Source

CHUNK = 64 * 1024


class _Timeout(Exception):
    pass


@dataclass(frozen=True)
class Answer:
    """What one request came to before ``engine.query`` reads it."""

    status: int
    body: bytes
    truncated: bool


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    allowed: list[tuple[socket.AddressFamily, str]] = [
        (family, str(addr[0])) for family, _, _, _, addr in found
        if not blocked_address(str(addr[0]))]
    if not allowed:
        raise ConnectionError("the source's host resolves only to refused addresses")
    return allowed


class _Connection(http.client.HTTPConnection):
    """Connects only to an address the policy allows (resolved here, then pinned)."""

    def connect(self) -> None:
        last: Exception | None = None
        for family, address in _addresses(self.host, self.port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect((address, self.port))
            except OSError as exc:
                sock.close()
                last = exc
                continue
            self.sock = self._wrap(sock)
            return
        raise last or ConnectionError("no address to connect to")

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return sock


class _TLSConnection(_Connection):
    def __init__(self, host: str, port: int | None, timeout: float,
                 context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout)
        self.context = context

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return self.context.wrap_socket(sock, server_hostname=self.host)


def _token(source: Source) -> str | None:
    if source.token_file is None:
        return None
    with open(source.token_file, encoding="utf-8") as fh:
        return fh.read().strip()


def fetch(source: Source, expr: str, timeout: float) -> Answer:
    """GET ``/api/v1/query?query=expr`` from ``source``; raises on no answer in ``timeout``.

    Raises ``TimeoutError`` when the whole exchange took longer than ``timeout``, and
    ``OSError``/``http.client.HTTPException`` when there was no answer.
    """
    deadline = time.monotonic() + timeout
    parts = urlsplit(source.query_url())
    host = parts.hostname or ""
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=source.ca_file)
        conn: _Connection = _TLSConnection(host, parts.port, timeout, context)
    else:
        conn = _Connection(host, parts.port, timeout=timeout)
    headers = {"Accept": "application/json", "User-Agent": "runbook-operator"}
    token = _token(source)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = f"{parts.path}?{urlencode({'query': expr})}"
    try:
        conn.request("GET", path, headers=headers)
        _remaining(conn, deadline)
        response = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RESPONSE_BYTES:
            _remaining(conn, deadline)
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return Answer(response.status, b"".join(chunks), size > MAX_RESPONSE_BYTES)
    except (TimeoutError, _Timeout):
        raise TimeoutError(f"no whole answer within {timeout:g}s") from None
    finally:
        conn.close()


def _remaining(conn: http.client.HTTPConnection, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Timeout()
    if conn.sock is not None:
        conn.sock.settimeout(left)


def check(source: Source, expr: str, timeout: float, clock: Callable[[], datetime]) -> Check:
    """One check: the request, then what it means (``engine.query``), as a ``Check``.

    Its time is ``clock()`` once the request is over (the next check counts from it).
    """
    try:
        _token(source)
    except (OSError, UnicodeDecodeError) as exc:
        return Check("Unavailable", clock(), reason="SourceUnavailable",
                     message=f"the token file of source {source.name} cannot be read "
                             f"({type(exc).__name__})")
    try:
        answer = fetch(source, expr, timeout)
    except TimeoutError as exc:
        return Check("Timeout", clock(), reason="QueryTimeout", message=str(exc))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        what = type(exc).__name__
        return Check("Unavailable", clock(), reason="SourceUnavailable",
                     message=f"source {source.name} did not answer ({what})")
    return judge(source, answer, clock())


def judge(source: Source, answer: Answer, at: datetime) -> Check:
    """What an answer means: a result, a source to retry, or a bad answer."""
    if answer.status >= 500 or answer.status == 429:
        return Check("Unavailable", at, reason="SourceUnavailable",
                     message=f"source {source.name} answered HTTP {answer.status}")
    try:
        result = read_response(answer.body, answer.truncated)
    except ResponseError as exc:
        return Check("BadResponse", at, reason=exc.reason,
                     message=f"source {source.name} answered HTTP {answer.status}: {exc}")
    return Check("Result", at, result)
