"""The web view's request checks: the token, the Host header and the Origin header.

Why it exists: a server on 127.0.0.1 is reachable by every web page the user has
open. Three checks keep those pages out, all pure so that they are property-tested
against hostile input:

* the random token (in the URL, as Jupyter does) must be on every request, event
  streams included: another local user or page cannot guess it;
* the ``Host`` header must name this server (a loopback name and our port, or the
  ``--address`` given): a DNS-rebinding page reaches us under its own host name;
* an ``Origin`` header, when the browser sends one, must be this server's own
  origin: a cross-site form or fetch (CSRF) carries the attacker's.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable

TOKEN_BYTES = 32
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "")


def new_token() -> str:
    """A fresh random token (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_ok(expected: str, given: str | None) -> bool:
    """Whether ``given`` is the token, compared in constant time."""
    if not given or not expected:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"),
                               given.encode("utf-8", "surrogatepass"))


def host_name(address: str) -> str:
    """An address as it appears in a Host header (IPv6 in brackets)."""
    try:
        if ipaddress.ip_address(address).version == 6:
            return f"[{address}]"
    except ValueError:
        pass
    return address.lower()


ANY_IP = "*ip*"
"""In an allowed set, ``*ip*:PORT`` admits any IP literal with our port (``--address
0.0.0.0``: the address a client uses is not known). Rebinding needs a DNS name in the
Host header, never an IP literal, so this keeps that defence."""


def allowed_hosts(address: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``host:port`` values a request may carry in its Host header."""
    names = set(LOOPBACK_NAMES)
    if address in WILDCARDS:
        names.add(ANY_IP)
    else:
        names.add(host_name(address))
    names.update(host_name(name) for name in extra if name)
    return frozenset(f"{name}:{port}" for name in names)


def _ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]")
                             else name)
    except ValueError:
        return False
    return name.startswith("[") == (":" in name)  # IPv6 only in brackets


def host_ok(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether the Host header names this server (exactly, case-insensitively)."""
    if not host or not isinstance(host, str):
        return False
    host = host.lower()
    if host in allowed and not host.startswith(ANY_IP):
        return True
    name, sep, port = host.rpartition(":")
    return bool(sep) and port.isdigit() and f"{ANY_IP}:{port}" in allowed and \
        port == str(int(port)) and _ip_literal(name)


def origin_ok(origin: str | None, allowed: frozenset[str]) -> bool:
    """An absent Origin passes (same-origin GETs, non-browser clients); a present one
    must be ``http://`` and an allowed host. ``null`` (sandboxed frames, file pages)
    never passes."""
    if origin is None:
        return True
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() != "http" or "/" in rest:
        return False
    return host_ok(rest, allowed)


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def object_name(value: object) -> bool:
    """Whether ``value`` is a Kubernetes object name (so it is safe in an API path)."""
    return isinstance(value, str) and _DNS_SUBDOMAIN.fullmatch(value) is not None \
        and ".." not in value


def namespace_name(value: object) -> bool:
    return isinstance(value, str) and _DNS_LABEL.fullmatch(value) is not None


def step_name(value: object) -> bool:
    """Whether ``value`` can be a step name (so it is safe in a label selector)."""
    return isinstance(value, str) and _DNS_LABEL.fullmatch(value) is not None
