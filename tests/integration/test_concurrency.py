"""Runbook concurrency across executions on the real control plane.

Cases (issue 4): Forbid fails a second execution with ConcurrencyForbidden while
one runs; Queue holds later executions in phase Queued and starts them one at a
time, a SEV1 before an older SEV4; Replace cancels the running execution, then
starts; executions with another key are not held back.
"""

from __future__ import annotations

from typing import Any

import pytest
from kube import Kube, step, wait_for

pytestmark = pytest.mark.integration

PARAMS = [{"name": "severity", "enum": ["SEV1", "SEV2", "SEV3", "SEV4"], "default": "SEV3"},
          {"name": "target", "default": "a"}]


def runbook(kube: Kube, name: str, policy: str, duration: str = "3s") -> None:
    kube.ready_runbook(name, {"params": PARAMS, "concurrency": {
        "policy": policy, "key": "params.target"},
        "steps": [step("work", duration=duration)]})


def phase(kube: Kube, name: str) -> str | None:
    return (kube.execution(name).get("status") or {}).get("phase")


def test_forbid(kube: Kube) -> None:
    runbook(kube, "solo", "Forbid", duration="10m")
    kube.execute("solo-1", "solo")
    kube.wait_phase("solo-1", "Running")
    kube.execute("solo-2", "solo")
    body = kube.wait_finished("solo-2")
    assert (body["status"]["phase"], body["status"]["reason"]) == ("Failed",
                                                                   "ConcurrencyForbidden")
    assert "solo-1" in body["status"]["message"]
    assert kube.jobs("solo-2") == []
    kube.execute("solo-other", "solo", {"target": "b"})  # another key: not held back
    kube.wait_phase("solo-other", "Running")


def test_queue_in_order_sev1_first(kube: Kube) -> None:
    runbook(kube, "line", "Queue")
    kube.execute("line-1", "line")
    kube.wait_phase("line-1", "Running")
    kube.execute("line-2", "line", {"severity": "SEV4"})
    kube.wait_phase("line-2", "Queued")
    kube.execute("line-3", "line", {"severity": "SEV1"})
    kube.wait_phase("line-3", "Queued")
    bodies: dict[str, Any] = {n: kube.wait_finished(n, timeout=120)
                              for n in ("line-1", "line-2", "line-3")}
    assert all(b["status"]["phase"] == "Succeeded" for b in bodies.values())
    started = {n: b["status"]["startedAt"] for n, b in bodies.items()}
    assert started["line-1"] < started["line-3"] < started["line-2"], started
    # never two at once: each started after the previous one finished
    assert bodies["line-1"]["status"]["finishedAt"] <= started["line-3"]
    assert bodies["line-3"]["status"]["finishedAt"] <= started["line-2"]


def test_replace(kube: Kube) -> None:
    runbook(kube, "fresh", "Replace", duration="10m")
    kube.execute("fresh-1", "fresh")
    kube.wait_phase("fresh-1", "Running")
    kube.execute("fresh-2", "fresh")
    old = kube.wait_finished("fresh-1")
    assert old["status"]["phase"] == "Cancelled"
    wait_for("the replacement to run", lambda: phase(kube, "fresh-2") == "Running")
    history = [h["event"] for h in kube.execution("fresh-2")["status"]["history"]]
    assert "ExecutionStarted" in history
