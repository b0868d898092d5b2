"""What a pass takes from the shared circuits, held while its API calls run, then settled.

Why it exists: a pass plans under its policies' short locks, then creates Jobs and
writes its status with no lock held. Meanwhile other passes plan too, so what the
first one took (a HalfOpen trial permit, a bulkhead slot) must be visible to them
before it is committed, and must vanish if its status write is lost. This module
is the pure half of that protocol:

- a pass's circuit changes are a list of operations (``Admitted``, ``Recorded``,
  ``Released``), not a final state: ``commit`` applies them onto the circuit as
  it is *at commit time*, so two passes that both record calls on one circuit
  both count, and none is overwritten by a state computed from a stale snapshot;
- ``with_reserved`` is a circuit as a planning pass must see it: the committed
  state plus the trial permits other passes hold and have not committed yet;
- ``trials_of`` is what a pass holds until it commits or gives it back.

No clock, no I/O, no locks: the shell (``controllers/circuits.py``) keeps the
reservations and serialises access.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.engine import circuit
from runbook_operator.engine.circuit import Call, CircuitState, Transition, normalize

Ident = tuple[str, str]
"""(policy name, circuit key)."""


@dataclass(frozen=True)
class Admitted:
    """The circuit let a call through at ``at``; ``trial``: it took a HalfOpen permit."""

    ident: Ident
    trial: bool
    at: datetime


@dataclass(frozen=True)
class Recorded:
    """A finished call, to count in the circuit's window."""

    ident: Ident
    call: Call


@dataclass(frozen=True)
class Released:
    """A trial permit given back: its call never ran (cancelled, its Job not created)."""

    ident: Ident
    admitted_at: datetime | None


CircuitOp = Admitted | Recorded | Released


def in_period(state: CircuitState, admitted_at: datetime) -> bool:
    """Whether a permit taken at ``admitted_at`` belongs to the circuit's HalfOpen period."""
    since = state.last_transition_time
    return state.state == "HalfOpen" and (since is None or normalize(admitted_at) >= since)


def with_reserved(state: CircuitState, held: Iterable[datetime]) -> CircuitState:
    """The circuit as a planning pass sees it: committed, plus trial permits held elsewhere.

    ``held``: when each permit reserved by another pass (and not committed yet) was
    taken; one of an earlier HalfOpen period is void and does not count.
    """
    extra = sum(1 for at in held if in_period(state, at))
    return replace(state, half_open_in_flight=state.half_open_in_flight + extra) if extra \
        else state


def trials_of(ops: Sequence[CircuitOp]) -> list[tuple[Ident, datetime]]:
    """The trial permits a pass holds until it commits or rolls back."""
    return [(op.ident, op.at) for op in ops if isinstance(op, Admitted) and op.trial]


def apply(state: CircuitState, policy: CircuitPolicySpec, op: CircuitOp,
          now: datetime) -> tuple[CircuitState, list[Transition]]:
    """One operation onto the circuit as it is now."""
    if isinstance(op, Admitted):
        state, moved = circuit.tick(state, policy, now)
        if op.trial and in_period(state, op.at):
            # The reserved permit becomes the circuit's; a permit of a period that has
            # ended meanwhile (another trial failed and reopened it) is void.
            state = replace(state, half_open_in_flight=state.half_open_in_flight + 1)
        return state, moved
    if isinstance(op, Recorded):
        return circuit.record(state, policy, op.call, now)
    return circuit.release(state, op.admitted_at), []


def commit(states: dict[Ident, CircuitState], policies: dict[str, CircuitPolicySpec],
           ops: Sequence[CircuitOp], now: datetime
           ) -> tuple[dict[Ident, CircuitState], list[tuple[str, str, Transition]]]:
    """A written pass's operations onto the current circuits, in the order it made them.

    Returns the circuits it changed (new states) and the transitions that happened
    now (a transition two passes both planned happens once: the second one finds
    the circuit already moved). Operations on a policy missing from ``policies``
    (deleted meanwhile) are dropped.
    """
    changed: dict[Ident, CircuitState] = {}
    transitions: list[tuple[str, str, Transition]] = []
    for op in ops:
        policy = policies.get(op.ident[0])
        if policy is None:
            continue
        current = changed.get(op.ident) or states.get(op.ident) or CircuitState()
        state, moved = apply(current, policy, op, now)
        changed[op.ident] = state
        transitions += [(op.ident[0], op.ident[1], t) for t in moved]
    return changed, transitions
