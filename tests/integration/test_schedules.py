"""Schedules start runbooks, end to end on the local control plane (issue 12).

A schedule every 2 seconds (the seconds field), whose only step is a wait (no Job,
so the test measures the scheduler, not kwok).

Cases:
- running: an execution for every slot after the Runbook's creation, named by its
  slot, triggeredBy Schedule with the slot time, each run to Succeeded;
  status.schedule follows (lastExecution, nextScheduleTime after lastScheduleTime);
- SIGKILL of the operator for 10 s: on restart at most the latest missed slot starts
  (within startingDeadline), the others are counted missed on the Runbook's status
  and in a ScheduleMissed Event; no slot has two executions;
- two operator processes at once for 10 s: every slot exactly once; both were
  deciding (the second one's duplicate counter or its created counter moves);
- the Runbook's concurrency policy (Forbid) applies to scheduled runs: while one
  scheduled run waits for 10 minutes, the next slots' runs fail with
  ConcurrencyForbidden naming it;
- a schedule added to a Runbook 8 s after its creation: no slot from before the edit
  is started or reported missed; slots after it run.
"""

from __future__ import annotations

import itertools
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kube import Kube, wait_for

from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

EVERY = 2
SPEC: dict[str, Any] = {
    "schedule": {"cron": "*/2 * * * * *", "startingDeadline": "5s"},
    "steps": [{"name": "tick", "type": "wait", "wait": {"duration": "100ms"}}],
}


def slots(kube: Kube, runbook: str) -> list[int]:
    """Slot times (unix seconds) of the runbook's scheduled executions, sorted."""
    found = []
    listing = kube.custom.list_namespaced_custom_object(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions")
    for item in listing["items"]:
        spec = item.get("spec") or {}
        if (spec.get("runbookRef") or {}).get("name") != runbook:
            continue
        scheduled = ((spec.get("triggeredBy") or {}).get("schedule") or {}).get(
            "scheduledTime")
        assert scheduled, item["metadata"]["name"]
        moment = datetime.fromisoformat(scheduled.replace("Z", "+00:00"))
        slot = int(moment.timestamp())
        assert item["metadata"]["name"] == f"{runbook}-{slot}"
        assert spec["triggeredBy"]["kind"] == "Schedule"
        found.append(slot)
    return sorted(found)


def schedule_status(kube: Kube, runbook: str) -> dict[str, Any]:
    body = kube.get("runbooks", runbook) or {}
    return dict((body.get("status") or {}).get("schedule") or {})


def test_runs_every_slot(kube: Kube) -> None:
    kube.ready_runbook("every-2s", SPEC)
    wait_for("four scheduled executions", lambda: len(slots(kube, "every-2s")) >= 4 or None,
             timeout=30)
    found = slots(kube, "every-2s")
    assert all(b - a == EVERY for a, b in itertools.pairwise(found)), found
    kube.wait_finished(f"every-2s-{found[0]}")
    assert kube.execution(f"every-2s-{found[0]}")["status"]["phase"] == "Succeeded"
    status = schedule_status(kube, "every-2s")
    assert status["lastExecution"].startswith("every-2s-")
    assert status["nextScheduleTime"] > status["lastScheduleTime"]


def test_sigkill_catches_up_at_most_the_latest(kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("killed", SPEC)
    wait_for("a scheduled execution", lambda: slots(kube, "killed") or None, timeout=30)
    operator.kill()
    killed_at = time.time()
    before = slots(kube, "killed")
    time.sleep(10)
    operator.start()
    restarted_at = time.time()
    wait_for("the scheduler back", lambda: any(
        s > restarted_at for s in slots(kube, "killed")) or None, timeout=30)
    after = slots(kube, "killed")
    assert len(after) == len(set(after))
    # Slots strictly inside the downtime: at most one of them started (the latest,
    # caught up on restart); the rest are missed.
    down = [s for s in after if killed_at + 1 < s < restarted_at - 1]
    assert len(down) <= 1, (down, before, after)
    status = schedule_status(kube, "killed")
    assert status.get("missed", 0) >= 3
    wait_for("a ScheduleMissed Event", lambda: [
        e for e in kube.events("killed") if e.reason == "ScheduleMissed"] or None, timeout=30)


def test_two_operators_never_create_a_slot_twice(kube: Kube, cluster: Any,
                                                 tmp_path: Path) -> None:
    kube.ready_runbook("twice", SPEC)
    second = OperatorProcess(cluster.kubeconfig, tmp_path / "second")
    second.start()
    try:
        started = time.time()
        time.sleep(10)
        metrics = _metrics(second.port)
    finally:
        second.stop()
    found = slots(kube, "twice")
    assert len(found) == len(set(found))
    during = [s for s in found if started + 1 < s < started + 9]
    assert len(during) >= 3 and all(b - a == EVERY for a, b in
                                    itertools.pairwise(during)), during
    outcomes = {line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("runbook_schedule_runs_total{") and 'runbook="twice"' in line}
    assert sum(outcomes.values()) >= 1, metrics[-2000:]


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def test_concurrency_policy_applies_to_scheduled_runs(kube: Kube) -> None:
    kube.ready_runbook("overlap", {
        "schedule": {"cron": "*/2 * * * * *", "startingDeadline": "5s"},
        "concurrency": {"policy": "Forbid"},
        "steps": [{"name": "long", "type": "wait", "wait": {"duration": "10m"}}]})

    def decided() -> list[dict[str, Any]] | None:
        bodies = [kube.execution(f"overlap-{slot}") for slot in slots(kube, "overlap")]
        phases = [(b.get("status") or {}).get("phase") for b in bodies]
        done = [b for b, p in zip(bodies, phases, strict=True) if p in ("Running", "Failed")]
        return done if len(done) >= 3 else None

    found = wait_for("three scheduled runs decided", decided, timeout=60)
    running = [b for b in found if b["status"]["phase"] == "Running"]
    refused = [b for b in found if b["status"]["phase"] == "Failed"]
    assert len(running) == 1, [(b["metadata"]["name"], b["status"]) for b in found]
    holder = running[0]["metadata"]["name"]
    assert refused and all(b["status"]["reason"] == "ConcurrencyForbidden"
                           and holder in b["status"]["message"] for b in refused)
    kube.patch("runbooks", "overlap", {"spec": {"schedule": {"suspend": True}}})


def test_schedule_added_later_runs_no_slot_from_before(kube: Kube) -> None:
    kube.ready_runbook("added", {"steps": SPEC["steps"]})
    time.sleep(8)  # four slots of */2 pass before the schedule exists
    patched_at = time.time()  # before the edit: a slot after it may rightly run
    kube.patch("runbooks", "added", {"spec": {"schedule": SPEC["schedule"]}})
    wait_for("two scheduled executions", lambda: len(slots(kube, "added")) >= 2 or None,
             timeout=30)
    assert all(slot > patched_at for slot in slots(kube, "added")), (patched_at,
                                                                     slots(kube, "added"))
    assert not [e for e in kube.events("added") if e.reason == "ScheduleMissed"]
    assert "missed" not in schedule_status(kube, "added")
