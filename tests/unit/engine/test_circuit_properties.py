"""Properties of the circuit breaker over random policies and call sequences.

Hypothesis draws a policy (Count or Time window of 1..12, minimumCalls 1..8,
thresholds including non-round ones such as 33.3, an optional slow-call
threshold, an open duration with or without a cap, 1..3 trial calls) and a
script of up to 60 operations: time passing (0..4 s, to the millisecond),
admit, a running call finishing (failed or not, slow or not, possibly reported
late), tick, a permit given back unused, and mode switches. A driver plays the
script against the engine and against a reference model: a plain list of every
recorded call with its timestamp, plus "cleared here" marks, from which the
window is recomputed from scratch each time.

Checked after every operation:

- transitions only go Closed->Open, Open->HalfOpen, HalfOpen->Closed,
  HalfOpen->Open, chain from the previous state to the new one, and are counted;
- Closed->Open happens exactly when the reference window holds at least
  minimumCalls (capped at size for Count windows) and its failure rate, or slow
  rate with a slow threshold, reaches the threshold (exact fractions); never
  with fewer calls than that;
- Open->HalfOpen happens exactly at the first operation at or after
  next_attempt_at; the open duration is openDuration doubled per consecutive
  open, capped; Open rejects before it;
- HalfOpen never has more than permittedCalls trials in flight, and the
  engine's count of them matches the driver's;
- in ForcedOpen, Disabled and MetricsOnly nothing transitions; ForcedOpen
  rejects everything, the others admit everything;
- calls in the window, failures, slow calls and both rates equal the
  reference's;
- from_status(to_status(s), encode_window(s)) == s, and the status shows the
  reference's figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.api.common import parse_duration
from runbook_operator.engine.circuit import (
    Call,
    CircuitState,
    Transition,
    admit,
    record,
    release,
    tick,
)
from runbook_operator.engine.circuit_status import (
    encode_window,
    from_status,
    to_status,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
ALLOWED = {("Closed", "Open"), ("Open", "HalfOpen"), ("HalfOpen", "Closed"), ("HalfOpen", "Open")}
MODES = ["Normal", "ForcedOpen", "Disabled", "MetricsOnly"]


@st.composite
def policies(draw: st.DrawFn) -> CircuitPolicySpec:
    return CircuitPolicySpec.model_validate({
        "slidingWindow": {"type": draw(st.sampled_from(["Count", "Time"])),
                          "size": draw(st.integers(1, 12))},
        "minimumCalls": draw(st.integers(1, 8)),
        "failureRateThreshold": draw(st.sampled_from([10, 25, 33.3, 50, 66.7, 75, 100])),
        "slowCallDurationThreshold": draw(st.sampled_from([None, "2s"])),
        "slowCallRateThreshold": draw(st.sampled_from([30, 50, 100])),
        "openDuration": draw(st.sampled_from(["1s", "3s", "10s"])),
        "maxOpenDuration": draw(st.sampled_from([None, "5s", "40s"])),
        "halfOpen": {"permittedCalls": draw(st.integers(1, 3))},
    })


_FINISH = st.tuples(st.just("finish"), st.integers(0, 99), st.booleans(), st.booleans(),
                    st.sampled_from([0, 0, 0, 700, 3000, 20000]))
BASE_OPS = st.one_of(
    st.tuples(st.just("wait"), st.integers(0, 4000)),
    st.tuples(st.just("wait"), st.integers(0, 400)),
    st.tuples(st.just("admit")),
    st.tuples(st.just("admit")),
    _FINISH,
    _FINISH,
    st.tuples(st.just("burst"), st.integers(1, 6), st.booleans(), st.booleans()),
    st.tuples(st.just("tick")),
    st.tuples(st.just("release"), st.integers(0, 99)),
    st.tuples(st.just("until_half_open"), st.sampled_from([-1, 0, 0, 1, 50])),
    st.tuples(st.just("until_half_open"), st.sampled_from([-1, 0, 0, 1, 50])),
)
"""Everything but mode switches. ``burst``: n calls admitted and finished at once;
``until_half_open``: time jumps to an Open circuit's next_attempt_at (+- ms)."""
OPS = st.one_of(
    *[BASE_OPS] * 12,
    st.tuples(st.just("mode"), st.sampled_from(["Normal", "Normal", "Normal", *MODES[1:]])),
)


def epoch_second(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() // 1)


@dataclass
class Recorded:
    at: datetime
    failure: bool
    slow: bool


@dataclass
class Running:
    admitted_at: datetime
    trial: bool


@dataclass
class Reference:
    """Every recorded call, and where the window was last cleared."""

    policy: CircuitPolicySpec
    calls: list[Recorded] = field(default_factory=list)
    cleared: int = 0

    def clear(self) -> None:
        self.cleared = len(self.calls)

    def window(self, now: datetime) -> list[Recorded]:
        live = self.calls[self.cleared:]
        spec = self.policy.sliding_window
        if spec.type == "Count":
            return live[-spec.size:]
        now_second = epoch_second(now)
        return [c for c in live if epoch_second(min(c.at, now)) > now_second - spec.size]

    def should_open(self, now: datetime) -> bool:
        window = self.window(now)
        minimum = self.policy.minimum_calls
        if self.policy.sliding_window.type == "Count":
            minimum = min(minimum, self.policy.sliding_window.size)
        if len(window) < minimum:
            return False
        failures = Fraction(100 * sum(c.failure for c in window), len(window))
        if failures >= Fraction(self.policy.failure_rate_threshold):
            return True
        if self.policy.slow_call_duration_threshold is None:
            return False
        slow = Fraction(100 * sum(c.slow for c in window), len(window))
        return slow >= Fraction(self.policy.slow_call_rate_threshold)


def expected_open_duration(policy: CircuitPolicySpec, opens: int) -> timedelta:
    base = parse_duration(policy.open_duration)
    if policy.max_open_duration is None:
        return base
    cap = max(base, parse_duration(policy.max_open_duration))
    duration = base
    for _ in range(opens - 1):
        duration = min(duration * 2, cap)
    return duration


@dataclass
class Driver:
    base: CircuitPolicySpec
    mode: str = "Normal"
    now: datetime = T0
    state: CircuitState = field(default_factory=CircuitState)
    running: list[Running] = field(default_factory=list)
    opens: int = 0
    half_open_since: datetime | None = None
    trials_in_flight: int = 0
    trial_successes: int = 0
    ref: Reference = field(init=False)

    def __post_init__(self) -> None:
        self.ref = Reference(self.base)

    @property
    def policy(self) -> CircuitPolicySpec:
        return self.base.model_copy(update={"mode": self.mode})

    # -- checks shared by every engine call ------------------------------------------------

    def follow(self, before: CircuitState, after: CircuitState,
               transitions: list[Transition] | tuple[Transition, ...]) -> None:
        """Transitions are legal, chain from ``before`` to ``after`` and are counted."""
        current = before.state
        for t in transitions:
            assert (t.from_, t.to) in ALLOWED, t
            assert t.from_ == current and t.at == self.now
            current = t.to
        assert current == after.state
        assert after.transitions == before.transitions + len(transitions)
        if transitions:
            assert after.last_transition_time == self.now
        if self.mode != "Normal":
            assert transitions == [] or transitions == ()

    def check_due(self, before: CircuitState,
                  transitions: list[Transition] | tuple[Transition, ...]) -> bool:
        """Open->HalfOpen comes first exactly when it is due; returns whether it came."""
        due = (self.mode == "Normal" and before.state == "Open"
               and before.next_attempt_at is not None and self.now >= before.next_attempt_at)
        came = bool(transitions) and transitions[0].to == "HalfOpen" \
            and transitions[0].from_ == "Open"
        assert came == due
        if came:
            self.ref.clear()
            self.half_open_since = self.now
            self.trials_in_flight = 0
            self.trial_successes = 0
        return came

    def on_open(self, after: CircuitState) -> None:
        self.opens += 1
        self.trials_in_flight = 0
        assert after.consecutive_opens == self.opens
        assert after.opened_at == self.now
        assert after.next_attempt_at == self.now + expected_open_duration(self.base, self.opens)

    def check_state(self) -> None:
        s = self.state
        window = self.ref.window(self.now)
        assert s.calls == len(window)
        assert s.window.failures == sum(c.failure for c in window)
        assert s.window.slow == sum(c.slow for c in window)
        if window:
            assert s.failure_rate == 100 * sum(c.failure for c in window) / len(window)
            assert s.slow_call_rate == 100 * sum(c.slow for c in window) / len(window)
        else:
            assert s.failure_rate is None and s.slow_call_rate is None
        if s.state == "HalfOpen":
            assert s.half_open_in_flight == self.trials_in_flight
            assert 0 <= s.half_open_in_flight <= self.base.half_open.permitted_calls
            live = sum(1 for r in self.running if r.trial and self.half_open_since is not None
                       and r.admitted_at >= self.half_open_since)
            assert live == self.trials_in_flight
            assert live + s.half_open_successes <= self.base.half_open.permitted_calls
        if s.state == "Open":
            assert s.next_attempt_at is not None and s.opened_at is not None
        status = to_status("k", s)
        assert status.calls == len(window)
        if window:
            assert status.failure_rate == round(
                100 * sum(c.failure for c in window) / len(window), 1)
        assert from_status(status, encode_window(s)) == s

    # -- operations --------------------------------------------------------------------------

    def do_admit(self) -> None:
        before = self.state
        self.state, decision = admit(before, self.policy, self.now, key="k")
        self.follow(before, self.state, decision.transitions)
        self.check_due(before, decision.transitions)
        if self.mode == "ForcedOpen":
            assert not decision.allowed
        elif self.mode in ("Disabled", "MetricsOnly") or self.state.state == "Closed":
            assert decision.allowed and not decision.trial
        elif self.state.state == "Open":
            assert not decision.allowed
            assert self.state.next_attempt_at is not None
            assert self.now < self.state.next_attempt_at
        else:
            assert decision.allowed == decision.trial
            if decision.trial:
                self.trials_in_flight += 1
        if decision.allowed:
            self.running.append(Running(self.now, decision.trial))

    def do_finish(self, index: int, failure: bool, slow: bool, late_ms: int) -> bool:
        """Finish a running call; False when none runs (the engine was not called)."""
        if not self.running:
            return False
        run = self.running.pop(index % len(self.running))
        finished = max(run.admitted_at, self.now - timedelta(milliseconds=late_ms))
        call = Call(at=finished, failure=failure, slow=slow, trial=run.trial,
                    admitted_at=run.admitted_at)
        before = self.state
        self.state, transitions = record(before, self.policy, call, self.now)
        self.follow(before, self.state, transitions)
        advanced = self.check_due(before, transitions)
        mid = "HalfOpen" if advanced else before.state
        rest = transitions[1:] if advanced else transitions
        trial = (run.trial and mid == "HalfOpen" and self.trials_in_flight > 0
                 and self.half_open_since is not None and run.admitted_at >= self.half_open_since)
        if trial:
            self.trials_in_flight -= 1
        elif mid == "HalfOpen" and self.trials_in_flight > 0:
            event("a stale call finished while trials were in flight")
        if self.mode == "MetricsOnly" or (
                self.mode == "Normal" and not (mid == "HalfOpen" and not trial)):
            self.ref.calls.append(Recorded(finished, failure, slow))
        if self.mode != "Normal":
            assert rest == []
            return True
        bad = failure or (slow and self.base.slow_call_duration_threshold is not None)
        if mid == "Closed":
            if self.ref.should_open(self.now):
                assert [(t.from_, t.to) for t in rest] == [("Closed", "Open")]
                event("opened")
                minimum = min(self.base.minimum_calls, self.base.sliding_window.size) \
                    if self.base.sliding_window.type == "Count" else self.base.minimum_calls
                assert self.state.calls >= minimum
                self.on_open(self.state)
            else:
                assert rest == []
        elif mid == "HalfOpen" and trial:
            if bad:
                assert [(t.from_, t.to) for t in rest] == [("HalfOpen", "Open")]
                event("reopened")
                self.on_open(self.state)
            else:
                self.trial_successes += 1
                if self.trial_successes >= self.base.half_open.permitted_calls:
                    assert [(t.from_, t.to) for t in rest] == [("HalfOpen", "Closed")]
                    event("closed after trials")
                    self.ref.clear()
                    self.opens = 0
                    self.trials_in_flight = 0
                    assert self.state.consecutive_opens == 0
                    assert self.state.half_open_successes == 0
                else:
                    assert rest == []
                    assert self.state.half_open_successes == self.trial_successes
        else:
            assert rest == []
        return True

    def do_tick(self) -> None:
        before = self.state
        self.state, transitions = tick(before, self.policy, self.now)
        self.follow(before, self.state, transitions)
        came = self.check_due(before, transitions)
        assert len(transitions) == (1 if came else 0)

    def do_release(self, index: int) -> None:
        if not self.running:
            return
        run = self.running.pop(index % len(self.running))
        if not run.trial:
            return  # no permit to give back: the caller just forgets the call
        before = self.state
        self.state = release(before, run.admitted_at)
        if (before.state == "HalfOpen" and self.trials_in_flight > 0
                and self.half_open_since is not None and run.admitted_at >= self.half_open_since):
            self.trials_in_flight -= 1
        assert self.state.half_open_in_flight == (
            self.trials_in_flight if before.state == "HalfOpen" else before.half_open_in_flight)

    def play(self, ops: list[tuple[Any, ...]]) -> None:
        for op in ops:
            kind = op[0]
            if kind == "wait":
                self.now += timedelta(milliseconds=op[1])
                continue
            if kind == "until_half_open":
                due = self.state.next_attempt_at
                if self.state.state == "Open" and due is not None:
                    self.now = max(self.now, due + timedelta(milliseconds=op[1]))
                continue
            if kind == "mode":
                self.mode = op[1]
                continue
            if kind == "burst":
                for _ in range(op[1]):
                    self.do_admit()
                    self.check_state()
                    if self.do_finish(len(self.running) - 1, op[2], op[3], 0):
                        self.check_state()
                continue
            if kind == "admit":
                self.do_admit()
            elif kind == "finish" and not self.do_finish(*op[1:]):
                continue  # nothing ran: the engine's window was not brought up to now
            elif kind == "tick":
                self.do_tick()
            elif kind == "release":
                self.do_release(op[1])
                continue  # release does not prune the window: nothing to compare
            self.check_state()


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(OPS, min_size=20, max_size=80))
def test_random_call_sequences(policy: CircuitPolicySpec, ops: list[tuple[Any, ...]]) -> None:
    Driver(policy).play(ops)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(st.tuples(st.integers(0, 2500), st.booleans(), st.booleans()),
                            max_size=80))
def test_steady_traffic_normal_mode(policy: CircuitPolicySpec,
                                    calls: list[tuple[int, bool, bool]]) -> None:
    """One call at a time in Normal mode, the common case, for longer runs."""
    driver = Driver(policy)
    for gap, failure, slow in calls:
        driver.now += timedelta(milliseconds=gap)
        driver.do_admit()
        driver.check_state()
        if driver.do_finish(0, failure, slow, 0):
            driver.check_state()


@settings(max_examples=500, deadline=None)
@given(policies(), st.sampled_from(["ForcedOpen", "Disabled", "MetricsOnly"]),
       st.lists(BASE_OPS, max_size=40))
def test_forced_modes_never_transition(policy: CircuitPolicySpec, mode: str,
                                       ops: list[tuple[Any, ...]]) -> None:
    driver = Driver(policy)
    # start from a circuit that is somewhere interesting: open it first when it can be
    for i in range(policy.minimum_calls):
        driver.now = T0 + timedelta(milliseconds=i)
        driver.do_admit()
        driver.do_finish(0, True, False, 0)
    start_state = driver.state.state
    driver.mode = mode
    driver.play(ops)
    assert driver.state.state == start_state
