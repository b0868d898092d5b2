"""Secret redaction for everything the operator says about itself.

Logs, Kubernetes Events, status messages and span attributes all end up in places
with wider audiences than the Secrets they were derived from: an exception message
from a step's HTTP call, a param echoed in a status, an ``Authorization`` header in
a client debug log. Everything on its way out goes through here first.

Two layers:

* :func:`redact` / :func:`redact_text` know *shapes*: values under sensitive keys,
  ``Bearer``/``Basic`` credentials, ``key=value`` pairs with a sensitive key, and
  the password of a URL's userinfo.
* :class:`Redactor` also knows *values*: the literal secrets of one execution
  (params marked ``secret: true``, values read from Secrets), replaced wherever
  they appear.
* The process' one redactor, which the shell teaches every running execution's
  secret values, is :data:`runbook_operator.observability.secrets.SECRETS`: state
  of the process, so not here in the pure core.

Both are pure, deep, idempotent and never raise: on anything unexpected the value
is replaced by the marker rather than let through.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "Redactor", "is_sensitive_key", "redact", "redact_text"]

REDACTED = "[REDACTED]"
"""What a redacted value becomes."""

MIN_LITERAL_SECRET = 4
"""Literal secrets shorter than this are ignored: replacing every "no" or "1" would
make text unreadable and tell an observer the secret's value anyway."""

_SENSITIVE = (
    r"password|passwd|token|secret|authorization|api[_-]?key|cookie"
    r"|private[_-]?key|credential"
)
_SENSITIVE_KEY = re.compile(_SENSITIVE, re.IGNORECASE)

_MARKER = re.escape(REDACTED)
_SCHEME = r"(?:bearer|basic)"

# ``Bearer abc.def`` / ``Basic dXNlcjpwYXNz``: the scheme stays, the credential goes.
# "Basic" must be capitalised as in a header, so prose ("basic setup") survives.
_AUTH = re.compile(
    r"\b(?P<scheme>(?i:bearer)|Basic)(?P<gap>\s+)[A-Za-z0-9\-._~+/]+=*")

# ``password=x``, ``"api_key": "x"``, ``token: x``, ``\"secret\": \"x\"`` (JSON in a
# string). The key may be decorated (``db_password``, ``X-Auth-Token``); the value is a
# marker, a quoted string (escapes honoured) or a bare word, optionally after an
# auth scheme, which is kept. The key starts where a run of key characters starts and
# is matched atomically, so text is scanned in linear time: a greedy, backtracking
# key made a 100 KB word take minutes (logs and step messages are untrusted input).
_KEY_VALUE = re.compile(
    rf"""
    (?P<head>
        (?P<kq>\\?["']?)
        (?<![\w.\-])
        (?>[\w.\-]*?(?:{_SENSITIVE})[\w.\-]*+)
        (?P=kq)
        \s*[:=]\s*
        (?:(?P<scheme>{_SCHEME})\s+)?
    )
    (?P<value>
        {_MARKER}
      | "(?:[^"\\]|\\.)*"
      | '(?:[^'\\]|\\.)*'
      | \\"(?:(?!\\").)*\\"
      | [^\s,;&"'<>)}}\]]+
    )
    """,
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)

# ``scheme://user:password@host``: the user stays, the password goes.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+@")


def is_sensitive_key(key: object) -> bool:
    """Whether values under ``key`` are secret (case-insensitive substring match)."""
    return isinstance(key, str) and _SENSITIVE_KEY.search(key) is not None


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if value[:1] in ("'", '"'):
        quote = value[0]
        return f"{match.group('head')}{quote}{REDACTED}{quote}"
    if value.startswith('\\"'):
        return f'{match.group("head")}\\"{REDACTED}\\"'
    return f"{match.group('head')}{REDACTED}"


def redact_text(text: str) -> str:
    """``text`` with credentials that have a recognisable shape replaced by the marker."""
    try:
        text = _USERINFO.sub(rf"\g<head>{REDACTED}@", text)
        text = _KEY_VALUE.sub(_key_value, text)
        return _AUTH.sub(rf"\g<scheme>\g<gap>{REDACTED}", text)
    except Exception:
        return REDACTED


def redact(value: Any) -> Any:
    """A deep copy of ``value`` with secrets replaced by the marker.

    Dicts, lists, tuples and sets are walked; a value under a sensitive key becomes
    the marker whatever its type; strings go through :func:`redact_text`; anything
    else is returned as it is (dict keys are never changed).
    """
    return _walk(value, redact_text)


def _walk(value: Any, text: Any) -> Any:
    try:
        return _walk_unsafe(value, text)
    except Exception:  # RecursionError on a cycle or absurd depth, a hostile __eq__...
        return REDACTED


def _walk_unsafe(value: Any, text: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {k: REDACTED if is_sensitive_key(k) else _walk_unsafe(v, text)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_walk_unsafe(v, text) for v in value]
    if isinstance(value, tuple):
        return tuple(_walk_unsafe(v, text) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(_walk_unsafe(v, text) for v in value)
    return value


class Redactor:
    """Shape-based redaction plus a set of literal secret values.

    Built per execution (or per process) from the values it must never reveal.
    Literal secrets are replaced first, longest first, so a secret that contains
    another is removed whole; text that is already the marker is left alone.
    """

    def __init__(self, secrets: Iterable[str] = (),
                 min_length: int = MIN_LITERAL_SECRET) -> None:
        self._lock = threading.Lock()
        self._min_length = min_length
        self._owned: dict[object, frozenset[str]] = {None: _literals(secrets, min_length)}
        self._literals: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self._rebuild()

    def _rebuild(self) -> None:
        literals = frozenset().union(*self._owned.values())
        pattern = None
        if literals:
            ordered = sorted(literals, key=lambda s: (-len(s), s))
            pattern = re.compile("|".join([_MARKER, *(re.escape(s) for s in ordered)]))
        # One assignment each: readers on other threads see the old or the new set.
        self._literals, self._pattern = literals, pattern

    def learn(self, owner: object, secrets: Iterable[Any]) -> None:
        """Also redact ``secrets`` (replacing what ``owner``, e.g. an execution, had)."""
        found = _literals(secrets, self._min_length)
        with self._lock:
            if self._owned.get(owner, frozenset()) == found:
                return
            if found:
                self._owned[owner] = found
            else:
                self._owned.pop(owner, None)
            self._rebuild()

    def forget(self, owner: object) -> None:
        """Stop redacting what ``owner`` taught (its execution is gone)."""
        with self._lock:
            if self._owned.pop(owner, None) is not None:
                self._rebuild()

    def __len__(self) -> int:
        """How many literal secrets this redactor knows."""
        return len(self._literals)

    def text(self, text: str) -> str:
        """``text`` without any known secret and without shape-recognised credentials."""
        try:
            pattern = self._pattern
            if pattern is not None:
                text = pattern.sub(REDACTED, text)
            return redact_text(text)
        except Exception:
            return REDACTED

    def value(self, value: Any) -> Any:
        """Like :func:`redact`, also removing the known secrets from every string."""
        return _walk(value, self.text)


def _literals(secrets: Iterable[Any], min_length: int) -> frozenset[str]:
    """The literal secrets worth replacing (as text)."""
    literals: set[str] = set()
    try:
        for secret in secrets:
            s = secret if isinstance(secret, str) else str(secret)
            if len(s) >= min_length and s != REDACTED:
                literals.add(s)
    except Exception:
        pass
    return frozenset(literals)


SECRETS = Redactor()
"""The process' redactor: every execution's secret values, used by logs, Events, spans."""
