"""Alertmanager label matchers: ``alertname="HighMemoryUsage"``, ``severity=~"critical|warning"``.

A Runbook's alert trigger says which alerts start it in the syntax its authors
already write in Alertmanager routes, and it must mean exactly what it means
there. So the four operators, the quoting and escapes of Alertmanager's parser,
and regular expressions with Go's RE2 semantics, fully anchored (``^(?:re)$``), run
by RE2 itself: label values come from alerts, which are untrusted input, and RE2
matches in linear time whatever the pattern (no catastrophic backtracking).

As in Alertmanager, a missing label matches as the empty string: ``team=""``
matches alerts without a ``team`` label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

MAX_MATCHER_LENGTH = 1024

Operator = Literal["=", "!=", "=~", "!~"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATOR = re.compile(r"\s*(=~|!~|!=|=)\s*")
_UNQUOTED_VALUE = re.compile(r"[^\"'{}\s,]*")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors are raised, not printed to stderr
_RE2_OPTIONS.max_mem = 8 << 20   # bounds what one hostile pattern may allocate


class MatcherError(ValueError):
    """A matcher that does not parse; the message says where and why."""


@dataclass(frozen=True)
class Matcher:
    """One parsed matcher: ``name``, operator, ``value`` (a regex for ``=~``/``!~``)."""

    name: str
    op: Operator
    value: str
    _regex: Any = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        value = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{value}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; raise :class:`MatcherError` naming the problem.

    Forms: ``name="value"`` (escapes ``\\"``, ``\\\\``, ``\\n``, ``\\t``; any other
    backslash pair, such as ``\\d`` in a regex, is kept as written), or
    an unquoted value without spaces, quotes, commas or braces; the label name
    may be quoted too. Optional surrounding braces (``{a="b"}``) are accepted.
    """
    if not isinstance(text, str):
        raise MatcherError(f"a matcher must be a string, not {type(text).__name__}")
    if len(text) > MAX_MATCHER_LENGTH:
        raise MatcherError(f"matcher is longer than {MAX_MATCHER_LENGTH} characters")
    source = text.strip()
    if source.startswith("{") and source.endswith("}"):
        source = source[1:-1].strip()
    if not source:
        raise MatcherError("empty matcher (expected name=\"value\")")
    pos = 0
    if source.startswith('"'):
        name, pos = _quoted(source, 0, text)
        if not name:
            raise MatcherError(f"{text!r}: the label name is empty")
    else:
        m = _NAME.match(source)
        if m is None:
            raise MatcherError(f"{text!r}: expected a label name at the start "
                               "(letters, digits, _; or a quoted name)")
        name, pos = m.group(0), m.end()
    op_match = _OPERATOR.match(source, pos)
    if op_match is None:
        raise MatcherError(f"{text!r}: expected one of =, !=, =~, !~ after {name!r}")
    op: Operator = op_match.group(1)  # type: ignore[assignment]
    pos = op_match.end()
    if source.startswith('"', pos):
        value, pos = _quoted(source, pos, text)
    else:
        m = _UNQUOTED_VALUE.match(source, pos)
        assert m is not None  # the pattern matches the empty string
        value, pos = m.group(0), m.end()
    if source[pos:].strip():
        raise MatcherError(f"{text!r}: unexpected {source[pos:].strip()[:20]!r} after the "
                           "value (one matcher per list entry; quote values with spaces)")
    regex = None
    if op in ("=~", "!~"):
        try:
            regex = re2.compile(f"^(?:{value})$", _RE2_OPTIONS)
        except Exception as exc:  # re2.error; odd input may raise others
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode(errors="replace")
            raise MatcherError(f"{text!r}: invalid regular expression: {reason}") from None
    return Matcher(name, op, value, regex)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def _quoted(source: str, start: int, text: str) -> tuple[str, int]:
    """A double-quoted string at ``start``: (its value, the index after the closing quote)."""
    out: list[str] = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            if i + 1 >= len(source):
                raise MatcherError(f"{text!r}: a backslash ends the value")
            # Other escapes (\d in a regex) are kept as written, for RE2 to read.
            out.append(_ESCAPES.get(source[i + 1], source[i:i + 2]))
            i += 2
            continue
        out.append(char)
        i += 1
    raise MatcherError(f"{text!r}: missing closing quote")
