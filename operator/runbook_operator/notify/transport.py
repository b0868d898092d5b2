"""Sending one notification request: the HTTP transport, and where it may not go.

Why it exists apart from delivery: a request's fate (an answer, no answer, or a
refusal) is all the retry logic of :mod:`notify.deliver` needs to know, and the
rules about destinations (a host name that resolves to the cloud metadata service)
belong where the connection is made. Only a request holds one of the
``concurrency`` slots, never a wait between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from runbook_operator.engine.notify import blocked_address
from runbook_operator.k8s.client import NotLeading

BODY_DRAIN_SECONDS = 1.0
"""How long an answer's body is read after its status (for connection reuse)."""


class Refused(Exception):
    """The destination is not allowed (:func:`engine.notify.url_problem`): final."""


class BlockedAddress(OSError):
    """Every address a host name resolved to is one notifications may not reach."""


class GuardedResolver(AbstractResolver):
    """DNS resolution that drops addresses :func:`engine.notify.blocked_address` refuses.

    Checked where the connection is made, so a name that resolves (or is rebound) to
    169.254.169.254 is refused as surely as the literal address.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        allowed = [r for r in found if not blocked_address(str(r["host"]))]
        if found and not allowed:
            raise BlockedAddress("the host resolves only to refused addresses")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class Request:
    url: str
    body: bytes
    headers: Mapping[str, str]


class Transport:
    """One HTTP session for every notification request, at most ``concurrency`` at once."""

    def __init__(self, timeout: float, concurrency: int,
                 may_act: Callable[[], bool] = lambda: True) -> None:
        self.timeout = timeout
        self.concurrency = concurrency
        self.may_act = may_act
        """The leader's fence, asked at the last moment before each request."""
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, request: Request) -> tuple[int | None, str | None]:
        """(HTTP status, Retry-After) of one POST, or (None, why) without an answer.

        Raises :class:`Refused` when the host resolves only to refused addresses.
        """
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        async with self._semaphore:
            if not self.may_act():  # a frozen leader that woke sends nothing
                raise NotLeading("notification not sent: this replica does not lead")
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    connector=aiohttp.TCPConnector(resolver=GuardedResolver()))
            try:
                async with self._session.post(request.url, data=request.body,
                                              headers=dict(request.headers),
                                              allow_redirects=False) as response:
                    # The status is the answer. The body is only drained (never
                    # logged), briefly: one that stalls or breaks must not turn a
                    # 2xx into a timeout that is retried, i.e. sent again.
                    answer = response.status, response.headers.get("Retry-After")
                    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                        await asyncio.wait_for(response.content.read(64 * 1024),
                                               BODY_DRAIN_SECONDS)
                    return answer
            except TimeoutError:
                return None, "timeout"
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, BlockedAddress):
                    raise Refused("URL refused: its host resolves to a link-local, "
                                  "metadata, unspecified or multicast address") from None
                return None, type(exc).__name__
            except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError):
                # What url_problem let through but the client will not send (yarl
                # refuses e.g. 2852039166 as a non-canonical IPv4): no retry helps.
                raise Refused("URL refused: the HTTP client does not accept it") from None
            except aiohttp.ClientError as exc:
                return None, type(exc).__name__
