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
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, CircuitStatus
from runbook_operator.api.common import GROUP, VERSION, Condition
from runbook_operator.engine import circuit
from runbook_operator.engine.circuit import CircuitState
from runbook_operator.engine.policy_validation import validate_policy
from runbook_operator.engine.validation import Problem

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
        self.problems: dict[PolicyKey, list[Problem]] = {}
        """Why each policy is not valid (empty: it is)."""
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
                self.problems.pop(key, None)
                self.states.pop(key, None)
                return
            self.policies[key] = body
            problems = validate_policy(body.get("spec"))
            self.problems[key] = problems
            if problems:
                log.warning("CircuitPolicy %s/%s is not valid: %s", *key,
                            "; ".join(str(p) for p in problems))
                self._specs[key] = None
            else:
                self._specs[key] = CircuitPolicySpec.model_validate(body.get("spec") or {})
            if key not in self.states:
                self.states[key] = load_states((body.get("status") or {}).get("circuits"))
                self.dirty.add(key)  # publish observedGeneration and openCircuits
            elif _stale(body, problems):
                self.dirty.add(key)  # a new generation, or a verdict not yet published

    def invalid(self, namespace: str, names: Iterable[str]) -> dict[str, str]:
        """The policies among ``names`` that exist but are not valid, with why."""
        return {name: "; ".join(str(p) for p in self.problems[(namespace, name)])
                for name in names if self.problems.get((namespace, name))}

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
            return [{**body, "status": status_of(body, self.states.get(key, {}),
                                                  self.problems.get(key, []))}
                    for key, body in self.policies.items()]

    def take_dirty(self) -> list[tuple[PolicyKey, dict[str, Any]]]:
        """The statuses to write now, and forget that they were dirty."""
        with self.lock:
            out = []
            for key in sorted(self.dirty):
                body = self.policies.get(key)
                if body is None:
                    continue
                out.append((key, status_of(body, self.states.get(key, {}),
                                           self.problems.get(key, []))))
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


def ready_condition(body: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """The policy's Ready condition; keeps lastTransitionTime while its status holds."""
    generation = (body.get("metadata") or {}).get("generation")
    if problems:
        condition = Condition(type="Ready", status="False", reason=problems[0].reason,
                              message="; ".join(str(p) for p in problems)[:4000],
                              observed_generation=generation)
    else:
        condition = Condition(type="Ready", status="True", reason="Valid",
                              message="the policy is valid", observed_generation=generation)
    previous = _ready(body)
    if previous and previous.get("status") == condition.status:
        condition.last_transition_time = previous.get("lastTransitionTime")
    condition.last_transition_time = condition.last_transition_time or \
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return condition.to_k8s()


def _ready(body: dict[str, Any]) -> dict[str, Any] | None:
    conditions = (body.get("status") or {}).get("conditions")
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"),
                None) if isinstance(conditions, list) else None


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
        status = circuit.to_status(key, state)
        status.window = circuit.encode_window(state)
        circuits.append(status.to_k8s())
    return {
        "observedGeneration": (body.get("metadata") or {}).get("generation"),
        "conditions": [ready_condition(body, problems or [])],
        "circuits": circuits,
        "openCircuits": sum(1 for s in states.values() if s.state == "Open"),
    }


def write_status(clients: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})
