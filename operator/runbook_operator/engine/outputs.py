"""A step's termination message, parsed with limits: what a container writes is untrusted.

A step may write anything to ``/dev/termination-log``: binary, invalid UTF-8, a
megabyte under a kubelet that does not cap it, JSON nested ten thousand deep,
``1e999``. None of it may stop the run: what exceeds a limit is dropped with a
warning on the step, and every string that reaches the status is valid UTF-8.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_MESSAGE_BYTES = 4096
"""The kubelet's own limit on a termination message."""
MAX_DEPTH = 16
"""Nesting of objects and arrays in outputs."""
MAX_NODES = 512
"""Keys, array items and values in outputs, all counted."""
MAX_KEY_LENGTH = 256
INT64 = 2**63
"""The apiserver stores JSON integers as int64: a larger one would fail the status write."""


class OutputsError(ValueError):
    """Why outputs were ignored; the message is written on the step."""


def clean_text(text: Any) -> str:
    """``text`` as valid UTF-8 text: lone surrogates and NULs replaced (never raises)."""
    out: str
    if isinstance(text, str):
        out = text
    else:
        try:
            out = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        except Exception:
            return ""
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = out.encode("utf-8", "replace").decode("utf-8")
    return out.replace("\x00", "\ufffd")


def _reject_constant(name: str) -> Any:
    raise OutputsError(f"{name} is not JSON")


def parse_outputs(message: Any) -> tuple[dict[str, Any], str | None]:
    """A step's outputs from its termination message, and a warning when they are ignored.

    Never raises: any failure is ``({}, "outputs ignored: <why>")``.
    """
    try:
        return _parse(message), None
    except OutputsError as exc:
        return {}, f"outputs ignored: {exc}"
    except Exception as exc:  # whatever else odd input finds
        return {}, ("outputs ignored: the termination message could not be read "
                    f"({type(exc).__name__})")


def _parse(message: Any) -> dict[str, Any]:
    if message is None:
        return {}
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise OutputsError("the termination message is not valid UTF-8") from None
    if not isinstance(message, str):
        raise OutputsError("the termination message is not text")
    if not message.strip():
        return {}
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        raise OutputsError("the termination message is not valid UTF-8") from None
    if size > MAX_MESSAGE_BYTES:
        raise OutputsError(f"the termination message has {size} bytes, more than "
                           f"{MAX_MESSAGE_BYTES}")
    if "\x00" in message:
        raise OutputsError("the termination message holds NUL characters")
    _check_depth(message)
    try:
        value = json.loads(message, parse_constant=_reject_constant)
    except OutputsError:
        raise
    except (ValueError, RecursionError):
        raise OutputsError("the termination message is not a JSON object") from None
    if not isinstance(value, dict):
        raise OutputsError("the termination message is not a JSON object")
    _check_tree(value)
    return value


def _check_depth(text: str) -> None:
    """Refuse deep nesting before the parser recurses into it (a cheap scan)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise OutputsError(f"outputs are nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _check_tree(value: Any) -> None:
    """Count nodes and check keys and numbers, iteratively."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise OutputsError(f"outputs hold more than {MAX_NODES} keys and values")
        if depth > MAX_DEPTH:
            raise OutputsError(f"outputs are nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if len(key) > MAX_KEY_LENGTH:
                    raise OutputsError(f"an outputs key is longer than {MAX_KEY_LENGTH} "
                                       "characters")
                _check_string(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_string(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise OutputsError("outputs hold a number JSON cannot carry")
        elif isinstance(item, int) and not isinstance(item, bool) and \
                not -INT64 <= item < INT64:
            raise OutputsError("outputs hold an integer beyond 64 bits")


def _check_string(text: str) -> None:
    """``\\ud800`` escapes decode to lone surrogates: not UTF-8, unwritable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise OutputsError("outputs hold text that is not valid UTF-8") from None
    if "\x00" in text:
        raise OutputsError("outputs hold NUL characters")
