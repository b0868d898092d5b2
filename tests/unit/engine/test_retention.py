"""Which finished executions a Runbook's history limits let go (engine/retention.py).

Cases: the oldest beyond successfulLimit and beyond failedLimit (Failed and
Cancelled together) are selected, oldest first; unset limits keep everything;
running executions, other runbooks and other namespaces are never selected.
"""

from __future__ import annotations

from typing import Any

from runbook_operator.engine.retention import expired


def run(name: str, phase: str, minute: int, runbook: str = "rb", ns: str = "ops"
        ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"runbookRef": {"name": runbook}},
            "status": {"phase": phase, "finishedAt": f"2026-12-01T10:{minute:02d}:00Z"}}


RUNS = [run("s1", "Succeeded", 1), run("s2", "Succeeded", 2), run("s3", "Succeeded", 3),
        run("f1", "Failed", 4), run("c1", "Cancelled", 5), run("r1", "Running", 0),
        run("other", "Succeeded", 0, runbook="x"), run("elsewhere", "Succeeded", 0, ns="dev")]


def test_the_oldest_beyond_each_limit() -> None:
    assert expired({"successfulLimit": 1, "failedLimit": 1}, "ops", "rb", RUNS) == \
        ["s1", "s2", "f1"]


def test_unset_limits_keep_everything() -> None:
    assert expired(None, "ops", "rb", RUNS) == []
    assert expired({"failedLimit": 5}, "ops", "rb", RUNS) == []
    assert expired({"successfulLimit": 0}, "ops", "rb", RUNS) == ["s1", "s2", "s3"]
