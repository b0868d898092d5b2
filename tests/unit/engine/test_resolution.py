"""A resolved alert's effect on its occurrence's execution (engine.resolution).

Cases: no execution: resolved, nothing written; an execution the alert did not start
(manual, another fingerprint): rejected, left alone; onResolved Cancel on a running
run: one cancel patch, and a delivery that finds it already cancelled is a duplicate;
a finished run, or onResolved Record: one AlertResolved history entry, written
guarded by the version read, and a duplicate once the history has it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbook_operator.engine.alerts import Alert, Resolve
from runbook_operator.engine.resolution import resolve

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


class Trigger:
    namespace = "ops"
    runbook = "mem"


def decision(cancel: bool) -> Resolve:
    alert = Alert(status="resolved", labels={"alertname": "HighMemory"}, annotations={},
                  starts_at="2026-12-08T11:00:00Z", starts_ns=1_796_727_600_000_000_000,
                  ends_at="2026-12-08T11:30:00Z", generator_url="", fingerprint="f1")
    return Resolve(trigger=Trigger(), alert=alert, name="mem-f1", cancel=cancel)  # type: ignore[arg-type]


def execution(phase: str, **status: Any) -> dict[str, Any]:
    d = decision(True)
    return {"metadata": {"name": "mem-f1", "resourceVersion": "7"},
            "spec": {"runbookRef": {"name": "mem"}, "triggeredBy": {
                "kind": "Alert", "alert": {"fingerprint": "f1",
                                           "startsAt": d.alert.starts_at}}},
            "status": {"phase": phase, "history": [], **status}}


def test_gone_and_squatted() -> None:
    assert resolve(None, decision(True), NOW).outcome == "resolved"
    manual = execution("Running")
    manual["spec"] = {"runbookRef": {"name": "mem"}}
    squat = resolve(manual, decision(True), NOW)
    assert squat.outcome == "rejected" and squat.patch is None
    assert "did not start it" in (squat.detail or "")


def test_cancel_once() -> None:
    first = resolve(execution("Running"), decision(True), NOW)
    assert first.outcome == "cancelled" and first.patch is not None and not first.guarded
    assert first.patch["cancelReason"] == "AlertResolved"
    again = resolve(execution("Running", cancelReason="AlertResolved"), decision(True), NOW)
    assert again.outcome == "duplicate" and again.patch is None


def test_record_once() -> None:
    for body, cancel in ((execution("Succeeded"), True), (execution("Running"), False)):
        first = resolve(body, decision(cancel), NOW)
        assert first.outcome == "resolved" and first.guarded and first.patch is not None
        [entry] = first.patch["history"]
        assert entry["event"] == "AlertResolved" and "2026-12-08T11:30:00Z" in entry["message"]
        recorded = dict(body, status={**body["status"], "history": [entry]})
        assert resolve(recorded, decision(cancel), NOW).outcome == "duplicate"
