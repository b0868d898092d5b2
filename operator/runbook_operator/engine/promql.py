"""PromQL text: parameters spliced in as string literals only, and parse checks with a position.

A query step's ``expr`` is written by a Runbook author; its ``$name`` placeholders
are filled from parameters, which may come from an alert's labels, i.e. from
whoever can make a metric carry a label. A value therefore never becomes PromQL
code: ``render`` replaces each ``$name`` found outside string literals and
comments with a double-quoted literal whose every character outside printable
ASCII is a ``\\u``/``\\U`` escape, and ``"`` and ``\\`` are escaped. A newline,
``"} or vector(1) #`` or a brace stays inside the literal (the property tests
in tests/unit/engine/test_promql.py parse the result and compare its shape).

Parsing uses ``promql-parser`` (a Rust port of Prometheus's own grammar, typed,
no runtime dependencies, microseconds per expression). Its errors carry no
position, so ``parse_problem`` finds one: the longest prefix of the expression
that some closing text (brackets, a quote, an operand) still completes to a
valid query ends where the parser stopped making sense of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import promql_parser

PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
"""``$name``: a parameter, spliced in as a string literal."""

MAX_POSITION_SCAN = 4096
"""Characters of a broken expression searched for the error's position."""


class InjectionError(ValueError):
    """A value that cannot be a PromQL string literal (a lone UTF-16 surrogate)."""


@dataclass(frozen=True)
class ParseProblem:
    """Why an expression is not PromQL, and where (1-based line and column)."""

    message: str
    offset: int
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.message} (line {self.line}, column {self.column})"


def quote(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal that reads back as ``value``."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise InjectionError("the value holds a lone UTF-16 surrogate, which no "
                                 "PromQL string can carry")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
_REGEX_MATCHER = re.compile(r"[=!]~\s*$")


def quote_meta(text: str) -> str:
    """``text`` as a regular expression matching exactly it (Go's ``regexp.QuoteMeta``)."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def literal_of(value: Any) -> str:
    """The text a parameter value stands for: strings as they are, others as JSON would."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    import json
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def code_spans(expr: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_code) pieces of ``expr``: string literals and comments are not code."""
    i, start, n = 0, 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in "\"'`":
            if i > start:
                yield start, i, True
            j = i + 1
            while j < n and expr[j] != ch:
                j += 2 if expr[j] == "\\" and ch != "`" else 1
            end = min(j + 1, n)
            yield i, end, False
            i = start = end
            continue
        if ch == "#":
            if i > start:
                yield start, i, True
            j = expr.find("\n", i)
            j = n if j < 0 else j
            yield i, j, False
            i = start = j
            continue
        i += 1
    if start < n:
        yield start, n, True


def placeholders(expr: str) -> list[str]:
    """The parameter names an expression's ``$name`` placeholders read, in order."""
    names = []
    for start, end, code in code_spans(expr):
        if code:
            names += [m.group(1) for m in PLACEHOLDER.finditer(expr, start, end)]
    return names


def render(expr: str, values: Mapping[str, Any]) -> str:
    """``expr`` with each ``$name`` outside literals replaced by ``quote(values[name])``.

    After ``=~`` or ``!~`` the value is a regular expression's text: its metacharacters
    are escaped first (``quote_meta``), so ``.*`` matches a dot and a star, not every
    series. Raises ``KeyError`` for a name not in ``values`` and ``InjectionError`` for a value
    that has no PromQL literal.
    """
    out = []
    for start, end, code in code_spans(expr):
        piece = expr[start:end]
        if code:
            piece = PLACEHOLDER.sub(lambda m: _literal(m, values), piece)
        out.append(piece)
    return "".join(out)


def _literal(match: re.Match[str], values: Mapping[str, Any]) -> str:
    text = literal_of(values[match.group(1)])
    if _REGEX_MATCHER.search(match.string, 0, match.start()):
        text = quote_meta(text)
    return quote(text)


def parse(expr: str) -> promql_parser.Expr:
    """The parsed expression; raises ``ValueError`` with the parser's message."""
    try:
        return promql_parser.parse(expr)
    except ValueError:
        raise
    except Exception as exc:  # a panic in the binding surfaces as another type
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def _parses(text: str) -> bool:
    try:
        promql_parser.parse(text)
    except Exception:
        return False
    return True


_OPERANDS = ("", "x", "1", "a=\"\"", " x", " 1", "x[5m]", "[5m]", "5m", "m", "\"\"", "=\"\"",
             "\"\")", "(x)", "(x[5m])")
_CLOSERS = {"(": ")", "{": "}", "[": "]"}
_WORD = re.compile(r"[A-Za-z0-9_:.]")
_QUOTED_TOKEN = re.compile(r"(?:syntax: (?P<bare>\S+)$|(?:name|sequence) '(?P<quoted>[^']+)')")


def _closing(prefix: str) -> str:
    """The brackets (and an open string's quote) that ``prefix`` leaves open, closed."""
    stack: list[str] = []
    i, n = 0, len(prefix)
    while i < n:
        ch = prefix[i]
        if ch in "\"'`":
            j = i + 1
            while j < n and prefix[j] != ch:
                j += 2 if prefix[j] == "\\" and ch != "`" else 1
            if j >= n:  # unterminated: close it (a dangling backslash's escape first)
                escape = "n" if j > n else ""
                return escape + ch + "".join(reversed(stack))
            i = j + 1
            continue
        if ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
        i += 1
    return "".join(reversed(stack))


def _viable(prefix: str) -> bool:
    """Whether some short completion makes ``prefix`` a valid query."""
    closing = _closing(prefix)
    closings = [closing]
    brace = closing.find("}")
    if brace >= 0:  # a selector inside a function over a range: x{...}[5m]
        closings.append(closing[:brace + 1] + "[5m]" + closing[brace + 1:])
    return any(_parses(prefix + operand + close + tail) for close in closings
               for tail in ("", " (x)", " (x) (x)") for operand in _OPERANDS)


def _offset(expr: str, message: str) -> int:
    """Where parsing ``expr`` went wrong: a token the message names, else the scan."""
    if "end of input" in message or "unclosed" in message:
        return len(expr)
    named = _QUOTED_TOKEN.search(message)
    if named is not None:
        found = expr.find(named.group("bare") or named.group("quoted"))
        if found >= 0:
            return found
    scan = min(len(expr), MAX_POSITION_SCAN)
    # Token ends: inside a word, a keyword or name cut short is no evidence.
    ends = [k for k in range(1, scan + 1)
            if k == len(expr) or not (_WORD.match(expr[k - 1]) and _WORD.match(expr[k]))]
    # Viable prefixes are closed under taking a shorter prefix: bisect for the first
    # token end that is not viable (a few hundred parses, not one per character).
    lo, hi = 0, len(ends)
    while lo < hi:
        mid = (lo + hi) // 2
        if _viable(expr[:ends[mid]]):
            lo = mid + 1
        else:
            hi = mid
    if lo == len(ends):
        return scan
    last = ends[lo - 1] if lo > 0 else 0
    while last < ends[lo] and expr[last].isspace():
        last += 1
    return last


def parse_problem(expr: str) -> ParseProblem | None:
    """None when ``expr`` parses; else the parser's message and where it went wrong.

    The position is the first character at which no short completion (an operand,
    closing brackets and quotes) makes the text before it, with it, valid PromQL:
    for ``sum(rate(x[5m])) bar`` that is the ``b`` of ``bar``; for an expression
    that is merely cut short, the end of the input.
    """
    try:
        parse(expr)
    except ValueError as exc:
        message = str(exc).strip() or "invalid PromQL"
    else:
        return None
    offset = _offset(expr, message)
    line = expr.count("\n", 0, offset) + 1
    column = offset - (expr.rfind("\n", 0, offset) + 1) + 1
    return ParseProblem(message, offset, line, column)
