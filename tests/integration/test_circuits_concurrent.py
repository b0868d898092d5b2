"""Guarded passes run concurrently on the real control plane and never over-admit.

There is no lock across API calls (issue 11): passes reserve trial permits and
bulkhead slots under short per-policy locks, then create Jobs and write status
with no lock held. Cases:
- eight executions created at once against a HalfOpen circuit with one permitted
  trial: exactly one trial Job exists (a Job watch sees every Job created), the
  others are rejected with CircuitOpen naming HalfOpen;
- eight executions created at once against a bulkhead of 2: a pod watch never sees
  more than 2 guarded step pods running, and all of them succeed;
- while those passes run, ``/metrics`` answers every scrape (the event loop never
  waits for a pass).
"""

from __future__ import annotations

import time
import urllib.request
from datetime import datetime
from typing import Any

import pytest
from kube import JobWatch, Kube, PodWatch, step, wait_for

from operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def guarded(name: str, exit_code: int, **extra: Any) -> dict[str, Any]:
    return step(name, exit_code=exit_code, circuit={"policy": "ai", "onOpen": "Fail"},
                **extra)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_half_open_gives_its_one_trial_to_one_of_many_concurrent_executions(
        kube: Kube, k8s_api: Any) -> None:
    kube.circuit_policy("ai", openDuration="3s", halfOpen={"permittedCalls": 1})
    kube.ready_runbook("bad", {"steps": [guarded("call", 1)]})
    kube.ready_runbook("slow-good", {"steps": [guarded("call", 0, duration="20s")]})
    for i in range(2):
        kube.execute(f"bad-{i}", "bad")
        kube.wait_finished(f"bad-{i}")
    opened = wait_for("Open", lambda: (c := kube.circuits("ai").get("default")) and
                      c["state"] == "Open" and c)
    wait_for("openDuration", lambda: time.time() > _epoch(opened["nextAttemptAt"]), timeout=30)
    names = [f"trial-{i}" for i in range(8)]
    with JobWatch(k8s_api, kube.ns) as jobs:
        for name in names:
            kube.execute(name, "slow-good")
        bodies = [kube.wait_finished(name, timeout=180) for name in names]
    trial_jobs = sorted(j for j in jobs.created if j.startswith("trial-"))
    assert len(trial_jobs) == 1, f"HalfOpen with 1 permit created {trial_jobs}"
    ran = [b for b in bodies if b["status"]["steps"]["call"].get("job")]
    assert len(ran) == 1 and ran[0]["status"]["phase"] == "Succeeded"
    refused = [b["status"]["steps"]["call"] for b in bodies if b not in ran]
    assert all(st["reason"] == "CircuitOpen" and "HalfOpen" in st["message"]
               for st in refused), refused
    wait_for("Closed after the trial",
             lambda: kube.circuits("ai")["default"]["state"] == "Closed")


def test_bulkhead_of_two_holds_under_concurrent_passes(
        kube: Kube, k8s_api: Any, operator: OperatorProcess) -> None:
    kube.circuit_policy("ai", bulkhead={"maxConcurrent": 2}, minimumCalls=100)
    kube.ready_runbook("heavy", {"steps": [guarded("call", 0, duration="3s")]})
    names = [f"heavy-{i}" for i in range(8)]
    scrapes = 0
    with PodWatch(k8s_api, kube.ns) as pods:
        for name in names:
            kube.execute(name, "heavy")
        pending = set(names)
        deadline = time.monotonic() + 180
        while pending and time.monotonic() < deadline:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{operator.port}/metrics", timeout=30) as response:
                assert response.status == 200
            scrapes += 1
            pending = {n for n in pending if kube.execution(n).get("status", {}).get("phase")
                       not in ("Succeeded", "Failed", "Cancelled")}
            time.sleep(0.2)
    assert not pending, f"not finished: {sorted(pending)}"
    bodies = [kube.execution(n) for n in names]
    assert all(b["status"]["phase"] == "Succeeded" for b in bodies), \
        [b["status"].get("message") for b in bodies]
    assert pods.max_running <= 2, f"{pods.max_running} guarded step pods ran at once"
    assert len(pods.steps) == 8
    assert scrapes > 0
