"""The circuits of every CircuitPolicy: shared state, made durable in the policy's status.

Why it exists: circuits and bulkheads are shared by every execution, but a pass's
API calls must not serialise the cluster's guarded executions nor stall the event
loop. So there is no lock across I/O:

- ``locked(namespace, policies)`` takes short per-policy locks (in sorted order)
  for in-memory work only: a pass reads ``view`` (committed circuits plus what
  other passes hold), plans, and ``reserve``s what it took (HalfOpen trial
  permits, bulkhead slots), then lets go;
- the pass creates its Jobs and writes its status with no lock held;
- then, under the locks again, ``commit`` applies the pass's circuit operations
  onto the circuits as they are now (``engine.reservations``), or ``rollback``
  gives the reservation back when the status write was lost.

The event loop (``observe_policy``, ``bodies``, ``take_dirty``) only takes
``_data``, a plain lock no thread holds for more than a few dictionary
operations. What changed is written to the CircuitPolicy's status in batches, at
most once per second per policy, so a burst of calls costs a handful of writes.
The leader is the status' single writer. A standby follows the status from the
watch, and a replica that takes the lead rebuilds every circuit from a fresh,
consistent listing before its first write (:meth:`CircuitRegistry.reload`): an
Open circuit stays Open with its ``nextAttemptAt``, its window and HalfOpen trials.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, CircuitStatus
from runbook_operator.api.common import CIRCUIT_POLICIES, GROUP, VERSION
from runbook_operator.engine import circuit, circuit_status, reservations
from runbook_operator.engine.bulkhead import BulkheadRow
from runbook_operator.engine.circuit import CircuitState, Transition
from runbook_operator.engine.conditions import previous_ready, ready_condition
from runbook_operator.engine.policy_validation import validate_policy
from runbook_operator.engine.reservations import CircuitOp
from runbook_operator.engine.validation import Problem

log = logging.getLogger("runbook_operator.circuits")

PLURAL = CIRCUIT_POLICIES
PolicyKey = tuple[str, str]
"""(namespace, policy name)."""


@dataclass
class Held:
    """What one pass in flight holds: trial permits and bulkhead slots."""

    namespace: str
    trials: list[tuple[tuple[str, str], datetime]] = field(default_factory=list)
    slots: list[tuple[str, BulkheadRow]] = field(default_factory=list)


@dataclass
class View:
    """The shared state a pass plans against (see :meth:`CircuitRegistry.view`)."""

    specs: dict[str, CircuitPolicySpec]
    invalid: dict[str, str]
    circuits: dict[tuple[str, str], CircuitState]
    held_slots: dict[str, list[BulkheadRow]]
    """By policy: bulkhead slots other passes took and have not committed yet."""
    transitions: list[tuple[str, str, Transition]]
    """Time-driven transitions (Open -> HalfOpen) made while taking the view."""


class CircuitRegistry:
    def __init__(self) -> None:
        self._data = threading.Lock()
        """Guards the dictionaries below; held for dictionary work only, never across
        I/O or planning (the event loop takes it)."""
        self._locks: dict[PolicyKey, threading.Lock] = {}
        """Per policy: held by a pass while it plans and reserves, and while it commits."""
        self.policies: dict[PolicyKey, dict[str, Any]] = {}
        self._specs: dict[PolicyKey, CircuitPolicySpec | None] = {}
        """Each policy's spec, parsed once per observed body (None: not valid)."""
        self.problems: dict[PolicyKey, list[Problem]] = {}
        """Why each policy is not valid (empty: it is)."""
        self.states: dict[PolicyKey, dict[str, CircuitState]] = {}
        """Committed circuits, by policy then key."""
        self.held: dict[str, Held] = {}
        """Reservations of passes in flight, by pass token."""
        self.dirty: set[PolicyKey] = set()
        self.waiting: dict[PolicyKey, set[tuple[str, str]]] = {}
        """Per policy: executions with a step in its bulkhead's line, to wake when a slot
        frees. Noted while the waiting pass holds the policy's lock, so a pass freeing a
        slot after it either finds the waiter here or freed it before that pass planned."""

    def observe_policy(self, body: dict[str, Any], deleted: bool = False,
                       follow_status: bool = False) -> None:
        """A CircuitPolicy from the watch or a listing.

        ``follow_status``: the circuits are taken from the body's status, replacing
        what this replica holds: a standby follows what the leader writes, and a new
        leader rebuilds from a fresh listing (:meth:`reload`). Otherwise (the leader
        itself) the status seeds a policy only the first time: what the leader holds
        in memory is newer than any status it wrote.
        """
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            with self._data:
                self.policies.pop(key, None)
                self._specs.pop(key, None)
                self.problems.pop(key, None)
                self.states.pop(key, None)
            return
        # Validated and parsed before the lock: only the dictionary work is under it.
        problems = validate_policy(body.get("spec"))
        if problems:
            log.warning("CircuitPolicy %s/%s is not valid: %s", *key,
                        "; ".join(str(p) for p in problems))
        spec = None if problems else CircuitPolicySpec.model_validate(body.get("spec") or {})
        loaded = None
        with self._data:
            known = key in self.states
        if follow_status or not known:
            loaded = load_states((body.get("status") or {}).get("circuits"))
        with self._data:
            self.policies[key] = body
            self.problems[key] = problems
            self._specs[key] = spec
            if loaded is not None:
                self.states[key] = loaded
            if loaded is not None and not known:
                self.dirty.add(key)  # publish observedGeneration and openCircuits
            elif _stale(body, problems):
                self.dirty.add(key)  # a new generation, or a verdict not yet published

    def reload(self, namespaces: Sequence[str] | None, bodies: Iterable[dict[str, Any]]
               ) -> None:
        """Rebuild every circuit from a fresh, consistent listing (a new leader, before
        its first write). Policies of ``namespaces`` (None: all) not listed are gone."""
        listed: set[PolicyKey] = set()
        for body in bodies:
            meta = body.get("metadata") or {}
            listed.add((meta.get("namespace", ""), meta.get("name", "")))
            self.observe_policy(body, follow_status=True)
        with self._data:
            gone = [k for k in self.policies
                    if k not in listed and (namespaces is None or k[0] in namespaces)]
        for namespace, name in gone:
            self.observe_policy({"metadata": {"namespace": namespace, "name": name}},
                                deleted=True)

    def known(self, namespace: str, name: str) -> bool:
        with self._data:
            return (namespace, name) in self.policies

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._data:
            return self.policies.get((namespace, name))

    def invalid(self, namespace: str, names: Iterable[str]) -> dict[str, str]:
        """The policies among ``names`` that exist but are not valid, with why."""
        with self._data:
            return {name: "; ".join(str(p) for p in self.problems[(namespace, name)])
                    for name in names if self.problems.get((namespace, name))}

    def specs(self, namespace: str, names: Iterable[str]) -> dict[str, CircuitPolicySpec]:
        """The valid policies among ``names`` (a missing or invalid one is left out)."""
        found: dict[str, CircuitPolicySpec] = {}
        with self._data:
            for name in names:
                spec = self._specs.get((namespace, name))
                if spec is not None:
                    found[name] = spec
        return found

    def circuits(self, namespace: str,
                 names: Iterable[str]) -> dict[tuple[str, str], CircuitState]:
        """The committed circuits of ``names``."""
        with self._data:
            return {(name, k): s for name in names
                    for k, s in self.states.get((namespace, name), {}).items()}

    # -- a pass: view and reserve, (I/O with no lock), commit or roll back ----------------

    @contextmanager
    def locked(self, namespace: str, names: Iterable[str]) -> Iterator[None]:
        """The policies' pass locks, taken in sorted order (no two passes deadlock)."""
        with ExitStack() as stack:
            for name in sorted(set(names)):
                with self._data:
                    lock = self._locks.setdefault((namespace, name), threading.Lock())
                stack.enter_context(lock)
            yield

    def view(self, namespace: str, names: Sequence[str], token: str, now: datetime) -> View:
        """What a pass plans against at ``now``; the caller holds :meth:`locked`.

        Committed circuits, moved Open -> HalfOpen where their time has come (kept:
        that transition is time's, not the pass's), plus the trial permits and
        bulkhead slots other passes hold.
        """
        specs = self.specs(namespace, names)
        invalid = self.invalid(namespace, names)
        transitions: list[tuple[str, str, Transition]] = []
        with self._data:
            others = [h for t, h in self.held.items() if t != token and h.namespace == namespace]
            circuits: dict[tuple[str, str], CircuitState] = {}
            for name in names:
                states = self.states.get((namespace, name))
                spec = specs.get(name)
                if states is None or spec is None:
                    continue
                for k, state in list(states.items()):
                    ticked, moved = circuit.tick(state, spec, now)
                    if moved:
                        states[k] = ticked
                        self.dirty.add((namespace, name))
                        transitions += [(name, k, t) for t in moved]
                    held = [at for h in others for ident, at in h.trials if ident == (name, k)]
                    circuits[(name, k)] = reservations.with_reserved(ticked, held)
            slots: dict[str, list[BulkheadRow]] = {name: [] for name in names}
            for h in others:
                for policy, row in h.slots:
                    if policy in slots:
                        slots[policy].append(row)
        return View(specs, invalid, circuits, slots, transitions)

    def reserve(self, namespace: str, token: str, ops: Sequence[CircuitOp],
                slots: Sequence[tuple[str, BulkheadRow]]) -> None:
        """Hold what a planned pass took until it commits or rolls back."""
        trials = reservations.trials_of(ops)
        with self._data:
            if trials or slots:
                self.held[token] = Held(namespace, trials, list(slots))
            else:
                self.held.pop(token, None)

    def commit(self, namespace: str, token: str, ops: Sequence[CircuitOp], now: datetime
               ) -> tuple[dict[tuple[str, str], CircuitState], list[tuple[str, str, Transition]]]:
        """A written pass: its operations onto the circuits as they are now; the caller
        holds :meth:`locked`. Returns the circuits changed and the transitions made."""
        names = sorted({op.ident[0] for op in ops})
        specs = self.specs(namespace, names)
        with self._data:
            self.held.pop(token, None)
            current = {(name, k): s for name in names
                       for k, s in self.states.get((namespace, name), {}).items()}
            changed, transitions = reservations.commit(current, specs, ops, now)
            for (name, k), state in changed.items():
                if (namespace, name) in self.states:
                    self.states[(namespace, name)][k] = state
                    self.dirty.add((namespace, name))
        return changed, transitions

    def note_waiting(self, namespace: str, execution: tuple[str, str], policies: Iterable[str],
                     waiting: set[str]) -> None:
        """Which of ``policies``' bulkhead lines ``execution`` is in now (``waiting``)."""
        with self._data:
            for name in policies:
                line = self.waiting.setdefault((namespace, name), set())
                if name in waiting:
                    line.add(execution)
                else:
                    line.discard(execution)

    def waiters(self, namespace: str, policies: Iterable[str],
                exclude: tuple[str, str]) -> list[tuple[str, str]]:
        """Executions in the bulkhead lines of ``policies`` (a slot may have freed)."""
        with self._data:
            return sorted({k for name in policies for k in self.waiting.get((namespace, name), ())
                           if k != exclude})

    def rollback(self, token: str) -> None:
        """A lost pass gives back what it held (its calls were never counted)."""
        with self._data:
            self.held.pop(token, None)

    def update(self, namespace: str, changed: Mapping[tuple[str, str], CircuitState]) -> None:
        """Set circuits outright (tests and restores; passes use :meth:`commit`)."""
        with self._data:
            for (name, k), state in changed.items():
                self.states.setdefault((namespace, name), {})[k] = state
                self.dirty.add((namespace, name))

    # -- the event loop's side ---------------------------------------------------------

    def bodies(self) -> list[dict[str, Any]]:
        """Every policy with the status its circuits have now (written or not yet)."""
        with self._data:
            items = [(body, dict(self.states.get(key, {})), list(self.problems.get(key, [])))
                     for key, body in self.policies.items()]
        return [{**body, "status": status_of(body, states, problems)}
                for body, states, problems in items]

    def take_dirty(self) -> list[tuple[PolicyKey, dict[str, Any]]]:
        """The statuses to write now, and forget that they were dirty."""
        with self._data:
            items = []
            for key in sorted(self.dirty):
                body = self.policies.get(key)
                if body is not None:
                    items.append((key, body, dict(self.states.get(key, {})),
                                  list(self.problems.get(key, []))))
            self.dirty.clear()
        return [(key, status_of(body, states, problems))
                for key, body, states, problems in items]

    def mark_dirty(self, key: PolicyKey) -> None:
        """Write this policy's status again (its last write failed)."""
        with self._data:
            self.dirty.add(key)


def load_states(circuits: Any) -> dict[str, CircuitState]:
    states: dict[str, CircuitState] = {}
    for raw in circuits or []:
        try:
            st = CircuitStatus.model_validate(raw)
        except ValidationError:
            continue
        states[st.key] = circuit_status.from_status(st, st.window)
    return states


def _ready(body: dict[str, Any]) -> Mapping[str, Any] | None:
    return previous_ready(body.get("status"))


def _stale(body: dict[str, Any], problems: list[Problem]) -> bool:
    """Whether the status misses this generation or this verdict."""
    status = body.get("status") or {}
    ready = _ready(body) or {}
    return status.get("observedGeneration") != (body.get("metadata") or {}).get("generation") \
        or ready.get("status") != ("False" if problems else "True") \
        or (bool(problems) and ready.get("reason") != problems[0].reason)


def status_of(body: dict[str, Any], states: Mapping[str, CircuitState],
              problems: list[Problem] | None = None) -> dict[str, Any]:
    circuits = []
    for key, state in sorted(states.items()):
        status = circuit_status.to_status(key, state)
        status.window = circuit_status.encode_window(state)
        circuits.append(status.to_k8s())
    return {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "conditions": [ready_condition(problems or [], (body.get("metadata") or {}).get(
            "generation"), "policy", _ready(body), datetime.now(UTC))],
        "circuits": circuits,
        "openCircuits": sum(1 for s in states.values() if s.state == "Open"),
    }


def write_status(clients: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})
