"""Metrics, logs and redaction of the operator process during real executions.

Cases: `/metrics` after a success, a failure and a retry holds the exact counter
values per namespace and runbook, and one step-duration sample per finished step
(steps that end at once included); the active-executions gauge is right again
after an operator restart, also when it lists one object per page; with a circuit
opened by real failures, the calls by outcome, the transition, the state, the
failure rate and the free bulkhead slots are exact, and the state gauges are
right again after a restart; every line the operator logs is JSON, and the audit
lines carry the correlation fields (namespace, runbook, execution, trace_id, and
step and attempt for a step's transitions); canaries planted as a secret param, an env
value from a Secret, an Authorization header, an exception's URL password, and a
notification's webhook URL and signing key (read from a Secret; the delivery fails
with a 404 and an Event) appear in no log line, Event, status, span or Job spec;
a watch that stays silent
past the inactivity timeout is reopened and counted in
`runbook_operator_watch_restarts_total`.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import Traced
from kube import Kube, step, wait_for
from prometheus_client.parser import text_string_to_metric_families

from cluster import LocalCluster
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration


def scrape(operator: OperatorProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_count_executions_steps_and_retries(kube: Kube,
                                                    operator: OperatorProcess) -> None:
    retry = {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}
    kube.ready_runbook("ok", {"steps": [step("a"), step("b", after=["a"])]})
    kube.ready_runbook("bad", {"steps": [step("x", exit_code=3)]})
    kube.ready_runbook("flaky", {"steps": [step("f", per_attempt={1: 1}, exit_code=0,
                                                retry=retry)]})
    for name, runbook in (("ok-1", "ok"), ("ok-2", "ok"), ("bad-1", "bad"),
                          ("flaky-1", "flaky")):
        kube.execute(name, runbook)
    for name in ("ok-1", "ok-2", "bad-1", "flaky-1"):
        kube.wait_finished(name)
    ns = kube.ns
    m = scrape(operator)
    assert value(m, "runbook_executions_total", namespace=ns, runbook="ok",
                 phase="Succeeded") == 2
    assert value(m, "runbook_executions_total", namespace=ns, runbook="bad",
                 phase="Failed") == 1
    assert value(m, "runbook_steps_total", namespace=ns, runbook="ok", step="b",
                 phase="Succeeded") == 2
    assert value(m, "runbook_steps_total", namespace=ns, runbook="bad", step="x",
                 phase="Failed") == 1
    assert value(m, "runbook_step_retries_total", namespace=ns, runbook="flaky",
                 step="f") == 1
    assert value(m, "runbook_execution_duration_seconds_count", namespace=ns, runbook="ok",
                 phase="Succeeded") == 2
    assert (value(m, "runbook_step_transition_latency_seconds_count") or 0) >= 2
    # Every finished step is one duration sample, steps that end at once included
    # (2 + 2 + 1 + 1: ok's a and b twice, bad's x, flaky's f).
    assert value(m, "runbook_step_duration_seconds_count", namespace=ns, runbook="ok") == 4
    assert value(m, "runbook_step_duration_seconds_count", namespace=ns, runbook="bad") == 1
    assert value(m, "runbook_step_duration_seconds_count", namespace=ns,
                 runbook="flaky") == 1


def test_active_gauge_is_rebuilt_after_restart(kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("slow", {"steps": [step("wait", duration="10m")]})
    kube.execute("slow-1", "slow")
    kube.execute("slow-2", "slow")
    kube.wait_phase("slow-1", "Running")
    kube.wait_phase("slow-2", "Running")
    operator.restart()
    wait_for("the active gauge after a restart", lambda: value(
        scrape(operator), "runbook_executions_active", namespace=kube.ns, runbook="slow") == 2,
        timeout=30)
    kube.patch("runbookexecutions", "slow-1", {"spec": {"cancel": True}})
    kube.wait_finished("slow-1")
    wait_for("the gauge to drop", lambda: value(
        scrape(operator), "runbook_executions_active", namespace=kube.ns, runbook="slow") == 1,
        timeout=30)


def test_paged_listing_sees_every_execution(kube: Kube, cluster: LocalCluster,
                                            operator: OperatorProcess, tmp_path: Path) -> None:
    kube.ready_runbook("slow", {"steps": [step("wait", duration="10m")]})
    for i in range(3):
        kube.execute(f"slow-{i}", "slow")
    for i in range(3):
        kube.wait_phase(f"slow-{i}", "Running")
    # A new operator listing one object per page finds all three running executions.
    paged = OperatorProcess(cluster.kubeconfig, tmp_path, extra_args=["--list-chunk-size", "1"])
    operator.stop()  # one operator at a time
    try:
        paged.start()
        wait_for("the active gauge from a paged listing", lambda: value(
            scrape(paged), "runbook_executions_active", namespace=kube.ns, runbook="slow") == 3,
            timeout=30)
        kube.patch("runbookexecutions", "slow-2", {"spec": {"cancel": True}})
        assert kube.wait_finished("slow-2")["status"]["phase"] == "Cancelled"
    finally:
        paged.stop()
        operator.start()


def test_circuit_metrics_with_an_open_circuit_and_after_restart(
        kube: Kube, operator: OperatorProcess) -> None:
    ns = kube.ns
    for name, bulkhead in (("ai", 3), ("db", 2)):
        kube.circuit_policy(name, bulkhead={"maxConcurrent": bulkhead})
    kube.ready_runbook("bad", {"steps": [step("call", exit_code=1,
                                              circuit={"policy": "ai"})]})
    kube.ready_runbook("long", {"steps": [step("query", duration="10m",
                                               circuit={"policy": "db"})]})
    for i in range(3):  # two failures open the circuit; the third call is rejected
        kube.execute(f"bad-{i}", "bad")
        kube.wait_finished(f"bad-{i}")
    assert kube.jobs("bad-2") == []
    kube.execute("long-1", "long")
    wait_for("the db step to run", lambda: (kube.get("runbookexecutions", "long-1") or {})
             .get("status", {}).get("steps", {}).get("query", {}).get("phase") == "Running")

    ai = {"namespace": ns, "policy": "ai", "key": "default"}

    def circuit_series_are_exact() -> bool:
        m = scrape(operator)
        return (value(m, "runbook_circuit_calls_total", **ai, outcome="failure") == 2
                and value(m, "runbook_circuit_calls_total", **ai, outcome="rejected") == 1
                and value(m, "runbook_circuit_calls_total", **ai, outcome="success") is None
                and value(m, "runbook_circuit_transitions_total", **ai,
                          **{"from": "Closed", "to": "Open"}) == 1
                and gauges_are_right(m))

    def gauges_are_right(m: dict[Any, float]) -> bool:
        return (value(m, "runbook_circuit_state", **ai, state="Open") == 1
                and value(m, "runbook_circuit_state", **ai, state="Closed") == 0
                and value(m, "runbook_circuit_state", **ai, state="HalfOpen") == 0
                and value(m, "runbook_circuit_failure_rate", **ai) == 1.0
                and value(m, "runbook_bulkhead_available", namespace=ns, policy="ai") == 3
                and value(m, "runbook_bulkhead_available", namespace=ns, policy="db") == 1)

    wait_for("exact circuit series", circuit_series_are_exact, timeout=30)
    # Circuit status is written in 1 s batches: SIGKILL once the Open state is stored.
    wait_for("the Open circuit in the policy status", lambda: [
        c["state"] for c in kube.circuits("ai").values()] == ["Open"])
    operator.restart()
    # Counters start again from zero (as Prometheus expects); the state is rebuilt.
    wait_for("the circuit gauges after a restart", lambda: gauges_are_right(scrape(operator)),
             timeout=30)
    kube.patch("runbookexecutions", "long-1", {"spec": {"cancel": True}})
    kube.wait_finished("long-1")
    wait_for("the db slot to be free", lambda: value(
        scrape(operator), "runbook_bulkhead_available", namespace=ns, policy="db") == 2,
        timeout=30)


def test_logs_are_json_with_correlation_and_no_canary(kube: Kube, traced: Traced) -> None:
    # Six canaries: a param marked secret, an env value from a Secret, an
    # Authorization header and a password in an exception's URL, those three
    # printed by the failing step (kwok plays its termination message), and a
    # notification's URL and signing key.
    canaries = {"param": "canary-7d1e-param", "env": "canary-5b2f-env",
                "header": "canary-91ac-header", "exception": "canary-3e8d-exc",
                "notify-url": "canary-6a0f-notify", "notify-hmac": "canary-2c4e-hmac"}
    kube.core.create_namespaced_secret(kube.ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-creds"},
        "stringData": {"token": canaries["env"]}})
    # A notification whose URL and signing key are canaries (issue 12); the URL is the
    # operator's own health port, which answers 404: a final failure with an Event.
    kube.core.create_namespaced_secret(kube.ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hooks"},
        "stringData": {"url": f"http://127.0.0.1:{traced.operator.port}/"
                              f"{canaries['notify-url']}", "hmac": canaries["notify-hmac"]}})
    printed = (f"failed with {canaries['param']}? API_TOKEN={canaries['env']} sent "
               f"'Authorization: Bearer {canaries['header']}'; requests.exceptions."
               f"HTTPError: 401 for url https://ops:{canaries['exception']}@api.example/v1")
    kube.ready_runbook("canary", {
        "params": [{"name": "api_token", "secret": True},
                   {"name": "note", "type": "string"}],
        "steps": [step("use", exit_code=4, message=printed, env=[
                      {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {
                          "name": "api-creds", "key": "token"}}}]),
                  step("report", after=["use"], when="params.api_token == 1")],
        "finally": [step("cleanup")],
        "notifications": [{"on": ["Failed"], "webhook": {
            "urlSecretRef": {"name": "hooks", "key": "url"},
            "signingSecretRef": {"name": "hooks", "key": "hmac"}}}]})
    kube.execute("canary-1", "canary", {"api_token": canaries["param"], "note": "hello"})
    kube.wait_finished("canary-1")
    [notified] = wait_for("the notification's final record", lambda: [
        r for r in kube.execution("canary-1")["status"].get("notifications") or []
        if r["state"] in ("Delivered", "Failed")] or None, timeout=60)
    assert (notified["state"], notified["lastError"]) == ("Failed", "HTTP 404 (not retried)")
    body = kube.execution("canary-1")
    spans = traced.receiver.wait_for_spans(3, timeout=30)  # the execution, use, cleanup
    assert body["status"]["phase"] == "Failed"
    wait_for("Events", lambda: {"ExecutionFailed", "NotificationFailed"} <= {
        e.reason for e in kube.events("canary-1")})
    lines = traced.operator.log_path.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"timestamp", "level", "logger", "event"} <= r.keys() for r in records)
    audit = [r for r in records if r.get("logger") == "runbook_operator.audit"
             and r.get("execution") == "canary-1"]
    assert audit and all(r["namespace"] == kube.ns and r["runbook"] == "canary" for r in audit)
    assert any(r["event"] == "ExecutionFailed" for r in audit)
    assert all(r.get("trace_id") == body["status"]["traceID"] for r in audit)
    step_lines = [r for r in audit if r["event"].startswith("Step")]
    assert step_lines and all(r.get("step") in ("use", "report", "cleanup") for r in step_lines)
    assert any(r["event"] == "StepFailed" and (r.get("step"), r.get("attempt")) == ("use", 1)
               for r in step_lines)
    # No canary reaches a log line, an Event, the status, a span or the container
    # spec. (The kwok annotation that makes the container "print" them is test
    # scaffolding in the runbook, so the frozen runbookSpec and the pod annotations
    # are left out.)
    status = {k: v for k, v in body["status"].items() if k != "runbookSpec"}
    events = [e.message or "" for e in kube.events("canary-1")]
    exported = [repr((s.name, s.attributes, [(e.name, e.attributes) for e in s.events]))
                for s in spans]
    for where, text in (("logs", "\n".join(lines)), ("status", json.dumps(status)),
                        ("Events", "\n".join(events)), ("spans", "\n".join(exported))):
        for name, canary in canaries.items():
            assert canary not in text, f"the {name} canary is in the {where}"
    assert "[REDACTED]" in body["status"]["steps"]["use"]["message"]
    for job in kube.jobs("canary-1"):
        container = job.spec.template.spec.containers[0]
        spec = json.dumps(container.to_dict(), default=str)
        assert not any(canary in spec for canary in canaries.values())
    (use,) = [j for j in kube.jobs("canary-1") if j.metadata.name == "canary-1-use-1"]
    env = {e.name: e for e in use.spec.template.spec.containers[0].env}
    assert env["API_TOKEN"].value_from.secret_key_ref.name == "api-creds"


def test_watch_restarts_are_counted(cluster: LocalCluster, crds: None, namespace: str,
                                    tmp_path: Path) -> None:
    # A second operator watching only this quiet namespace, with a 1 s inactivity
    # timeout: kopf reopens its silent streams, and each reopening is counted.
    quiet = OperatorProcess(cluster.kubeconfig, tmp_path, extra_args=[
        "--namespace", namespace, "--watch-inactivity-timeout", "1"])
    quiet.start()
    try:
        def restarts() -> dict[str, float]:
            return {dict(labels)["resource"]: v for (name, labels), v in scrape(quiet).items()
                    if name == "runbook_operator_watch_restarts_total"}
        watched = {"runbooks", "runbookexecutions", "circuitpolicies", "jobs", "pods"}
        # Every watch is reopened, and again: each silence is counted, not only the first.
        wait_for("every watch restarted twice", lambda: all(
            restarts().get(resource, 0) >= 2 for resource in watched), timeout=30)
        # At INFO the DEBUG lines that were counted are not logged.
        assert "is inactive, reconnecting" not in quiet.log_path.read_text()
    finally:
        quiet.stop()
