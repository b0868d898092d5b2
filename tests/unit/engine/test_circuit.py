"""The circuit breaker state machine (engine/circuit.py), case by case.

Cases:

- it opens at the failure-rate threshold (>=), and only once the window holds
  minimumCalls calls; the transition says why; a Count window caps minimumCalls
  at its size (resilience4j);
- Count window: only the last ``size`` calls count; Time window: only the calls
  of the current epoch second and the ``size - 1`` before it; a late report
  older than the window counts for nothing; a Time window opens too;
- slow calls: above slowCallDurationThreshold (strictly), they open it at
  slowCallRateThreshold; a slow failure counts in both rates; without the
  threshold nothing is slow;
- Open rejects, with a reason naming the key and the end of the open period;
- after openDuration: tick (or admit) moves it to HalfOpen, next_wakeup says
  when; HalfOpen admits exactly permittedCalls trials and rejects the rest;
- all trials succeed -> Closed, window cleared; a failed (or slow) trial ->
  Open again; a call admitted before the HalfOpen period is no trial; release
  gives an unused permit back;
- the open duration doubles on each consecutive open up to maxOpenDuration, and
  starts over after the circuit closed; without maxOpenDuration it is constant;
- modes: ForcedOpen rejects and never transitions; Disabled admits and records
  nothing; MetricsOnly records and computes rates but never opens; back in
  Normal the circuit resumes from the recorded state;
- failureOn: exit codes and timeouts narrow what is a failure;
- status: rates in percent with one decimal, RFC 3339 times; the round trip
  keeps an Open circuit Open with the same nextAttemptAt, and with
  encode_window nothing at all is lost; bad encodings raise ValueError and
  from_status survives them;
- policy edits: a new window type starts an empty window, a smaller Count
  window keeps the newest calls;
- purity: times are normalised to UTC milliseconds; the input state is reused
  untouched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, CircuitStatus
from runbook_operator.engine import circuit
from runbook_operator.engine.circuit import (
    Call,
    CircuitState,
    admit,
    classify,
    next_wakeup,
    record,
    tick,
)
from runbook_operator.engine.circuit_status import (
    decode_window,
    encode_window,
    from_status,
    to_status,
)
from runbook_operator.engine.timeutil import fmt

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)


def policy(**spec: Any) -> CircuitPolicySpec:
    """A policy from camelCase fields, as written in YAML."""
    return CircuitPolicySpec.model_validate(spec)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def feed(state: CircuitState, pol: CircuitPolicySpec, outcomes: str, start: float = 0.0,
         step: float = 1.0) -> tuple[CircuitState, list[circuit.Transition]]:
    """Admit and record one call per letter: s success, f failure, S slow, F slow failure."""
    transitions: list[circuit.Transition] = []
    for i, letter in enumerate(outcomes):
        now = at(start + i * step)
        state, decision = admit(state, pol, now)
        transitions += decision.transitions
        if not decision.allowed:
            continue
        call = Call(at=now, failure=letter in "fF", slow=letter in "SF", trial=decision.trial,
                    admitted_at=now)
        state, moved = record(state, pol, call, now)
        transitions += moved
    return state, transitions


def trial_call(finished: float, *, failure: bool = False, slow: bool = False,
               admitted: float = 11) -> Call:
    return Call(at=at(finished), failure=failure, slow=slow, trial=True, admitted_at=at(admitted))


def opened(pol: CircuitPolicySpec, start: float = 0.0) -> CircuitState:
    state, _ = feed(CircuitState(), pol, "f" * max(pol.minimum_calls, 1), start=start)
    assert state.state == "Open"
    return state


# -- opening -----------------------------------------------------------------------------


def test_opens_at_threshold_only_after_minimum_calls() -> None:
    pol = policy(slidingWindow={"type": "Count", "size": 10}, minimumCalls=5,
                 failureRateThreshold=50)
    state, transitions = feed(CircuitState(), pol, "ffff")
    assert state.state == "Closed" and state.calls == 4 and state.failure_rate == 100
    state, transitions = feed(state, pol, "s", start=4)
    assert state.state == "Open"
    assert [(t.from_, t.to) for t in transitions] == [("Closed", "Open")]
    assert transitions[0].reason.startswith("failure rate 80.0% >= 50% over 5 calls")
    assert state.opened_at == at(4) and state.next_attempt_at == at(64)
    assert state.consecutive_opens == 1 and state.transitions == 1


def test_threshold_is_inclusive_and_below_stays_closed() -> None:
    pol = policy(slidingWindow={"type": "Count", "size": 10}, minimumCalls=4,
                 failureRateThreshold=50)
    state, _ = feed(CircuitState(), pol, "fss")
    assert state.state == "Closed"
    state, _ = feed(state, pol, "f", start=3)  # 2 of 4 = 50%
    assert state.state == "Open"
    below, _ = feed(CircuitState(), policy(minimumCalls=4, failureRateThreshold=50.1), "fssf")
    assert below.state == "Closed" and below.failure_rate == 50


def test_count_window_minimum_calls_capped_at_size() -> None:
    pol = policy(slidingWindow={"type": "Count", "size": 3}, minimumCalls=10)
    state, _ = feed(CircuitState(), pol, "fff")
    assert state.state == "Open" and state.calls == 3
    time_pol = policy(slidingWindow={"type": "Time", "size": 3}, minimumCalls=10)
    state, _ = feed(CircuitState(), time_pol, "f" * 9, step=0.1)
    assert state.state == "Closed" and state.calls == 9


# -- windows -------------------------------------------------------------------------------


def test_count_window_keeps_the_last_size_calls() -> None:
    pol = policy(slidingWindow={"type": "Count", "size": 4}, minimumCalls=4,
                 failureRateThreshold=75)
    state, _ = feed(CircuitState(), pol, "ffsssss")
    assert state.state == "Closed"
    assert state.window.outcomes == (0, 0, 0, 0) and state.calls == 4
    state, _ = feed(state, pol, "fff", start=7)  # window: s f f f
    assert state.state == "Open" and state.failure_rate == 75


def test_time_window_counts_only_recent_seconds() -> None:
    pol = policy(slidingWindow={"type": "Time", "size": 10}, minimumCalls=3,
                 failureRateThreshold=50)
    state, _ = feed(CircuitState(), pol, "ff", step=4)  # at 0 s and 4 s
    assert state.calls == 2
    state, _ = tick(state, pol, at(13.5))  # window: seconds 4..13
    assert state.calls == 1 and state.failure_rate == 100
    state, _ = feed(state, pol, "s", start=14)  # seconds 5..14: the failure at 4 s is out
    assert state.state == "Closed" and state.calls == 1 and state.window.failures == 0


def test_time_window_buckets_by_epoch_second() -> None:
    pol = policy(slidingWindow={"type": "Time", "size": 10})
    state, _ = feed(CircuitState(), pol, "ff", start=0.999, step=0.0)
    assert [(b.second - circuit.epoch_second(T0), b.calls) for b in state.window.buckets] \
        == [(0, 2)]
    kept, _ = tick(state, pol, at(9.999))
    assert kept.calls == 2
    gone, _ = tick(state, pol, at(10.0))  # seconds 1..10
    assert gone.calls == 0 and gone.window.buckets == () and gone.failure_rate is None


def test_time_window_late_reports() -> None:
    pol = policy(slidingWindow={"type": "Time", "size": 10}, minimumCalls=100)
    state, _ = feed(CircuitState(), pol, "sss", start=20)
    late = Call(at=at(15), failure=True)
    state, _ = record(state, pol, late, at(22))  # second 15: inside 13..22, merged in order
    assert [b.second - circuit.epoch_second(T0) for b in state.window.buckets] == [15, 20, 21, 22]
    assert state.window.failures == 1
    too_late = Call(at=at(5), failure=True)
    state2, _ = record(state, pol, too_late, at(22))
    assert state2.window == state.window
    future = Call(at=at(99), failure=True)  # finished "after now": counts as now
    state3, _ = record(state, pol, future, at(22))
    assert state3.window.buckets[-1].second - circuit.epoch_second(T0) == 22
    assert state3.window.buckets[-1].failures == 1


def test_time_window_opens() -> None:
    pol = policy(slidingWindow={"type": "Time", "size": 5}, minimumCalls=4,
                 failureRateThreshold=50)
    state, _ = feed(CircuitState(), pol, "ffss", step=0.2)
    assert state.state == "Open"


# -- slow calls ------------------------------------------------------------------------------


def test_slow_calls_open_it() -> None:
    pol = policy(minimumCalls=2, slowCallDurationThreshold="30s", slowCallRateThreshold=50)
    fast = classify(pol, at=at(0), failed=False, exit_code=0, timed_out=False,
                    duration=timedelta(seconds=30))
    slow = classify(pol, at=at(1), failed=False, exit_code=0, timed_out=False,
                    duration=timedelta(seconds=30.001))
    assert not fast.slow and slow.slow and not slow.failure
    state, moved = record(CircuitState(), pol, fast, at(0))
    state, moved = record(state, pol, slow, at(1))
    assert state.state == "Open" and moved[0].reason.startswith("slow call rate 50.0% >= 50%")
    assert state.failure_rate == 0 and state.slow_call_rate == 50


def test_slow_failure_counts_in_both_rates() -> None:
    pol = policy(minimumCalls=10, slowCallDurationThreshold="1s")
    state, _ = feed(CircuitState(), pol, "Fss")
    assert state.window.failures == 1 and state.window.slow == 1
    assert to_status("k", state).failure_rate == 33.3
    assert to_status("k", state).slow_call_rate == 33.3


def test_without_slow_threshold_nothing_is_slow() -> None:
    pol = policy(minimumCalls=1, slowCallRateThreshold=10)
    call = classify(pol, at=at(0), failed=False, exit_code=0, timed_out=False,
                    duration=timedelta(hours=5))
    assert not call.slow
    # a caller-made slow call does not open a circuit without a slow threshold
    state, _ = record(CircuitState(), pol, Call(at=at(0), failure=False, slow=True), at(0))
    assert state.state == "Closed"


# -- Open, HalfOpen ----------------------------------------------------------------------------


def test_open_rejects_with_reason() -> None:
    pol = policy(minimumCalls=2, openDuration="2m")
    state = opened(pol)
    state2, decision = admit(state, pol, at(30), key="openai")
    assert not decision.allowed and decision.verdict == "Reject"
    assert decision.reason == f"circuit openai is Open until {fmt(at(121))}"
    assert state2 == state and next_wakeup(state, pol) == at(121)


def test_half_open_admits_exactly_permitted_calls() -> None:
    pol = policy(minimumCalls=2, openDuration="10s", halfOpen={"permittedCalls": 2})
    state = opened(pol)  # opened at 1 s
    still, moved = tick(state, pol, at(10.999))
    assert still.state == "Open" and moved == []
    state, moved = tick(state, pol, at(11))
    assert [(t.from_, t.to) for t in moved] == [("Open", "HalfOpen")]
    assert state.calls == 0 and state.next_attempt_at is None and next_wakeup(state, pol) is None
    verdicts = []
    for i in range(4):
        state, decision = admit(state, pol, at(11 + i), key="openai")
        verdicts.append((decision.verdict, decision.trial))
    assert verdicts == [("Allow", True), ("Allow", True), ("Reject", False), ("Reject", False)]
    assert state.half_open_in_flight == 2
    _, decision = admit(state, pol, at(20), key="openai")
    assert decision.reason == "circuit openai is HalfOpen and its 2 trial calls are taken"


def test_admit_past_open_duration_moves_to_half_open_first() -> None:
    pol = policy(minimumCalls=2, openDuration="10s")
    state, decision = admit(opened(pol), pol, at(11))
    assert decision.allowed and decision.trial
    assert [(t.from_, t.to) for t in decision.transitions] == [("Open", "HalfOpen")]
    assert state.state == "HalfOpen" and state.half_open_in_flight == 1


def test_all_trials_succeed_closes_and_clears_the_window() -> None:
    pol = policy(minimumCalls=2, openDuration="10s", halfOpen={"permittedCalls": 2})
    state, _ = tick(opened(pol), pol, at(11))
    state, first = admit(state, pol, at(11))
    state, second = admit(state, pol, at(11))
    assert first.trial and second.trial
    state, moved = record(state, pol, trial_call(12, failure=False), at(12))
    assert state.state == "HalfOpen" and moved == [] and state.half_open_successes == 1
    state, moved = record(state, pol, trial_call(13, failure=False), at(13))
    assert [(t.from_, t.to, t.reason) for t in moved] == [
        ("HalfOpen", "Closed", "2 trial calls succeeded")]
    assert state.calls == 0 and state.consecutive_opens == 0 and state.opened_at is None
    assert state.half_open_in_flight == 0 and state.transitions == 3


def test_failed_or_slow_trial_reopens() -> None:
    pol = policy(minimumCalls=2, openDuration="10s", maxOpenDuration="1h",
                 slowCallDurationThreshold="5s", halfOpen={"permittedCalls": 3})
    for failure, slow, reason in [(True, False, "trial call failed"),
                                  (False, True, "trial call was slow")]:
        state, _ = tick(opened(pol), pol, at(11))
        state, _ = admit(state, pol, at(11))
        state, _ = admit(state, pol, at(11))
        call = trial_call(12, failure=failure, slow=slow)
        state, moved = record(state, pol, call, at(12))
        assert [(t.from_, t.to) for t in moved] == [("HalfOpen", "Open")]
        assert moved[0].reason.startswith(reason)
        assert state.consecutive_opens == 2 and state.next_attempt_at == at(32)
        assert state.half_open_in_flight == 0 and state.half_open_successes == 0
        # the other trial finishing later is recorded (rates only), no transition
        state, moved = record(state, pol, trial_call(13, failure=False),
                              at(13))
        assert state.state == "Open" and moved == [] and state.calls == 2


def test_only_trials_of_this_period_count_and_release_returns_a_permit() -> None:
    pol = policy(minimumCalls=2, openDuration="10s")
    state, _ = tick(opened(pol), pol, at(11))
    state, decision = admit(state, pol, at(11))
    assert decision.trial
    # calls admitted while Closed or in Disabled mode, finishing now: no say
    for stale in [Call(at=at(12), failure=True, admitted_at=at(0.5)),
                  Call(at=at(12), failure=True, admitted_at=at(11.5)),
                  Call(at=at(12), failure=True)]:
        assert record(state, pol, stale, at(12)) == (state, [])
    # a trial of an earlier HalfOpen period: void
    old_trial = trial_call(12, failure=True, admitted=10.999)
    assert record(state, pol, old_trial, at(12)) == (state, [])
    assert circuit.release(state, admitted_at=at(10.999)) == state
    released = circuit.release(state, admitted_at=at(11))
    assert released.half_open_in_flight == 0
    assert circuit.release(released, admitted_at=at(11)) == released  # none left
    _, again = admit(released, pol, at(12))
    assert again.trial


# -- open duration ---------------------------------------------------------------------------


def test_open_duration_doubles_up_to_the_cap_and_resets_on_close() -> None:
    pol = policy(minimumCalls=1, openDuration="10s", maxOpenDuration="35s")
    state, _ = feed(CircuitState(), pol, "f")
    durations = []
    for _ in range(4):
        assert state.next_attempt_at is not None and state.opened_at is not None
        durations.append((state.next_attempt_at - state.opened_at).total_seconds())
        now = state.next_attempt_at
        state, decision = admit(state, pol, now)
        assert decision.trial
        state, _ = record(state, pol, Call(at=now, failure=True, trial=True, admitted_at=now),
                          now)
    assert durations == [10, 20, 35, 35]
    assert state.next_attempt_at is not None
    now = state.next_attempt_at
    state, _ = admit(state, pol, now)
    state, moved = record(state, pol, Call(at=now, failure=False, trial=True, admitted_at=now),
                          now)
    assert state.state == "Closed" and [t.to for t in moved] == ["Closed"]
    state, _ = feed(state, pol, "f", start=(now - T0).total_seconds() + 1)
    assert state.opened_at is not None and state.next_attempt_at is not None
    assert state.next_attempt_at - state.opened_at == timedelta(seconds=10)


def test_open_duration_constant_without_max_and_huge_counts() -> None:
    pol = policy(openDuration="10s")
    assert {circuit.open_duration(pol, n) for n in (1, 2, 50)} == {timedelta(seconds=10)}
    capped = policy(openDuration="10s", maxOpenDuration="1h")
    assert circuit.open_duration(capped, 10_000) == timedelta(hours=1)
    below = policy(openDuration="10s", maxOpenDuration="5s")  # a cap below the base
    assert circuit.open_duration(below, 3) == timedelta(seconds=10)


# -- modes -------------------------------------------------------------------------------------


def test_forced_open_rejects_and_never_transitions() -> None:
    pol = policy(minimumCalls=1, openDuration="10s")
    forced = pol.model_copy(update={"mode": "ForcedOpen"})
    state, decision = admit(CircuitState(), forced, at(0), key="openai")
    assert not decision.allowed and decision.reason == (
        "circuit openai is forced open (mode ForcedOpen)")
    state, moved = record(state, forced, Call(at=at(0), failure=True), at(0))
    assert state == CircuitState() and moved == []
    was_open = opened(pol)
    later, moved = tick(was_open, forced, at(1000))
    assert later.state == "Open" and moved == [] and next_wakeup(was_open, forced) is None
    # back to Normal: resumes from the recorded state (Open, long overdue -> HalfOpen)
    resumed, decision = admit(later, pol, at(1000))
    assert decision.trial and resumed.state == "HalfOpen"


def test_disabled_admits_all_and_records_nothing() -> None:
    pol = policy(minimumCalls=1, mode="Disabled")
    state, transitions = feed(CircuitState(), pol, "ffff")
    assert state == CircuitState() and transitions == []
    forced_state = opened(policy(minimumCalls=1))
    _, decision = admit(forced_state, pol, at(5))
    assert decision.allowed


def test_metrics_only_records_but_never_opens() -> None:
    normal = policy(minimumCalls=3)
    pol = normal.model_copy(update={"mode": "MetricsOnly"})
    state, transitions = feed(CircuitState(), pol, "fffff")
    assert state.state == "Closed" and transitions == []
    assert state.calls == 5 and state.failure_rate == 100
    # back to Normal with the same window: the next failure opens it
    state, moved = feed(state, normal, "f", start=5)
    assert state.state == "Open" and moved[0].reason.startswith("failure rate 100.0%")


def test_trial_permit_comes_back_in_other_modes() -> None:
    pol = policy(minimumCalls=1, openDuration="10s")
    state, _ = tick(opened(pol), pol, at(11))
    state, _ = admit(state, pol, at(11))
    disabled = pol.model_copy(update={"mode": "Disabled"})
    state, moved = record(state, disabled, trial_call(12, failure=True),
                          at(12))
    assert moved == [] and state.state == "HalfOpen" and state.half_open_in_flight == 0
    _, decision = admit(state, pol, at(13))
    assert decision.trial


def test_calls_admitted_in_other_modes_hold_no_permit() -> None:
    pol = policy(minimumCalls=1, openDuration="10s")
    state, _ = tick(opened(pol), pol, at(11))
    state, decision = admit(state, pol, at(11))
    assert decision.trial
    disabled = pol.model_copy(update={"mode": "Disabled"})
    state, free = admit(state, disabled, at(12))
    assert free.allowed and not free.trial
    state, _ = record(state, disabled, Call(at=at(13), failure=False, admitted_at=at(12)), at(13))
    _, decision = admit(state, pol, at(14))  # the one permit is still out
    assert not decision.allowed


# -- failureOn -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure_on", "failed", "exit_code", "timed_out", "expected"),
    [
        (None, True, 3, False, True),
        (None, True, None, True, True),
        (None, False, 0, False, False),
        ({"exitCodes": [1, 2]}, True, 2, False, True),
        ({"exitCodes": [1, 2]}, True, 3, False, False),
        ({"exitCodes": [1, 2]}, True, None, False, False),
        ({"exitCodes": [1, 2]}, True, None, True, True),
        ({"timeouts": False}, True, None, True, False),
        ({"timeouts": False}, True, 7, False, True),
        ({"exitCodes": [], "timeouts": True}, True, 1, False, False),
        ({"exitCodes": [1]}, False, 0, False, False),
    ],
)
def test_failure_on_narrows(failure_on: dict[str, Any] | None, failed: bool,
                            exit_code: int | None, timed_out: bool, expected: bool) -> None:
    pol = policy(failureOn=failure_on) if failure_on is not None else policy()
    call = classify(pol, at=at(0), failed=failed, exit_code=exit_code, timed_out=timed_out,
                    duration=timedelta(seconds=1), admitted_at=at(-1))
    assert call.failure is expected and call.admitted_at == at(-1)


def test_narrowed_failures_count_as_successes() -> None:
    pol = policy(minimumCalls=2, failureOn={"exitCodes": [42]})
    state = CircuitState()
    for i in range(4):
        call = classify(pol, at=at(i), failed=True, exit_code=1, timed_out=False,
                        duration=timedelta(seconds=1))
        state, _ = record(state, pol, call, at(i))
    assert state.state == "Closed" and state.calls == 4 and state.failure_rate == 0


# -- status -----------------------------------------------------------------------------------


def test_status_round_trip_keeps_open_and_next_attempt() -> None:
    pol = policy(minimumCalls=3, openDuration="2m")
    state, _ = feed(CircuitState(), pol, "fsf", start=0.123)
    assert state.state == "Open"
    status = to_status("openai", state)
    assert status.to_k8s() == {
        "key": "openai", "state": "Open", "failureRate": 66.7, "slowCallRate": 0.0,
        "calls": 3, "openedAt": "2026-11-27T10:00:02.123Z",
        "nextAttemptAt": "2026-11-27T10:02:02.123Z",
        "lastTransitionTime": "2026-11-27T10:00:02.123Z", "transitions": 1,
    }
    wire = CircuitStatus.model_validate(status.to_k8s())
    back = from_status(wire)
    assert back.state == "Open" and back.next_attempt_at == state.next_attempt_at
    assert back.opened_at == state.opened_at and back.transitions == 1
    assert back.calls == 0 and back.consecutive_opens == 1  # no window text: calls lost
    full = from_status(wire, encode_window(state))
    assert full == state
    _, decision = admit(full, pol, at(60))
    assert not decision.allowed


def test_status_of_an_empty_circuit() -> None:
    assert to_status("k", CircuitState()).to_k8s() == {
        "key": "k", "state": "Closed", "calls": 0, "transitions": 0}
    assert from_status(CircuitStatus(key="k")) == CircuitState()


def test_round_trip_half_open_counters() -> None:
    pol = policy(minimumCalls=1, openDuration="10s", halfOpen={"permittedCalls": 3})
    state, _ = tick(opened(pol), pol, at(11))
    state, _ = admit(state, pol, at(11))
    state, _ = admit(state, pol, at(11))
    state, _ = record(state, pol, trial_call(12, failure=False), at(12))
    text = encode_window(state)
    assert text == "1;C;1;1;1;s"
    assert from_status(to_status("k", state), text) == state


def test_window_encoding() -> None:
    outcomes = (0,) * 12 + (1, 1, 1, 2, 3, 0)
    count = CircuitState(window=circuit._window_of(outcomes), consecutive_opens=2)
    assert encode_window(count) == "1;C;2;0;0;12s3fSFs"
    assert decode_window("1;C;2;0;0;12s3fSFs").window == count.window
    base = circuit.epoch_second(T0)
    buckets = (circuit.Bucket(base, 5, 1, 0), circuit.Bucket(base + 3, 2, 0, 0),
               circuit.Bucket(base + 4, 1, 1, 1))
    timed = CircuitState(window=circuit._window_of_buckets(buckets))
    text = encode_window(timed)
    assert text == f"1;T;0;0;0;{base}:5:1,3:2,1:1:1:1"
    assert decode_window(text).window == timed.window
    assert decode_window("1;T;0;0;0;").window == circuit.Window(type="Time")


@pytest.mark.parametrize("text", [
    "", "garbage", "2;C;0;0;0;s", "1;X;0;0;0;", "1;C;a;0;0;s", "1;C;0;0;0;3x",
    "1;C;0;0;0;0s", "1;C;0;0;0;s3", "1;T;0;0;0;5", "1;T;0;0;0;5:0", "1;T;0;0;0;5:1:2",
    "1;T;0;0;0;5:1,0:1", "1;T;0;0;0;5:1,-1:1", "1;C;0;0;0;99999999s", "1;C;0;0;0;s;",
])
def test_bad_window_encodings_raise(text: str) -> None:
    with pytest.raises(ValueError):
        decode_window(text)
    status = CircuitStatus(key="k", state="Open", opened_at=fmt(T0),
                           next_attempt_at=fmt(at(60)))
    state = from_status(status, text)
    assert state.state == "Open" and state.next_attempt_at == at(60) and state.calls == 0


def test_open_status_without_next_attempt_is_due_at_once() -> None:
    status = CircuitStatus(key="k", state="Open", opened_at=fmt(T0))
    state = from_status(status)
    pol = policy()
    assert next_wakeup(state, pol) == T0
    _, decision = admit(state, pol, at(1))
    assert decision.trial


# -- policy edits, purity ---------------------------------------------------------------------


def test_policy_edits_reshape_the_window() -> None:
    pol = policy(slidingWindow={"type": "Count", "size": 10}, minimumCalls=100)
    state, _ = feed(CircuitState(), pol, "ffsss")
    smaller = policy(slidingWindow={"type": "Count", "size": 3}, minimumCalls=100)
    state2, _ = tick(state, smaller, at(10))
    assert state2.window.outcomes == (0, 0, 0)
    timed = policy(slidingWindow={"type": "Time", "size": 3}, minimumCalls=100)
    state3, _ = tick(state, timed, at(10))
    assert state3.window == circuit.Window(type="Time")


def test_times_are_normalised_and_inputs_untouched() -> None:
    pol = policy(minimumCalls=1)
    plus2 = timezone(timedelta(hours=2))
    now = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=plus2)
    start = CircuitState()
    state, _ = record(start, pol, Call(at=now, failure=True), now)
    assert state.opened_at == datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)
    assert state.opened_at is not None and state.opened_at.tzinfo is UTC
    naive = datetime(2026, 11, 27, 10, 0, 0, 123999)
    assert circuit.normalize(naive) == state.opened_at
    assert start == CircuitState()
    again, _ = record(start, pol, Call(at=now, failure=True), now)
    assert again == state
    same, _ = admit(CircuitState(), policy(), at(0))
    assert same == CircuitState()
