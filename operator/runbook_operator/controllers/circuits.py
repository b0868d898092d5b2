"""The circuits of every CircuitPolicy: shared state, made durable in the policy's status.

Executions read and change circuits under one lock (a HalfOpen permit must go to
one caller only); what changed is written to the CircuitPolicy's status in
batches, at most once per second per policy, so a burst of calls costs a handful
of writes. The operator is the status' single writer, and it reads the status
back when it (re)starts: an Open circuit stays Open with its ``nextAttemptAt``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, CircuitStatus
from runbook_operator.api.common import GROUP, VERSION
from runbook_operator.engine import circuit
from runbook_operator.engine.circuit import CircuitState

log = logging.getLogger("runbook_operator.circuits")

PLURAL = "circuitpolicies"
PolicyKey = tuple[str, str]
"""(namespace, policy name)."""


class CircuitRegistry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        """Held around planning an execution with guarded steps and merging its result."""
        self.policies: dict[PolicyKey, dict[str, Any]] = {}
        self._specs: dict[PolicyKey, CircuitPolicySpec | None] = {}
        """Each policy's spec, parsed once per observed body (None: not valid)."""
        self.states: dict[PolicyKey, dict[str, CircuitState]] = {}
        self.dirty: set[PolicyKey] = set()

    def observe_policy(self, body: dict[str, Any], deleted: bool = False) -> None:
        """A CircuitPolicy from the watch; its status seeds the circuits the first time."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self.lock:
            if deleted:
                self.policies.pop(key, None)
                self._specs.pop(key, None)
                self.states.pop(key, None)
                return
            self.policies[key] = body
            try:
                self._specs[key] = CircuitPolicySpec.model_validate(body.get("spec") or {})
            except ValidationError as exc:
                log.warning("CircuitPolicy %s/%s is not valid: %s", *key, exc)
                self._specs[key] = None
            if key not in self.states:
                self.states[key] = load_states((body.get("status") or {}).get("circuits"))
                self.dirty.add(key)  # publish observedGeneration and openCircuits

    def specs(self, namespace: str, names: Iterable[str]) -> dict[str, CircuitPolicySpec]:
        """The valid policies among ``names`` (a missing or invalid one is left out)."""
        found: dict[str, CircuitPolicySpec] = {}
        for name in names:
            spec = self._specs.get((namespace, name))
            if spec is not None:
                found[name] = spec
        return found

    def circuits(self, namespace: str,
                 names: Iterable[str]) -> dict[tuple[str, str], CircuitState]:
        return {(name, k): s for name in names
                for k, s in self.states.get((namespace, name), {}).items()}

    def update(self, namespace: str, changed: Mapping[tuple[str, str], CircuitState]) -> None:
        for (name, k), state in changed.items():
            self.states.setdefault((namespace, name), {})[k] = state
            self.dirty.add((namespace, name))

    def bodies(self) -> list[dict[str, Any]]:
        """Every policy with the status its circuits have now (written or not yet)."""
        with self.lock:
            return [{**body, "status": status_of(body, self.states.get(key, {}))}
                    for key, body in self.policies.items()]

    def take_dirty(self) -> list[tuple[PolicyKey, dict[str, Any]]]:
        """The statuses to write now, and forget that they were dirty."""
        with self.lock:
            out = []
            for key in sorted(self.dirty):
                body = self.policies.get(key)
                if body is None:
                    continue
                out.append((key, status_of(body, self.states.get(key, {}))))
            self.dirty.clear()
            return out


def load_states(circuits: Any) -> dict[str, CircuitState]:
    states: dict[str, CircuitState] = {}
    for raw in circuits or []:
        try:
            st = CircuitStatus.model_validate(raw)
        except ValidationError:
            continue
        states[st.key] = circuit.from_status(st, st.window)
    return states


def status_of(body: dict[str, Any], states: Mapping[str, CircuitState]) -> dict[str, Any]:
    circuits = []
    for key, state in sorted(states.items()):
        status = circuit.to_status(key, state)
        status.window = circuit.encode_window(state)
        circuits.append(status.to_k8s())
    return {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "circuits": circuits,
        "openCircuits": sum(1 for s in states.values() if s.state == "Open"),
    }


def write_status(clients: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})
