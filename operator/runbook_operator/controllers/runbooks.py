"""Runbook handler: validate every Runbook and publish the result as Ready.

Level-triggered on every watch event (no kopf state is stored on the object, so
GitOps tools never see the operator touch a Runbook beyond its status).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbook_operator.api.common import RUNBOOKS, Condition
from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.start import spec_hash
from runbook_operator.engine.validation import validate_spec
from runbook_operator.k8s.client import Clients, patch_status

PLURAL = RUNBOOKS


def ready_condition(spec: dict[str, Any], generation: int | None,
                    security: SecurityPolicy | None = None,
                    namespace: str | None = None) -> Condition:
    problems = validate_spec(spec, security, namespace)
    if not problems:
        return Condition(type="Ready", status="True", reason="Valid",
                         message="the runbook is valid", observed_generation=generation)
    message = "; ".join(str(p) for p in problems)
    return Condition(type="Ready", status="False", reason=problems[0].reason,
                     message=message[:4000], observed_generation=generation)


def desired_status(body: dict[str, Any], now: datetime,
                   security: SecurityPolicy | None = None) -> dict[str, Any]:
    """The status a Runbook should have; keeps lastTransitionTime when nothing changed."""
    spec = body.get("spec") or {}
    generation = body.get("metadata", {}).get("generation")
    condition = ready_condition(spec, generation, security,
                                body.get("metadata", {}).get("namespace"))
    previous = next((c for c in (body.get("status") or {}).get("conditions", [])
                     if c.get("type") == "Ready"), None)
    if previous and previous.get("status") == condition.status:
        condition.last_transition_time = previous.get("lastTransitionTime")
    if not condition.last_transition_time:
        condition.last_transition_time = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    steps = spec.get("steps")
    return {
        "conditions": [condition.to_k8s()],
        "observedGeneration": generation,
        "stepCount": len(steps) + len(spec.get("finally") or []) if isinstance(steps, list) else 0,
        "specHash": spec_hash(spec),
    }


def needs_update(body: dict[str, Any], desired: dict[str, Any]) -> bool:
    current = body.get("status") or {}
    return any(current.get(k) != v for k, v in desired.items())


def reconcile(clients: Clients, body: dict[str, Any], now: datetime | None = None,
              security: SecurityPolicy | None = None) -> bool:
    """Validate one Runbook; write its status when it changed. Returns whether it wrote."""
    desired = desired_status(body, now or datetime.now(UTC), security)
    if not needs_update(body, desired):
        return False
    meta = body["metadata"]
    patch_status(clients, PLURAL, meta["namespace"], meta["name"], desired)
    return True
