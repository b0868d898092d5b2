"""Reserving circuit permits and bulkhead slots for a pass, then committing or giving back.

Cases (engine/reservations.py and the registry of controllers/circuits.py, in memory):
- commit applies a pass's operations onto the circuit as it is at commit time: two
  passes that viewed the same state and each recorded a call both count;
- a reserved HalfOpen trial permit is seen by the next pass's view, so a second pass
  is rejected while the first one's API calls run; a rolled-back pass gives it back;
- a permit reserved in a HalfOpen period that ended meanwhile (the circuit reopened)
  is void at commit; a lost pass's calls are never counted;
- the Open -> HalfOpen transition a view makes happens once whoever views first;
- the event loop's methods (bodies, take_dirty, observe_policy) do not wait for a
  pass lock held by a thread (they take only the dictionary lock);
- an execution noted in a bulkhead's line is found by the pass that frees a slot, and
  forgotten once it no longer waits;
- property (hypothesis): random interleavings of reserve / commit / rollback /
  finish over several passes never admit more HalfOpen trials than permittedCalls,
  never hold more bulkhead slots than maxConcurrent, and count each committed
  pass's calls exactly once (rolled-back ones never).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.controllers.circuits import CircuitRegistry
from runbook_operator.engine import circuit, reservations
from runbook_operator.engine.bulkhead import BulkheadRow, rebuild
from runbook_operator.engine.circuit import Call, CircuitState
from runbook_operator.engine.reservations import Admitted, CircuitOp, Recorded

NS = "ns"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {"slidingWindow": {"type": "Count", "size": 1000}, "minimumCalls": 1000,
                        "openDuration": "60s", "halfOpen": {"permittedCalls": 2},
                        "bulkhead": {"maxConcurrent": 2}}
POLICY = CircuitPolicySpec.model_validate(SPEC)
IDENT = ("p", "default")


def registry(state: CircuitState | None = None) -> CircuitRegistry:
    reg = CircuitRegistry()
    reg.observe_policy({"metadata": {"namespace": NS, "name": "p", "generation": 1},
                        "spec": SPEC})
    if state is not None:
        reg.update(NS, {IDENT: state})
    return reg


def half_open() -> CircuitState:
    return CircuitState(state="HalfOpen", last_transition_time=T0, consecutive_opens=1,
                        opened_at=T0 - timedelta(seconds=60))


def admit(reg: CircuitRegistry, token: str, now: datetime) -> bool:
    """One pass: view, admit, reserve (under the pass locks). True: a trial permit."""
    with reg.locked(NS, ["p"]):
        view = reg.view(NS, ["p"], token, now)
        _, decision = circuit.admit(view.circuits.get(IDENT) or CircuitState(), POLICY,
                                    now)
        ops: list[CircuitOp] = [Admitted(IDENT, decision.trial, now)] if decision.allowed \
            else []
        reg.reserve(NS, token, ops, [])
    return decision.allowed


def commit(reg: CircuitRegistry, token: str, ops: list[CircuitOp], now: datetime) -> None:
    with reg.locked(NS, ["p"]):
        reg.commit(NS, token, ops, now)


def test_commit_applies_onto_the_current_circuit() -> None:
    reg = registry()
    call = Call(at=T0, failure=True)
    # Both passes viewed the same (empty) circuit; each commits its own call.
    for token in ("a", "b"):
        with reg.locked(NS, ["p"]):
            reg.view(NS, ["p"], token, T0)
            reg.reserve(NS, token, [Recorded(IDENT, call)], [])
    commit(reg, "a", [Recorded(IDENT, call)], T0)
    commit(reg, "b", [Recorded(IDENT, call)], T0)
    assert reg.circuits(NS, ["p"])[IDENT].calls == 2


def test_a_reserved_trial_is_seen_and_a_rollback_gives_it_back() -> None:
    reg = registry(replace(half_open(), half_open_successes=1))  # one permit left
    now = T0 + timedelta(seconds=1)
    assert admit(reg, "a", now)
    assert not admit(reg, "b", now)  # a's permit is held while its calls run
    reg.rollback("a")
    assert admit(reg, "b", now)
    commit(reg, "b", [Admitted(IDENT, True, now)], now)
    assert reg.circuits(NS, ["p"])[IDENT].half_open_in_flight == 1
    assert not admit(reg, "c", now)


def test_a_permit_of_an_ended_period_is_void_and_lost_calls_never_count() -> None:
    reg = registry(half_open())
    now = T0 + timedelta(seconds=1)
    assert admit(reg, "a", now)
    assert admit(reg, "b", now)
    # b's trial fails and reopens the circuit before a commits.
    state = reg.circuits(NS, ["p"])[IDENT]
    reg.update(NS, {IDENT: replace(state, half_open_in_flight=1)})
    commit(reg, "b", [Recorded(IDENT, Call(at=now, failure=True, trial=True,
                                           admitted_at=now))], now)
    assert reg.circuits(NS, ["p"])[IDENT].state == "Open"
    commit(reg, "a", [Admitted(IDENT, True, now)], now)
    assert reg.circuits(NS, ["p"])[IDENT].half_open_in_flight == 0
    reg.rollback("c")  # nothing held: harmless
    assert reg.held == {}


def test_a_due_open_circuit_half_opens_once() -> None:
    opened = CircuitState(state="Open", opened_at=T0, next_attempt_at=T0 + timedelta(seconds=60),
                          consecutive_opens=1, last_transition_time=T0)
    reg = registry(opened)
    later = T0 + timedelta(seconds=61)
    with reg.locked(NS, ["p"]):
        first = reg.view(NS, ["p"], "a", later)
    with reg.locked(NS, ["p"]):
        second = reg.view(NS, ["p"], "b", later)
    assert [t.to for _, _, t in first.transitions] == ["HalfOpen"]
    assert second.transitions == []


def test_loop_methods_do_not_wait_for_a_pass() -> None:
    reg = registry(half_open())
    held, release = threading.Event(), threading.Event()

    def slow_pass() -> None:
        with reg.locked(NS, ["p"]):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=slow_pass)
    thread.start()
    try:
        assert held.wait(10)
        done = threading.Event()

        def loop_side() -> None:
            reg.bodies()
            reg.take_dirty()
            reg.observe_policy({"metadata": {"namespace": NS, "name": "p", "generation": 2},
                                "spec": SPEC})
            done.set()

        side = threading.Thread(target=loop_side)
        side.start()
        # Finishes while the pass still holds its lock (no timing threshold: the
        # pass is released only after, or when this wait gives up and fails).
        assert done.wait(30)
        side.join()
    finally:
        release.set()
        thread.join()


def test_waiters_are_noted_and_forgotten() -> None:
    reg = registry()
    reg.note_waiting(NS, (NS, "a"), ["p"], {"p"})
    reg.note_waiting(NS, (NS, "b"), ["p"], {"p"})
    assert reg.waiters(NS, ["p"], exclude=(NS, "b")) == [(NS, "a")]
    reg.note_waiting(NS, (NS, "a"), ["p"], set())
    assert reg.waiters(NS, ["p"], exclude=(NS, "c")) == [(NS, "b")]


def test_with_reserved_counts_only_the_current_period() -> None:
    state = half_open()
    assert reservations.with_reserved(state, [T0, T0 + timedelta(seconds=1)]
                                      ).half_open_in_flight == 2
    assert reservations.with_reserved(state, [T0 - timedelta(seconds=1)]) is state


ACTIONS = st.lists(st.tuples(st.sampled_from(["reserve", "commit", "rollback", "finish"]),
                             st.integers(0, 5), st.booleans()), max_size=60)


@settings(max_examples=150, deadline=None)
@given(actions=ACTIONS)
def test_interleavings_never_over_admit_nor_double_count(
        actions: list[tuple[str, int, bool]]) -> None:
    reg = registry(half_open())
    now = T0 + timedelta(seconds=1)
    pending: dict[str, tuple[list[CircuitOp], list[tuple[str, BulkheadRow]]]] = {}
    running: list[BulkheadRow] = []  # the slots statuses show (committed passes)
    trials_admitted = 0  # committed trial permits of the current period
    for action, index, flag in actions:
        token = f"pass-{index}"
        if action == "reserve" and token not in pending:
            with reg.locked(NS, ["p"]):
                view = reg.view(NS, ["p"], token, now)
                ops: list[CircuitOp] = []
                state, decision = circuit.admit(view.circuits.get(IDENT) or CircuitState(),
                                                POLICY, now)
                if decision.allowed:
                    ops.append(Admitted(IDENT, decision.trial, now))
                rows = running + view.held_slots["p"]
                queue = rebuild(2, [*rows, (token, "waiting", now, None)])
                slots: list[tuple[str, BulkheadRow]] = []
                holds = any(r[0] == token for r in running)  # its step runs already
                if queue.is_running(token) and flag and not holds:
                    slots.append(("p", (token, "running", now, None)))
                reg.reserve(NS, token, ops, slots)
            pending[token] = (ops, slots)
        elif action == "commit" and token in pending:
            ops, slots = pending.pop(token)
            running += [row for _, row in slots]  # the status write lands in the store
            commit(reg, token, ops, now)
            trials_admitted += sum(1 for op in ops if isinstance(op, Admitted) and op.trial)
        elif action == "rollback" and token in pending:
            pending.pop(token)
            reg.rollback(token)
        elif action == "finish":
            running = [r for r in running if r[0] != token]
        state = reg.circuits(NS, ["p"])[IDENT]
        held_trials = sum(len(h.trials) for h in reg.held.values())
        assert state.half_open_in_flight == trials_admitted
        assert trials_admitted + held_trials <= POLICY.half_open.permitted_calls
        held_slots = [row[0] for h in reg.held.values() for _, row in h.slots]
        assert len({r[0] for r in running} | set(held_slots)) <= 2


@settings(max_examples=100, deadline=None)
@given(actions=st.lists(st.tuples(st.sampled_from(["reserve", "commit", "rollback"]),
                                  st.integers(0, 4), st.booleans()), max_size=50))
def test_each_committed_call_counts_once(actions: list[tuple[str, int, bool]]) -> None:
    reg = registry()
    pending: dict[str, list[CircuitOp]] = {}
    committed = 0
    for action, index, failed in actions:
        token = f"pass-{index}"
        if action == "reserve" and token not in pending:
            ops: list[CircuitOp] = [Recorded(IDENT, Call(at=T0, failure=failed))]
            with reg.locked(NS, ["p"]):
                reg.view(NS, ["p"], token, T0)
                reg.reserve(NS, token, ops, [])
            pending[token] = ops
        elif action == "commit" and token in pending:
            commit(reg, token, pending.pop(token), T0)
            committed += 1
        elif action == "rollback" and token in pending:
            pending.pop(token)
            reg.rollback(token)
        state = reg.circuits(NS, ["p"]).get(IDENT) or CircuitState()
        assert state.calls == committed
