"""A circuit to and from its CircuitPolicy status: the circuit's memory across restarts.

Why it exists apart from the state machine (``engine.circuit``): what is shown
(state, rates, times) and what is remembered (the sliding window's calls, encoded
compactly, with the HalfOpen trials in flight) are a format, versioned and parsed
from untrusted text, not a decision. A replica that takes over leadership rebuilds
every circuit through :func:`from_status`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runbook_operator.api.circuitpolicy import CircuitStatus
from runbook_operator.engine.circuit import (
    ENCODING_VERSION,
    FAILURE,
    MAX_WINDOW_CALLS,
    SLOW,
    Bucket,
    CircuitState,
    Window,
    _window_of,
    _window_of_buckets,
    normalize,
)
from runbook_operator.engine.timeutil import fmt, parse


def to_status(key: str, state: CircuitState) -> CircuitStatus:
    """The circuit as shown in the policy's status (rates in percent, 1 decimal)."""
    failure_rate = state.failure_rate
    slow_rate = state.slow_call_rate
    return CircuitStatus(
        key=key,
        state=state.state,
        failure_rate=None if failure_rate is None else round(failure_rate, 1),
        slow_call_rate=None if slow_rate is None else round(slow_rate, 1),
        calls=state.calls,
        opened_at=fmt(state.opened_at) if state.opened_at else None,
        next_attempt_at=fmt(state.next_attempt_at) if state.next_attempt_at else None,
        last_transition_time=(fmt(state.last_transition_time)
                              if state.last_transition_time else None),
        transitions=state.transitions,
    )


def from_status(status: CircuitStatus, window: str | None = None) -> CircuitState:
    """The circuit back from status; ``window`` is ``encode_window``'s text.

    Without (or with an unreadable) ``window`` the calls are lost: the window
    starts empty, an Open or HalfOpen circuit counts as opened once and a
    HalfOpen one has no trial in flight. State, times and transitions survive.
    """
    opened_at = parse(status.opened_at)
    next_attempt_at = parse(status.next_attempt_at)
    last = parse(status.last_transition_time)
    memory: Memory | None = None
    if window:
        try:
            memory = decode_window(window)
        except ValueError:
            memory = None
    if memory is None:
        memory = Memory(Window(), 0 if status.state == "Closed" else 1, 0, 0)
    if status.state == "Open" and next_attempt_at is None:
        next_attempt_at = opened_at  # unknown end: due at once, i.e. HalfOpen next
    return CircuitState(
        state=status.state,
        window=memory.window,
        opened_at=normalize(opened_at) if opened_at else None,
        next_attempt_at=normalize(next_attempt_at) if next_attempt_at else None,
        consecutive_opens=memory.consecutive_opens,
        half_open_in_flight=memory.half_open_in_flight,
        half_open_successes=memory.half_open_successes,
        last_transition_time=normalize(last) if last else None,
        transitions=status.transitions,
    )


@dataclass(frozen=True)
class Memory:
    """What ``encode_window`` keeps beyond ``CircuitStatus``."""

    window: Window
    consecutive_opens: int
    half_open_in_flight: int
    half_open_successes: int


_LETTERS = {0: "s", FAILURE: "f", SLOW: "S", FAILURE | SLOW: "F"}
_CODES = {letter: code for code, letter in _LETTERS.items()}
_RUN = re.compile(r"([0-9]*)([sfSF])")
_INT = re.compile(r"-?[0-9]+")


def encode_window(state: CircuitState) -> str:
    """A compact text of the window's calls and the counters status has no field for.

    ``1;C;<opens>;<in flight>;<successes>;<runs>``: a Count window as runs of
    outcomes, oldest first, ``<n><letter>`` with ``s`` success, ``f`` failure,
    ``S`` slow success, ``F`` slow failure (``n`` omitted when 1): ``12s3f``.
    ``1;T;<opens>;<in flight>;<successes>;<buckets>``: a Time window as comma
    separated ``<second>:<calls>:<failures>:<slow>`` (trailing zeros omitted),
    the first second from the epoch, each later one as the gap from the previous.
    """
    w = state.window
    head = (f"{ENCODING_VERSION};{'C' if w.type == 'Count' else 'T'};{state.consecutive_opens};"
            f"{state.half_open_in_flight};{state.half_open_successes};")
    if w.type == "Count":
        runs: list[str] = []
        previous, count = -1, 0
        for code in (*w.outcomes, -1):
            if code == previous:
                count += 1
                continue
            if count:
                runs.append(f"{count if count > 1 else ''}{_LETTERS[previous]}")
            previous, count = code, 1
        return head + "".join(runs)
    parts: list[str] = []
    before = 0
    for b in w.buckets:
        fields = [b.second - before, b.calls, b.failures, b.slow]
        while len(fields) > 2 and fields[-1] == 0:
            fields.pop()
        parts.append(":".join(str(f) for f in fields))
        before = b.second
    return head + ",".join(parts)


def decode_window(text: str) -> Memory:
    """``encode_window``'s inverse; raises ValueError on anything it did not write."""
    parts = text.split(";")
    if len(parts) != 6 or parts[0] != ENCODING_VERSION or parts[1] not in ("C", "T"):
        raise ValueError(f"not a circuit window encoding: {text[:40]!r}")
    counters = parts[2:5]
    if not all(c.isdigit() for c in counters):
        raise ValueError(f"bad counters in circuit window encoding: {';'.join(counters)!r}")
    opens, in_flight, successes = (int(c) for c in counters)
    body = parts[5]
    if parts[1] == "C":
        outcomes: list[int] = []
        position = 0
        for match in _RUN.finditer(body):
            if match.start() != position:
                break
            count = int(match.group(1)) if match.group(1) else 1
            if count < 1 or len(outcomes) + count > MAX_WINDOW_CALLS:
                raise ValueError("bad run length in circuit window encoding")
            outcomes.extend([_CODES[match.group(2)]] * count)
            position = match.end()
        if position != len(body):
            raise ValueError(f"bad calls in circuit window encoding at {position}")
        return Memory(_window_of(tuple(outcomes)), opens, in_flight, successes)
    buckets: list[Bucket] = []
    second = 0
    for item in body.split(",") if body else []:
        fields = item.split(":")
        if not 2 <= len(fields) <= 4 or not all(_INT.fullmatch(f) for f in fields):
            raise ValueError(f"bad bucket in circuit window encoding: {item!r}")
        numbers = [int(f) for f in fields] + [0] * (4 - len(fields))
        gap, calls, failures, slow = numbers
        if (gap <= 0 and buckets) or calls < 1 or not 0 <= failures <= calls \
                or not 0 <= slow <= calls:
            raise ValueError(f"bad bucket in circuit window encoding: {item!r}")
        second += gap
        buckets.append(Bucket(second, calls, failures, slow))
    return Memory(_window_of_buckets(tuple(buckets)), opens, in_flight, successes)
