"""Circuit breakers on the real control plane, calls failing and succeeding through kwok.

Cases (issue 4): failures open the circuit and the next guarded step creates no
Job and fails fast with CircuitOpen; with onOpen Fallback the fallback step runs
and the execution succeeds; two keys of one policy are independent; the state is
in the policy's status and survives an operator SIGKILL (same nextAttemptAt),
then half-opens on time and a successful trial closes it; ForcedOpen rejects
without any call and Disabled never opens.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kube import Kube, step, wait_for

from operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def run(kube: Kube, name: str, runbook: str, params: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    kube.execute(name, runbook, params)
    return kube.wait_finished(name)


def guarded(name: str, exit_code: int, on_open: str = "Fail", key: str | None = None,
            **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"policy": "ai", "onOpen": on_open}
    if key:
        ref["key"] = key
    return step(name, exit_code=exit_code, circuit=ref, **extra)


def test_failures_open_the_circuit_then_calls_fail_fast(kube: Kube) -> None:
    kube.circuit_policy("ai")
    kube.ready_runbook("bad", {"steps": [guarded("call", 1)]})
    for i in range(2):
        assert run(kube, f"bad-{i}", "bad")["status"]["phase"] == "Failed"
    wait_for("the circuit to be Open in the policy status",
             lambda: kube.circuits("ai").get("default", {}).get("state") == "Open")
    assert (kube.get("circuitpolicies", "ai") or {})["status"]["openCircuits"] == 1
    body = run(kube, "bad-2", "bad")
    st = body["status"]["steps"]["call"]
    assert (st["phase"], st["reason"]) == ("Failed", "CircuitOpen")
    assert kube.jobs("bad-2") == [], "an open circuit must create no Job"

    kube.ready_runbook("fallback", {"steps": [
        step("primary", circuit={"policy": "ai", "onOpen": "Fallback", "fallback": "backup"}),
        step("backup")]})
    body = run(kube, "fallback-1", "fallback")
    steps = body["status"]["steps"]
    assert body["status"]["phase"] == "Succeeded", body["status"]
    assert (steps["primary"]["phase"], steps["primary"]["reason"]) == ("Skipped", "CircuitOpen")
    assert steps["backup"]["phase"] == "Succeeded"
    assert {j.metadata.name for j in kube.jobs("fallback-1")} == {"fallback-1-backup-1"}


def test_keys_are_independent(kube: Kube) -> None:
    kube.circuit_policy("ai")
    kube.ready_runbook("provider", {
        "params": [{"name": "provider", "enum": ["openai", "anthropic"], "default": "openai"}],
        "steps": [step("call", circuit={"policy": "ai", "key": "params.provider"})]})
    # A second runbook whose call fails, sharing the policy and the key expression.
    kube.ready_runbook("provider-bad", {
        "params": [{"name": "provider", "enum": ["openai", "anthropic"], "default": "openai"}],
        "steps": [guarded("call", 1, key="params.provider")]})
    for i in range(2):
        run(kube, f"openai-{i}", "provider-bad", {"provider": "openai"})
    wait_for("openai Open", lambda: kube.circuits("ai").get("openai", {}).get("state") == "Open")
    body = run(kube, "anthropic-1", "provider", {"provider": "anthropic"})
    assert body["status"]["phase"] == "Succeeded"
    wait_for("anthropic recorded", lambda: "anthropic" in kube.circuits("ai"))
    state = kube.circuits("ai")
    assert state["openai"]["state"] == "Open" and state["anthropic"]["state"] == "Closed"


def test_open_circuit_survives_a_restart_then_half_opens(kube: Kube,
                                                         operator: OperatorProcess) -> None:
    kube.circuit_policy("ai", openDuration="8s")
    kube.ready_runbook("bad", {"steps": [guarded("call", 1)]})
    kube.ready_runbook("good", {"steps": [guarded("call", 0)]})
    for i in range(2):
        run(kube, f"bad-{i}", "bad")
    before = wait_for("Open", lambda: (c := kube.circuits("ai").get("default")) and
                      c["state"] == "Open" and c)
    operator.kill()
    operator.start()
    body = run(kube, "during", "good")  # still Open after the restart: rejected
    assert body["status"]["steps"]["call"]["reason"] == "CircuitOpen"
    after = kube.circuits("ai")["default"]
    assert after["state"] == "Open" and after["nextAttemptAt"] == before["nextAttemptAt"]
    wait_for("openDuration to pass", lambda: time.time() > _epoch(before["nextAttemptAt"]),
             timeout=30)
    body = run(kube, "trial", "good")  # HalfOpen: one trial call, it succeeds
    assert body["status"]["phase"] == "Succeeded"
    assert [j.metadata.name for j in kube.jobs("trial")] == ["trial-call-1"]
    wait_for("Closed after the trial",
             lambda: kube.circuits("ai")["default"]["state"] == "Closed")


def test_forced_open_and_disabled_modes(kube: Kube) -> None:
    kube.circuit_policy("ai", mode="ForcedOpen")
    kube.ready_runbook("good", {"steps": [guarded("call", 0)]})
    body = run(kube, "forced", "good")
    assert body["status"]["steps"]["call"]["reason"] == "CircuitOpen"
    assert kube.jobs("forced") == []
    generation = kube.patch("circuitpolicies", "ai", {"spec": {"mode": "Disabled"}})[
        "metadata"]["generation"]
    wait_for("the operator sees mode Disabled", lambda: ((kube.get("circuitpolicies", "ai")
                                                         or {}).get("status") or {})
             .get("observedGeneration") == generation)
    kube.ready_runbook("bad", {"steps": [guarded("call", 1)]})
    for i in range(3):
        assert run(kube, f"bad-{i}", "bad")["status"]["steps"]["call"]["reason"] != \
            "CircuitOpen"
    assert kube.circuits("ai").get("default", {}).get("state", "Closed") == "Closed"


def _epoch(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_bulkhead_caps_guarded_jobs_across_executions(kube: Kube, k8s_api: Any) -> None:
    from kube import PodWatch

    kube.circuit_policy("ai", bulkhead={"maxConcurrent": 2})
    kube.ready_runbook("heavy", {"steps": [guarded("call", 0, duration="2s")]})
    # A slot is free once its pod has terminated (before the Job is marked Complete).
    with PodWatch(k8s_api, kube.ns) as pods:
        for i in range(6):
            kube.execute(f"heavy-{i}", "heavy")
        bodies = [kube.wait_finished(f"heavy-{i}", timeout=120) for i in range(6)]
    assert all(b["status"]["phase"] == "Succeeded" for b in bodies)
    assert pods.max_running <= 2, f"{pods.max_running} guarded step pods ran at once"
    assert len(pods.steps) == 6
    waited = [b for b in bodies if any(h["event"] == "StepWaiting" and
                                       "bulkhead" in (h.get("message") or "")
                                       for h in b["status"]["history"])]
    assert waited, "some executions should have waited for a slot"


def test_bulkhead_max_wait_times_out(kube: Kube) -> None:
    kube.circuit_policy("ai", bulkhead={"maxConcurrent": 1, "maxWait": "2s"})
    kube.ready_runbook("hog", {"steps": [guarded("call", 0, duration="10m")]})
    kube.execute("hog-1", "hog")
    kube.wait_phase("hog-1", "Running")
    wait_for("hog-1's Job", lambda: kube.jobs("hog-1"))
    kube.execute("hog-2", "hog")
    body = kube.wait_finished("hog-2", timeout=60)
    st = body["status"]["steps"]["call"]
    assert (st["phase"], st["reason"]) == ("Failed", "BulkheadTimeout")
    assert kube.jobs("hog-2") == []


def test_half_open_admits_exactly_the_permitted_trials_and_a_failure_reopens(
        kube: Kube) -> None:
    kube.circuit_policy("ai", openDuration="3s", halfOpen={"permittedCalls": 1})
    kube.ready_runbook("bad", {"steps": [guarded("call", 1)]})
    kube.ready_runbook("slow-good", {"steps": [guarded("call", 0, duration="12s")]})
    for i in range(2):
        run(kube, f"bad-{i}", "bad")
    opened = wait_for("Open", lambda: (c := kube.circuits("ai").get("default")) and
                      c["state"] == "Open" and c)
    wait_for("openDuration", lambda: time.time() > _epoch(opened["nextAttemptAt"]), timeout=30)
    kube.execute("trial-1", "slow-good")  # takes the one permit and holds it 12 s
    wait_for("the trial Job", lambda: kube.jobs("trial-1"))
    body = run(kube, "trial-2", "slow-good")  # no permit left: rejected, no Job
    assert body["status"]["steps"]["call"]["reason"] == "CircuitOpen"
    assert "HalfOpen" in body["status"]["steps"]["call"]["message"]
    assert kube.jobs("trial-2") == []
    assert kube.wait_finished("trial-1")["status"]["phase"] == "Succeeded"
    wait_for("Closed", lambda: kube.circuits("ai")["default"]["state"] == "Closed")
    for i in range(2, 4):
        run(kube, f"bad-{i}", "bad")
    reopened = wait_for("Open again", lambda: (c := kube.circuits("ai").get("default")) and
                        c["state"] == "Open" and c)
    wait_for("openDuration", lambda: time.time() > _epoch(reopened["nextAttemptAt"]),
             timeout=30)
    run(kube, "bad-trial", "bad")  # the trial fails: Open again
    wait_for("reopened after a failed trial", lambda: (c := kube.circuits("ai")["default"])
             ["state"] == "Open" and c["transitions"] > reopened["transitions"])


def test_policy_timeout_is_the_default_for_guarded_steps(kube: Kube) -> None:
    kube.circuit_policy("ai", timeout="2s", minimumCalls=100)
    kube.ready_runbook("slowcall", {"steps": [guarded("call", 0, duration="10m")]})
    body = run(kube, "slowcall-1", "slowcall")
    assert body["status"]["steps"]["call"]["reason"] == "DeadlineExceeded"
    (job,) = kube.jobs("slowcall-1")
    assert job.spec.active_deadline_seconds == 2
