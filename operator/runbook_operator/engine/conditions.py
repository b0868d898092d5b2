"""The ``Ready`` condition of a Runbook or a CircuitPolicy, from what validation found.

Why it exists: both kinds publish their verdict the same way (the Kubernetes API
conventions): ``True``/``Valid`` or ``False`` with the first problem's reason and
every problem in the message, ``observedGeneration``, and a ``lastTransitionTime``
kept while the status holds (a new reason alone keeps it). Pure: the time is passed
in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from runbook_operator.api.common import Condition
from runbook_operator.engine.timeutil import fmt
from runbook_operator.engine.validation import Problem


def ready_condition(problems: Sequence[Problem], generation: int | None, what: str,
                    previous: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The Ready condition as status holds it; ``what`` names the object ("runbook")."""
    if problems:
        condition = Condition(type="Ready", status="False", reason=problems[0].reason,
                              message="; ".join(str(p) for p in problems)[:4000],
                              observed_generation=generation)
    else:
        condition = Condition(type="Ready", status="True", reason="Valid",
                              message=f"the {what} is valid", observed_generation=generation)
    kept = previous.get("lastTransitionTime") if previous is not None and \
        previous.get("status") == condition.status else None
    condition.last_transition_time = kept if isinstance(kept, str) and kept else fmt(now)
    return condition.to_k8s()


def previous_ready(status: Any) -> Mapping[str, Any] | None:
    """The Ready condition of a status as read (None when it has none)."""
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    return next((c for c in conditions if isinstance(c, Mapping) and c.get("type") == "Ready"),
                None)
