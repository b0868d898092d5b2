"""The circuit breaker of a CircuitPolicy as a pure state machine.

A guarded step asks ``admit`` before its Job is created and reports every
finished attempt to ``record``; ``tick`` moves an Open circuit to HalfOpen when
its open duration is over, and ``next_wakeup`` says when that is. Every function
takes the state and returns a new one: no clock reads (``now`` is passed in), no
randomness, no I/O. The state survives restarts through ``to_status`` /
``from_status`` plus ``encode_window`` (the window's calls and the counters the
status model has no field for).

Semantics are resilience4j's, which SREs know:

- A finished attempt is a call: a failure (narrowed by ``failureOn``, see
  ``classify``) or not, and slow or not (duration above
  ``slowCallDurationThreshold``). The two are independent: a slow failure counts
  in both the failure rate and the slow-call rate, as in resilience4j.
- Count window: the last ``size`` calls. Time window: the calls that finished in
  the current epoch second and the ``size - 1`` before it, aggregated per second
  (resilience4j's buckets), so the state stays bounded whatever the call rate.
- Closed opens, when a call is recorded, if the window holds at least
  ``minimumCalls`` calls (for a Count window ``min(minimumCalls, size)``, as
  resilience4j does) and the failure rate is >= ``failureRateThreshold`` or,
  when ``slowCallDurationThreshold`` is set, the slow-call rate is >=
  ``slowCallRateThreshold``.
- Open rejects until ``next_attempt_at``: ``openDuration``, doubled on each
  consecutive open when ``maxOpenDuration`` is set and capped by it; the count of
  consecutive opens resets when the circuit closes. Calls admitted before the
  circuit opened and finishing while it is Open are recorded (rates only).
- HalfOpen starts with an empty window and admits exactly
  ``halfOpen.permittedCalls`` trial calls. It closes (window cleared) once all of
  them succeeded; the first failed or slow trial reopens it. While every permit
  is taken, further calls are rejected. Only a call admitted as a trial
  (``Decision.trial``, passed back as ``Call.trial``) of the current period
  (``Call.admitted_at`` not before the period began) has a say; any other call
  finishing while HalfOpen is ignored. ``release`` gives back a permit whose call
  never ran. The caller keeps (trial, admitted_at) with the attempt: with the
  time alone, a call admitted in Disabled mode during HalfOpen would look like a
  trial and free a permit it never held.
- Modes: ForcedOpen rejects everything, Disabled admits everything; neither
  records a call. MetricsOnly admits everything and records. None of the three
  ever transitions; back in Normal the circuit resumes from its recorded state.
  In every mode a finished trial call gives its permit back.

Times are kept at millisecond precision, the precision of timestamps in status,
so that a state written to status and read back is equal to the original.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, SlidingWindow
from runbook_operator.api.common import parse_duration
from runbook_operator.engine.timeutil import fmt

State = Literal["Closed", "Open", "HalfOpen"]
Verdict = Literal["Allow", "Reject"]
WindowType = Literal["Count", "Time"]

FAILURE = 1
SLOW = 2
"""Bits of a call's outcome code in a Count window: 0 success, 1 failure, 2 slow, 3 both."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
ENCODING_VERSION = "1"
MAX_WINDOW_CALLS = 10_000
"""The largest Count window the API allows (``slidingWindow.size``); bounds decoding."""


def normalize(moment: datetime) -> datetime:
    """UTC, truncated to the millisecond; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    micro = moment.microsecond
    return moment if micro % 1000 == 0 else moment.replace(microsecond=micro - micro % 1000)


def epoch_second(moment: datetime) -> int:
    """Whole seconds since the epoch (floor), the key of a Time window's bucket."""
    return (normalize(moment) - _EPOCH) // _SECOND


# -- calls and the sliding window ------------------------------------------------------

CallOutcome = Literal["success", "failure", "slow", "rejected"]
"""A call as the metrics count it: a slow failure is a ``failure``; ``rejected`` was
never made (the circuit or its bulkhead said no)."""


@dataclass(frozen=True)
class Call:
    """One finished attempt of a guarded step, as the circuit sees it."""

    at: datetime
    """When it finished; a time after ``now`` counts as ``now``."""
    failure: bool
    """A failure for the circuit (after ``failureOn``)."""
    slow: bool = False
    """Slower than ``slowCallDurationThreshold``; independent of ``failure``."""
    trial: bool = False
    """``admit`` let it through as a HalfOpen trial (``Decision.trial``)."""
    admitted_at: datetime | None = None
    """When ``admit`` let it through; tells a trial of the current HalfOpen period
    from one of an earlier period. None: taken as the current period."""

    @property
    def code(self) -> int:
        return (FAILURE if self.failure else 0) | (SLOW if self.slow else 0)


@dataclass(frozen=True)
class Bucket:
    """The calls of one epoch second of a Time window."""

    second: int
    calls: int
    failures: int
    slow: int


@dataclass(frozen=True)
class Window:
    """The calls the rates are computed over, with running totals.

    Count: ``outcomes`` holds one code per call (``FAILURE | SLOW`` bits), oldest
    first, at most ``size``. Time: ``buckets`` holds one aggregate per epoch
    second, oldest first, only seconds inside the window.
    """

    type: WindowType = "Count"
    outcomes: tuple[int, ...] = ()
    buckets: tuple[Bucket, ...] = ()
    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float | None:
        """Percent of calls that failed; None for an empty window."""
        return None if not self.calls else self.failures * 100.0 / self.calls

    @property
    def slow_call_rate(self) -> float | None:
        return None if not self.calls else self.slow * 100.0 / self.calls


def _window_of(outcomes: tuple[int, ...]) -> Window:
    return Window(
        type="Count",
        outcomes=outcomes,
        calls=len(outcomes),
        failures=sum(1 for c in outcomes if c & FAILURE),
        slow=sum(1 for c in outcomes if c & SLOW),
    )


def _window_of_buckets(buckets: tuple[Bucket, ...]) -> Window:
    return Window(
        type="Time",
        buckets=buckets,
        calls=sum(b.calls for b in buckets),
        failures=sum(b.failures for b in buckets),
        slow=sum(b.slow for b in buckets),
    )


def _fit(window: Window, spec: SlidingWindow, now_second: int) -> Window:
    """The window under ``spec`` at ``now``: oldest calls beyond its size dropped.

    A window of the other type (the policy was edited) starts over empty.
    """
    if window.type != spec.type:
        return Window(type=spec.type)
    if spec.type == "Count":
        excess = len(window.outcomes) - spec.size
        if excess <= 0:
            return window
        return _window_of(window.outcomes[excess:])
    oldest = now_second - spec.size + 1
    buckets = window.buckets
    if not buckets or buckets[0].second >= oldest:
        return window
    keep = bisect.bisect_left([b.second for b in buckets], oldest)
    return _window_of_buckets(buckets[keep:])


def _add(window: Window, spec: SlidingWindow, code: int, second: int, now_second: int) -> Window:
    """``window`` (already fitted to ``spec`` at ``now``) with one more call."""
    failure = 1 if code & FAILURE else 0
    slow = 1 if code & SLOW else 0
    if spec.type == "Count":
        outcomes = window.outcomes
        calls, failures, slows = window.calls + 1, window.failures + failure, window.slow + slow
        if len(outcomes) >= spec.size:
            dropped = outcomes[: len(outcomes) - spec.size + 1]
            outcomes = outcomes[len(dropped):]
            calls -= len(dropped)
            failures -= sum(1 for c in dropped if c & FAILURE)
            slows -= sum(1 for c in dropped if c & SLOW)
        return Window("Count", (*outcomes, code), (), calls, failures, slows)
    second = min(second, now_second)
    if second <= now_second - spec.size:
        return window  # finished before the window began
    buckets = window.buckets
    if buckets and buckets[-1].second == second:
        last = buckets[-1]
        buckets = (*buckets[:-1], Bucket(second, last.calls + 1, last.failures + failure,
                                         last.slow + slow))
    elif not buckets or buckets[-1].second < second:
        buckets = (*buckets, Bucket(second, 1, failure, slow))
    else:  # a late report of an earlier second
        seconds = [b.second for b in buckets]
        i = bisect.bisect_left(seconds, second)
        if seconds[i] == second:
            old = buckets[i]
            merged = Bucket(second, old.calls + 1, old.failures + failure, old.slow + slow)
            buckets = (*buckets[:i], merged, *buckets[i + 1:])
        else:
            buckets = (*buckets[:i], Bucket(second, 1, failure, slow), *buckets[i:])
    return Window("Time", (), buckets, window.calls + 1, window.failures + failure,
                  window.slow + slow)


# -- state, decisions, transitions -----------------------------------------------------


@dataclass(frozen=True)
class CircuitState:
    """One circuit (one key of a policy)."""

    state: State = "Closed"
    window: Window = field(default_factory=Window)
    opened_at: datetime | None = None
    """When it last opened (kept through HalfOpen; cleared when it closes)."""
    next_attempt_at: datetime | None = None
    """While Open: when it goes HalfOpen."""
    consecutive_opens: int = 0
    """Opens since it was last Closed; sets the open duration."""
    half_open_in_flight: int = 0
    """Trial calls admitted in this HalfOpen period and not finished yet."""
    half_open_successes: int = 0
    last_transition_time: datetime | None = None
    """Also the start of the current HalfOpen period."""
    transitions: int = 0

    @property
    def calls(self) -> int:
        return self.window.calls

    @property
    def failure_rate(self) -> float | None:
        return self.window.failure_rate

    @property
    def slow_call_rate(self) -> float | None:
        return self.window.slow_call_rate


@dataclass(frozen=True)
class Transition:
    from_: State
    to: State
    at: datetime
    reason: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    """For history messages: ``circuit openai is Open until 2026-11-27T10:32:05.000Z``."""
    trial: bool = False
    """The call holds a HalfOpen trial permit: report it to ``record`` (or ``release``)."""
    transitions: tuple[Transition, ...] = ()
    """Time-driven transitions taken before deciding (Open -> HalfOpen)."""

    @property
    def allowed(self) -> bool:
        return self.verdict == "Allow"


def open_duration(policy: CircuitPolicySpec, consecutive_opens: int) -> timedelta:
    """How long the ``consecutive_opens``-th open in a row lasts (1-based).

    ``openDuration * 2**(n-1)`` capped at ``maxOpenDuration`` when that is set
    (never below ``openDuration``); plain ``openDuration`` otherwise.
    """
    base = parse_duration(policy.open_duration)
    if policy.max_open_duration is None:
        return base
    cap = max(base, parse_duration(policy.max_open_duration))
    doublings = max(0, consecutive_opens - 1)
    if doublings >= 64 or base * (1 << doublings) >= cap:
        return cap
    return base * (1 << doublings)


def _slow_matters(policy: CircuitPolicySpec) -> bool:
    return policy.slow_call_duration_threshold is not None


def _at_least(count: int, calls: int, percent: float) -> bool:
    """``count / calls * 100 >= percent``, exactly (no float rounding at the boundary)."""
    num, den = percent.as_integer_ratio()
    return count * 100 * den >= num * calls


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _human(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"


def _fitted(state: CircuitState, policy: CircuitPolicySpec, now: datetime) -> CircuitState:
    window = _fit(state.window, policy.sliding_window, epoch_second(now))
    return state if window is state.window else replace(state, window=window)


def _move(state: CircuitState, to: State, now: datetime, reason: str,
          **changes: Any) -> tuple[CircuitState, Transition]:
    moved = replace(state, state=to, last_transition_time=now,
                    transitions=state.transitions + 1, **changes)
    return moved, Transition(state.state, to, now, reason)


def _open(state: CircuitState, policy: CircuitPolicySpec, now: datetime,
          reason: str) -> tuple[CircuitState, Transition]:
    opens = state.consecutive_opens + 1
    until = now + open_duration(policy, opens)
    return _move(state, "Open", now, f"{reason}; open until {fmt(until)}",
                 opened_at=now, next_attempt_at=until, consecutive_opens=opens,
                 half_open_in_flight=0, half_open_successes=0)


def _advance(state: CircuitState, policy: CircuitPolicySpec,
             now: datetime) -> tuple[CircuitState, list[Transition]]:
    """Open -> HalfOpen once ``next_attempt_at`` is reached (Normal mode only)."""
    if policy.mode != "Normal" or state.state != "Open":
        return state, []
    if state.next_attempt_at is not None and now < state.next_attempt_at:
        return state, []
    permitted = policy.half_open.permitted_calls
    moved, transition = _move(
        state, "HalfOpen", now,
        f"open duration over; admitting {permitted} trial call{'s' if permitted > 1 else ''}",
        window=Window(type=policy.sliding_window.type), next_attempt_at=None,
        half_open_in_flight=0, half_open_successes=0)
    return moved, [transition]


def tick(state: CircuitState, policy: CircuitPolicySpec,
         now: datetime) -> tuple[CircuitState, list[Transition]]:
    """Time-driven changes at ``now``: the window's old calls age out, Open turns HalfOpen."""
    now = normalize(now)
    return _advance(_fitted(state, policy, now), policy, now)


def next_wakeup(state: CircuitState, policy: CircuitPolicySpec) -> datetime | None:
    """When ``tick`` would next change the state: the end of an Open period, else None.

    Calls ageing out of a Time window change the rates, never the state, so they
    wake nothing up.
    """
    if policy.mode != "Normal" or state.state != "Open":
        return None
    return state.next_attempt_at if state.next_attempt_at is not None else state.opened_at


def admit(state: CircuitState, policy: CircuitPolicySpec, now: datetime, *,
          key: str = "") -> tuple[CircuitState, Decision]:
    """May a guarded call start at ``now``? Takes a trial permit when HalfOpen."""
    now = normalize(now)
    name = f"circuit {key}" if key else "circuit"
    state = _fitted(state, policy, now)
    mode = policy.mode
    if mode == "ForcedOpen":
        return state, Decision("Reject", f"{name} is forced open (mode ForcedOpen)")
    if mode == "Disabled":
        return state, Decision("Allow", f"{name} is disabled (mode Disabled)")
    if mode == "MetricsOnly":
        return state, Decision("Allow", f"{name} only records (mode MetricsOnly)")
    state, moved = _advance(state, policy, now)
    transitions = tuple(moved)
    if state.state == "Closed":
        return state, Decision("Allow", f"{name} is Closed", transitions=transitions)
    if state.state == "Open":
        until = fmt(state.next_attempt_at) if state.next_attempt_at else "further notice"
        return state, Decision("Reject", f"{name} is Open until {until}", transitions=transitions)
    permitted = policy.half_open.permitted_calls
    taken = state.half_open_in_flight + state.half_open_successes
    if taken >= permitted:
        return state, Decision(
            "Reject", f"{name} is HalfOpen and its {permitted} trial "
            f"call{'s are' if permitted > 1 else ' is'} taken", transitions=transitions)
    state = replace(state, half_open_in_flight=state.half_open_in_flight + 1)
    return state, Decision("Allow", f"{name} is HalfOpen: trial call {taken + 1} of {permitted}",
                           trial=True, transitions=transitions)


def _is_trial(state: CircuitState, call: Call) -> bool:
    if not call.trial or state.state != "HalfOpen" or state.half_open_in_flight <= 0:
        return False
    since = state.last_transition_time
    return call.admitted_at is None or since is None or normalize(call.admitted_at) >= since


def release(state: CircuitState, admitted_at: datetime | None = None) -> CircuitState:
    """Give back a trial permit whose call never ran (the step was cancelled or skipped).

    ``admitted_at``: when the permit was granted; a permit of an earlier HalfOpen
    period is not given back (it is void already).
    """
    probe = Call(at=_EPOCH, failure=False, trial=True, admitted_at=admitted_at)
    if not _is_trial(state, probe):
        return state
    return replace(state, half_open_in_flight=state.half_open_in_flight - 1)


def record(state: CircuitState, policy: CircuitPolicySpec, call: Call,
           now: datetime) -> tuple[CircuitState, list[Transition]]:
    """Take a finished call into account at ``now``; may open, close or reopen the circuit."""
    now = normalize(now)
    spec = policy.sliding_window
    now_second = epoch_second(now)
    state, transitions = _advance(_fitted(state, policy, now), policy, now)
    trial = _is_trial(state, call)
    if trial:
        state = replace(state, half_open_in_flight=state.half_open_in_flight - 1)
    mode = policy.mode
    if mode in ("ForcedOpen", "Disabled"):
        return state, transitions
    if state.state == "HalfOpen" and not trial and mode == "Normal":
        return state, transitions  # no trial of this period: no say in it
    second = min(epoch_second(call.at), now_second)
    state = replace(state, window=_add(state.window, spec, call.code, second, now_second))
    if mode != "Normal":
        return state, transitions
    slow = call.slow and _slow_matters(policy)
    if state.state == "HalfOpen":
        if call.failure or slow:
            what = "failed" if call.failure else "was slow"
            state, moved = _open(state, policy, now, f"trial call {what}")
            return state, [*transitions, moved]
        state = replace(state, half_open_successes=state.half_open_successes + 1)
        permitted = policy.half_open.permitted_calls
        if state.half_open_successes >= permitted:
            state, moved = _move(
                state, "Closed", now,
                f"{permitted} trial call{'s' if permitted > 1 else ''} succeeded",
                window=Window(type=spec.type), opened_at=None, next_attempt_at=None,
                consecutive_opens=0, half_open_in_flight=0, half_open_successes=0)
            return state, [*transitions, moved]
        return state, transitions
    if state.state != "Closed":
        return state, transitions
    reason = opening_reason(state.window, policy)
    if reason is None:
        return state, transitions
    state, moved = _open(state, policy, now, reason)
    return state, [*transitions, moved]


def minimum_calls(policy: CircuitPolicySpec) -> int:
    """Calls the window must hold before the circuit may open."""
    spec = policy.sliding_window
    if spec.type == "Count":
        return min(policy.minimum_calls, spec.size)
    return policy.minimum_calls


def opening_reason(window: Window, policy: CircuitPolicySpec) -> str | None:
    """Why a Closed circuit with this window opens, or None when it stays Closed."""
    calls = window.calls
    if calls < minimum_calls(policy):
        return None
    if _at_least(window.failures, calls, policy.failure_rate_threshold):
        return (f"failure rate {_pct(window.failures * 100 / calls)} >= "
                f"{policy.failure_rate_threshold:g}% over {calls} calls")
    if _slow_matters(policy) and _at_least(window.slow, calls, policy.slow_call_rate_threshold):
        return (f"slow call rate {_pct(window.slow * 100 / calls)} >= "
                f"{policy.slow_call_rate_threshold:g}% over {calls} calls")
    return None


def classify(policy: CircuitPolicySpec, *, at: datetime, failed: bool, exit_code: int | None,
             timed_out: bool, duration: timedelta, trial: bool = False,
             admitted_at: datetime | None = None) -> Call:
    """A finished attempt as a circuit call.

    Without ``failureOn`` every failed attempt is a failure. With it: a timeout
    is a failure iff ``timeouts``; another failure is one iff ``exitCodes`` is
    unset or lists its exit code (an attempt failed with no exit code, e.g. a pod
    that never started, then does not count). What does not count is a success
    for the circuit. Slow: ``duration`` above ``slowCallDurationThreshold``,
    whatever the outcome.
    """
    failure = failed or timed_out
    rule = policy.failure_on
    if failure and rule is not None:
        if timed_out:
            failure = rule.timeouts
        else:
            failure = rule.exit_codes is None or exit_code in rule.exit_codes
    threshold = policy.slow_call_duration_threshold
    slow = threshold is not None and duration > parse_duration(threshold)
    return Call(at=at, failure=failure, slow=slow, trial=trial, admitted_at=admitted_at)


# -- status ----------------------------------------------------------------------------
