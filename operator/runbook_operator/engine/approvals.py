"""Who may decide an approval step, as far as the operator can tell.

The authority is admission: the chart's ValidatingAdmissionPolicy refuses an
approval whose ``by`` is not the requesting user, or whose user is neither in the
step's ``approvers.users`` nor in one of its ``approvers.groups`` (groups are only
known to the API server, from the request's authenticated identity). This is the
operator's second line, for clusters where that policy is off: when a step names
users and no groups, a decision by anyone else is ignored. With groups listed it
cannot judge membership and trusts admission.
"""

from __future__ import annotations

from runbook_operator.api.execution import ApprovalDecision
from runbook_operator.api.runbook import Step


def may_decide(step: Step, decision: ApprovalDecision) -> bool:
    """Whether the operator acts on ``decision`` for approval step ``step``."""
    approvers = step.approval.approvers if step.approval else None
    if approvers is None or approvers.groups:
        return True
    return decision.by is not None and decision.by in approvers.users
