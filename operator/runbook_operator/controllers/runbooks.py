"""Runbook handler: validate every Runbook and publish the result as Ready.

Level-triggered on every watch event (no kopf state is stored on the object, so
GitOps tools never see the operator touch a Runbook beyond its status).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbook_operator.api.common import RUNBOOKS
from runbook_operator.engine.conditions import previous_ready, ready_condition
from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.start import spec_hash
from runbook_operator.engine.validation import validate_spec
from runbook_operator.k8s.client import Clients, patch_status

PLURAL = RUNBOOKS


def desired_status(body: dict[str, Any], now: datetime,
                   security: SecurityPolicy | None = None) -> dict[str, Any]:
    """The status a Runbook should have; keeps lastTransitionTime while Ready holds."""
    spec = body.get("spec") or {}
    generation = body.get("metadata", {}).get("generation")
    problems = validate_spec(spec, security, body.get("metadata", {}).get("namespace"))
    condition = ready_condition(problems, generation, "runbook",
                                previous_ready(body.get("status")), now)
    steps = spec.get("steps")
    return {
        "conditions": [condition],
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
