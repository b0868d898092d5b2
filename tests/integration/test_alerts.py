"""Alerts start runbooks, end to end on the local control plane (issue 9).

Cases:
- a real Prometheus scrapes an exporter whose memory series crosses the shipped
  HighMemoryUsage rule (90 %), a real Alertmanager sends to the operator's receiver,
  and the matching runbook's execution appears with params from the alert labels,
  severity from the trigger, triggeredBy Alert, and runs to Succeeded;
- an HA pair of real Alertmanagers, peered and unpeered (duplicates certain), both
  delivering: one execution per occurrence; when the alert resolves, the execution
  (onResolved: Cancel) ends Cancelled with reason AlertResolved;
- the operator SIGKILLed between two deliveries of the same alert: one execution;
- a burst of 1,000 posts (200 unique occurrences, the rest duplicates, five alerts
  per post, four runbooks, eight clients at once): exactly 200 executions, and the
  receiver's counts say 200 created, 4,800 duplicates;
- a flapping alert (new startsAt) within cooldown starts nothing; without cooldown
  it starts a new execution;
- an alert param that fails the Runbook's param types fails that execution with
  InvalidParams before any Job; CEL failing on one alert leaves the others of the
  same post starting their runbooks; an unparsable matcher makes the Runbook
  Ready=False naming the trigger, and it starts nothing;
- a resolved alert with onResolved: Ignore is recorded in the execution's history;
- metrics: runbook_alerts_received_total by outcome on /metrics;
- hostile label values (quotes, newline, shell syntax, bidi control, NUL) reach the
  execution and the container's PARAM_ variable unchanged, never its command.
"""

from __future__ import annotations

import copy
import json
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alerting import (
    Alertmanager,
    Exporter,
    Prometheus,
    Route,
    alerting_bin,
    alertmanager_pair,
    running,
)
from kube import Kube, step, wait_for

from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

LABEL_FINGERPRINT = "runbooks.dev/alert-fingerprint"


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return alerting_bin()


def memory_runbook(kube: Kube, name: str = "high-memory-usage", *, on_resolved: str = "Ignore",
                   duration: str | None = None, cooldown: str | None = None) -> None:
    trigger: dict[str, Any] = {
        "match": ['alertname="HighMemoryUsage"', 'severity=~"critical|warning"',
                  f'namespace="{kube.ns}"'],
        "params": {"namespace": "alert.labels.namespace", "deployment": "alert.labels.service"},
        "severity": 'alert.labels.severity == "critical" ? "SEV1" : "SEV2"',
        "onResolved": on_resolved}
    if cooldown:
        trigger["cooldown"] = cooldown
    kube.ready_runbook(name, {
        "params": [{"name": "namespace"}, {"name": "deployment"}],
        "triggers": {"alerts": [trigger]},
        "steps": [step("measure", duration=duration)]})


def alert_executions(kube: Kube, runbook: str | None = None) -> list[dict[str, Any]]:
    items = kube.custom.list_namespaced_custom_object(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions",
        label_selector="runbooks.dev/trigger=alert")["items"]
    return [i for i in items if runbook is None or i["spec"]["runbookRef"]["name"] == runbook]


def post(operator: OperatorProcess, body: Any, token: str | None = None,
         path: str = "", retry_503_for: float = 60.0) -> tuple[int, dict[str, Any]]:
    """POST a notification; like Alertmanager, retry while the answer is 503."""
    token = token or operator.alerts_token
    deadline = time.monotonic() + retry_503_for
    while True:
        request = urllib.request.Request(
            operator.alerts_url + path, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                return exc.code, json.loads(exc.read() or b"{}")
        except urllib.error.URLError:  # not listening yet, right after a restart
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def alert(name: str, fingerprint: str, starts_at: str = "2026-12-01T10:00:00Z",
          status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, **labels},
            "annotations": {"value": "0.97"}, "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T11:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def notification(*alerts: dict[str, Any], external: str = "http://am-0") -> dict[str, Any]:
    return {"version": "4", "status": alerts[0]["status"], "receiver": "runbook-operator",
            "groupKey": '{}:{alertname="x"}', "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": external, "truncatedAlerts": 0,
            "alerts": list(alerts)}


def metric(operator: OperatorProcess, outcome: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = f'runbook_alerts_received_total{{outcome="{outcome}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines()
               if line.startswith(prefix))


def memory_series(exporter: Exporter, namespace: str, used: float) -> None:
    labels = {"namespace": namespace, "pod": "checkout-7d9f", "container": "checkout"}
    exporter.set("container_spec_memory_limit_bytes", labels, 1000)
    exporter.set("container_memory_working_set_bytes", labels, used)


# -- with the real upstream programs ----------------------------------------------------


def test_prometheus_alert_starts_the_runbook(kube: Kube, operator: OperatorProcess,
                                             bin_dir: Path, tmp_path: Path) -> None:
    memory_runbook(kube)
    exporter = Exporter()
    am = Alertmanager(bin_dir, tmp_path / "am", webhook_url=operator.alerts_url,
                      token_file=operator.alerts_token_file)
    prometheus = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter,
                            alertmanagers=[am.address])
    memory_series(exporter, kube.ns, 950)   # 95 % of the limit: above 90 %
    with running(exporter, am, prometheus):
        (execution,) = wait_for("an execution started by the alert",
                                lambda: alert_executions(kube), timeout=120)
    name = execution["metadata"]["name"]
    assert execution["spec"]["params"] == {"namespace": kube.ns, "deployment": "checkout"}
    assert execution["spec"]["severity"] == "SEV1"
    ref = execution["spec"]["triggeredBy"]
    assert ref["kind"] == "Alert"
    assert ref["alert"]["name"] == "HighMemoryUsage"
    assert ref["alert"]["receiver"] == "runbook-operator"
    assert ref["alert"]["fingerprint"] == execution["metadata"]["labels"][LABEL_FINGERPRINT]
    assert ref["alert"]["startsAt"] and ref["alert"]["groupKey"]
    assert kube.wait_finished(name)["status"]["phase"] == "Succeeded"


@pytest.mark.parametrize("peered", [True, False], ids=["peered", "unpeered"])
def test_ha_pair_one_execution_per_occurrence_and_resolve_cancels(
        kube: Kube, operator: OperatorProcess, bin_dir: Path, tmp_path: Path,
        peered: bool) -> None:
    memory_runbook(kube, on_resolved="Cancel", duration="10m")
    duplicates_before = metric(operator, "duplicate")
    exporter = Exporter()
    # A short repeat interval: each member re-sends the same occurrence every 2 s.
    am0, am1 = alertmanager_pair(bin_dir, tmp_path, webhook_url=operator.alerts_url,
                                 token_file=operator.alerts_token_file, peered=peered,
                                 route=Route(repeat_interval="2s"))
    prometheus = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter,
                            alertmanagers=[am0.address, am1.address])
    memory_series(exporter, kube.ns, 990)
    with running(exporter, am0, am1, prometheus):
        (first,) = wait_for("the alert's execution", lambda: alert_executions(kube),
                            timeout=120)
        name = first["metadata"]["name"]
        kube.wait_phase(name, "Running")
        # Repeats, retries and (unpeered) the second member all reach the receiver.
        wait_for("duplicate deliveries", lambda: metric(operator, "duplicate")
                 >= duplicates_before + 2, timeout=60)
        assert [e["metadata"]["name"] for e in alert_executions(kube)] == [name]
        memory_series(exporter, kube.ns, 100)   # 10 %: the alert resolves
        body = kube.wait_phase(name, "Cancelled", timeout=120)
    assert body["status"]["reason"] == "AlertResolved"
    assert "HighMemoryUsage" in body["status"]["message"]
    assert len(alert_executions(kube)) == 1


# -- with posts from the test (the wire format Alertmanager uses) -----------------------


def test_receiver_killed_between_two_deliveries(kube: Kube, operator: OperatorProcess) -> None:
    memory_runbook(kube, duration="10m")
    body = notification(alert("HighMemoryUsage", "aa01", namespace=kube.ns,
                              service="api", severity="critical"))
    status, answer = post(operator, body)
    assert (status, answer["outcomes"]) == (200, {"created": 1})
    operator.kill()
    operator.start()
    status, answer = post(operator, body)
    assert (status, answer["outcomes"]) == (200, {"duplicate": 1})
    assert len(alert_executions(kube)) == 1


def test_burst_of_1000_posts_makes_exactly_200_executions(kube: Kube,
                                                          operator: OperatorProcess) -> None:
    runbooks = ["mem", "errors", "ai", "db"]
    for name in runbooks:
        kube.ready_runbook(name, {
            "triggers": {"alerts": [{"match": [f'alertname="Burst{name}"',
                                               f'namespace="{kube.ns}"']}]},
            "steps": [{"name": "hold", "type": "approval"}]})
    unique = [alert(f"Burst{runbooks[i % 4]}", f"{i:04x}", namespace=kube.ns,
                    starts_at=f"2026-12-01T10:{i // 60:02d}:{i % 60:02d}Z")
              for i in range(200)]
    rng = random.Random(9)
    posts = [notification(*unique[i * 5:(i + 1) * 5]) for i in range(40)]  # each once
    posts += [notification(*rng.sample(unique, 5), external=f"http://am-{rng.randint(0, 1)}")
              for _ in range(960)]
    rng.shuffle(posts)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda b: post(operator, b), posts))
    assert {status for status, _ in answers} == {200}
    created = sum(a["outcomes"].get("created", 0) for _, a in answers)
    duplicate = sum(a["outcomes"].get("duplicate", 0) for _, a in answers)
    assert (created, duplicate) == (200, 4800)
    executions = alert_executions(kube)
    assert len(executions) == 200
    assert {e["spec"]["triggeredBy"]["alert"]["fingerprint"] for e in executions} == \
        {a["fingerprint"] for a in unique}


def test_flapping_alert_within_cooldown_starts_nothing(kube: Kube,
                                                       operator: OperatorProcess) -> None:
    memory_runbook(kube, "cooled", cooldown="1h")
    memory_runbook(kube, "uncooled")
    labels = {"namespace": kube.ns, "service": "api", "severity": "warning"}
    first = alert("HighMemoryUsage", "bb02", "2026-12-01T10:00:00Z", **labels)
    again = alert("HighMemoryUsage", "bb02", "2026-12-01T10:20:00Z", **labels)  # flapped
    assert post(operator, notification(first))[1]["outcomes"] == {"created": 2}
    assert post(operator, notification(again))[1]["outcomes"] == {"created": 1,
                                                                  "cooldown": 1}
    assert len(alert_executions(kube, "cooled")) == 1
    assert len(alert_executions(kube, "uncooled")) == 2


def test_bad_params_fail_that_execution_and_failing_cel_spares_the_others(
        kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("typed", {
        "params": [{"name": "service", "enum": ["api", "web"]}],
        "triggers": {"alerts": [{"match": ['alertname="Typed"'],
                                 "params": {"service": "alert.labels.service"}}]},
        "steps": [step("only")]})
    good = alert("Typed", "cc01", namespace=kube.ns, service="api")
    not_in_enum = alert("Typed", "cc02", namespace=kube.ns, service="db")
    no_label = alert("Typed", "cc03", namespace=kube.ns)  # CEL fails: no service
    status, answer = post(operator, notification(good, not_in_enum, no_label),
                          path=f"/{kube.ns}")
    assert status == 200
    assert answer["outcomes"] == {"created": 2, "invalid": 1}
    by_fp = {e["spec"]["triggeredBy"]["alert"]["fingerprint"]: e["metadata"]["name"]
             for e in alert_executions(kube)}
    assert set(by_fp) == {"cc01", "cc02"}
    failed = kube.wait_finished(by_fp["cc02"])
    assert (failed["status"]["phase"], failed["status"]["reason"]) == ("Failed",
                                                                       "InvalidParams")
    assert kube.jobs(by_fp["cc02"]) == []
    assert kube.wait_finished(by_fp["cc01"])["status"]["phase"] == "Succeeded"


def test_unparsable_matcher_makes_the_runbook_not_ready(kube: Kube,
                                                        operator: OperatorProcess) -> None:
    kube.runbook("broken", {"triggers": {"alerts": [{"match": ['alertname="Broken']}]},
                            "steps": [step("only")]})

    def condition() -> dict[str, Any] | None:
        for c in ((kube.get("runbooks", "broken") or {}).get("status") or {}).get(
                "conditions", []):
            if c["type"] == "Ready" and c["status"] == "False":
                return dict(c)
        return None
    ready = wait_for("Ready=False", condition, timeout=60)
    assert ready["reason"] == "InvalidTrigger"
    assert "triggers.alerts[0]" in ready["message"]
    assert "missing closing quote" in ready["message"]
    answer = post(operator, notification(alert("Broken", "dd01", namespace=kube.ns)),
                  path=f"/{kube.ns}")[1]
    assert answer["outcomes"] == {"unmatched": 1}
    assert alert_executions(kube) == []


def test_resolved_alert_is_recorded_when_not_cancelling(kube: Kube,
                                                        operator: OperatorProcess) -> None:
    memory_runbook(kube, on_resolved="Ignore", duration="10m")
    firing = alert("HighMemoryUsage", "ee01", namespace=kube.ns, service="api",
                   severity="warning")
    created_before = metric(operator, "created")
    assert post(operator, notification(firing))[1]["outcomes"] == {"created": 1}
    (execution,) = alert_executions(kube)
    name = execution["metadata"]["name"]
    kube.wait_phase(name, "Running")
    resolved = copy.deepcopy(firing)
    resolved.update(status="resolved", endsAt="2026-12-01T11:00:00Z")
    for _ in range(2):  # a repeated resolved notification is recorded once
        assert post(operator, notification(resolved))[0] == 200
    body = kube.execution(name)
    assert body["status"]["phase"] == "Running"
    events = [h for h in body["status"]["history"] if h["event"] == "AlertResolved"]
    assert len(events) == 1 and "HighMemoryUsage" in events[0]["message"]
    assert metric(operator, "created") == created_before + 1
    assert metric(operator, "resolved") >= 1


def test_hostile_label_values_arrive_as_data(kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("echo", {
        "params": [{"name": "service"}],
        "triggers": {"alerts": [{"match": ['alertname="Hostile"'],
                                 "params": {"service": "alert.labels.service"}}]},
        "steps": [step("only")]})
    hostile = 'api"; rm -rf / #\n$(reboot) `id` \u202e\u0000'
    status, answer = post(operator, notification(
        alert("Hostile", "ff01", namespace=kube.ns, service=hostile)), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 1})
    (execution,) = alert_executions(kube)
    assert execution["spec"]["params"] == {"service": hostile}
    assert execution["spec"]["triggeredBy"]["alert"]["labels"]["service"] == hostile
    body = kube.wait_finished(execution["metadata"]["name"])
    assert body["status"]["phase"] == "Succeeded"
    (job,) = kube.jobs(execution["metadata"]["name"])
    container = job.spec.template.spec.containers[0]
    assert container.command == ["sh", "-c", "true"]          # nothing substituted
    env = {e.name: e.value for e in container.env if e.value is not None}
    assert env["PARAM_SERVICE"] == hostile
