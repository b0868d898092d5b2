"""The Ready condition of Runbooks and CircuitPolicies (engine.conditions).

Cases: valid is True/Valid naming the kind; problems give False, the first
problem's reason and every problem in the message (cut to 4000); observedGeneration
is the object's; lastTransitionTime is kept while the status holds, a new reason
alone included, and set to now when the status changes or was never there.
"""

from __future__ import annotations

from datetime import UTC, datetime

from runbook_operator.engine.conditions import previous_ready, ready_condition
from runbook_operator.engine.validation import Problem

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
BEFORE = "2026-12-01T00:00:00.000Z"


def test_valid_and_invalid() -> None:
    ok = ready_condition([], 3, "runbook", None, NOW)
    assert (ok["status"], ok["reason"], ok["message"]) == ("True", "Valid",
                                                           "the runbook is valid")
    assert ok["observedGeneration"] == 3 and ok["lastTransitionTime"].startswith("2026-12-08")
    bad = ready_condition([Problem("InvalidStep", "x" * 3000, "a"),
                           Problem("InvalidQuery", "y" * 3000, "b")], 4, "runbook", None, NOW)
    assert (bad["status"], bad["reason"]) == ("False", "InvalidStep")
    assert len(bad["message"]) == 4000


def test_the_transition_time_is_kept_while_the_status_holds() -> None:
    previous = {"type": "Ready", "status": "False", "reason": "InvalidStep",
                "lastTransitionTime": BEFORE}
    other_reason = ready_condition([Problem("InvalidQuery", "q", "a")], 5, "policy",
                                   previous, NOW)
    assert other_reason["lastTransitionTime"] == BEFORE
    flipped = ready_condition([], 5, "policy", previous, NOW)
    assert flipped["lastTransitionTime"] != BEFORE


def test_previous_ready_reads_any_status() -> None:
    assert previous_ready(None) is None and previous_ready({"conditions": "x"}) is None
    assert previous_ready({"conditions": [1, {"type": "Ready", "status": "True"}]}) == {
        "type": "Ready", "status": "True"}
