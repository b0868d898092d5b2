"""Who the operator lets decide an approval step (its defence behind admission).

Cases:
- without approvers anyone's decision counts, with or without ``by``;
- approvers with users only: a decision by a listed user counts, one by anyone
  else or without ``by`` is ignored, and the step keeps waiting, saying whose
  decision it ignored (one ApprovalIgnored Event, not one per pass); the simulated
  run then takes the listed user's later decision, not the earlier stranger's;
- approvers with groups: the operator cannot see group membership and trusts
  admission, so any decision counts;
- an ``approvers`` naming no one is refused by the model (and the CRD rule).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from runbook_operator.api.execution import ApprovalDecision
from runbook_operator.api.runbook import Approvers, Step
from runbook_operator.engine.approvals import may_decide

from .simulator import Simulator, dag_spec


def approval_step(approvers: dict[str, Any] | None) -> Step:
    approval: dict[str, Any] = {"timeout": "1h"}
    if approvers is not None:
        approval["approvers"] = approvers
    return Step.model_validate({"name": "gate", "type": "approval", "approval": approval})


def decision(by: str | None) -> ApprovalDecision:
    return ApprovalDecision(step="gate", decision="Approve", by=by)


def test_no_approvers_lets_anyone_decide() -> None:
    step = approval_step(None)
    assert may_decide(step, decision("mallory"))
    assert may_decide(step, decision(None))


def test_users_only() -> None:
    step = approval_step({"users": ["alice", "bob"]})
    assert may_decide(step, decision("alice"))
    assert not may_decide(step, decision("mallory"))
    assert not may_decide(step, decision(None))


def test_groups_are_left_to_admission() -> None:
    step = approval_step({"users": ["alice"], "groups": ["sre"]})
    assert may_decide(step, decision("mallory"))


def test_approvers_must_name_someone() -> None:
    with pytest.raises(ValidationError, match="at least one user or group"):
        Approvers.model_validate({"users": [], "groups": []})
    rule = Approvers.model_json_schema()["x-kubernetes-validations"][0]["rule"]
    assert "size(self.users) > 0" in rule and "size(self.groups) > 0" in rule


def test_planner_ignores_a_stranger_and_takes_the_approver() -> None:
    spec = dag_spec([
        {"name": "gate", "type": "approval",
         "approval": {"timeout": "1h", "approvers": {"users": ["alice"]}}},
        {"name": "deploy", "dependsOn": ["gate"]},
    ])
    sim = Simulator.start(spec)
    sim.step()
    sim.approvals.append(ApprovalDecision(step="gate", decision="Reject", by="mallory"))
    result = sim.step()
    gate = sim.status.steps["gate"]
    assert gate.phase == "WaitingForApproval"
    assert "ignored decisions by mallory" in (gate.message or "")
    assert [e.reason for e in result.events] == ["ApprovalIgnored"]
    assert sim.step().events == []  # said once, not on every pass
    sim.approvals.append(ApprovalDecision(step="gate", decision="Approve", by="alice"))
    status = sim.run()
    gate = status.steps["gate"]
    assert (gate.phase, gate.reason) == ("Succeeded", "Approved")
    assert "alice" in (gate.message or "")
    assert status.phase == "Succeeded"
