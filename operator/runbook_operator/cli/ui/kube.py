"""An asynchronous client to the API server, with the user's own kubeconfig.

Why it exists: the web view serves many live streams at once (the executions list,
an execution and its Events, a step's logs), each a long-lived watch; threads over
the plugin's blocking client (``cli.rest``) would pin one thread per stream. This
reuses ``cli.rest``'s kubeconfig reading (and its ``ApiError``) and speaks to the
API server through aiohttp, already a dependency of the operator (kopf's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from runbook_operator.cli.rest import ApiError, Cluster

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30)


def describe(exc: ApiError) -> str:
    """What to tell the user: the API server's message, or why it could not be asked."""
    return exc.reason if exc.status == 0 else exc.message


class Api:
    """GET, POST, merge-PATCH and streamed GETs to one API server as one user."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.base = cluster.server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            secure = urlsplit(self.base).scheme == "https"
            connector = aiohttp.TCPConnector(
                ssl=self.cluster.ssl_context() if secure else False, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"Accept": "application/json", "User-Agent": "kubectl-runbook-ui",
                         **self.cluster.headers})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/json",
                    query: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self.session().request(method, self.base + path, data=data,
                                              params=params, headers=headers,
                                              timeout=CALL_TIMEOUT) as response:
                text = await response.text(errors="replace")
                if response.status >= 300:
                    raise ApiError(response.status, response.reason or "", text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"cannot reach the API server at {self.base}: {exc}") from None
        try:
            result = json.loads(text)
        except ValueError:
            raise ApiError(502, "the API server answered with something not JSON") from None
        return result if isinstance(result, dict) else {}

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        return await self._call("GET", path, query=query)

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body)

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, body, "application/merge-patch+json")

    async def lines(self, path: str, **query: Any) -> AsyncIterator[bytes]:
        """A streamed response a line at a time (watch events, ``log?follow``)."""
        params = {k: str(v) for k, v in query.items() if v is not None}
        try:
            async with self.session().get(self.base + path, params=params,
                                          timeout=STREAM_TIMEOUT) as response:
                if response.status >= 300:
                    raise ApiError(response.status, response.reason or "",
                                   await response.text(errors="replace"))
                while True:
                    line = await response.content.readline()
                    if not line:
                        return
                    yield line
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"the API server stream ended: {exc}") from None

    async def whoami(self) -> str:
        """The user the API server authenticates (SelfSubjectReview), as the CLI asks."""
        review = await self.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                 {"apiVersion": "authentication.k8s.io/v1",
                                  "kind": "SelfSubjectReview"})
        name = ((review.get("status") or {}).get("userInfo") or {}).get("username")
        if not name:
            raise ApiError(0, "the API server did not say who you are (SelfSubjectReview "
                              "returned no user name)")
        return str(name)
