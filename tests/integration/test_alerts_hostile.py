"""Alerts against the real API server: careless users, neighbours and big posts (issue 9 audit).

Cases:
- a neighbour creates an execution with the name the receiver would derive for an
  occurrence (a manual run of the same runbook): the alert's delivery is counted
  ``rejected``, not ``duplicate`` (it started nothing, and says so); the alert's
  resolution (onResolved: Cancel) leaves the neighbour's run alone;
- a manual run carrying the alert's fingerprint label puts no alert in cooldown;
- five flaps of one alert in one post, then three more one post at a time, within
  cooldown: one run (the cooldown read came from the watch cache and missed the run
  just created: three of five started);
- a resolved alert (onResolved: Cancel) cancels its running execution with reason
  AlertResolved, and the Runbook's finally steps run;
- a flapping alert (twenty new startsAt while the first run holds) against
  ``concurrency: Forbid``: twenty executions recorded, each ConcurrencyForbidden
  without a Job, the remediation runs once;
- the same alert twice in one post (another startsAt spelling, upper-case
  fingerprint): one created, one duplicate, one execution;
- Runbooks with the same trigger in two namespaces: ``/alerts/<ns>`` starts only the
  one in ``<ns>``; ``/alerts`` starts each in its own namespace;
- a trigger removed while 60 posts arrive from 6 clients: every post is answered 200,
  the executions are exactly those the answers say were created, and once the
  removal is seen, alerts are unmatched;
- a 900 KB notification (under the 1 MiB cap) through the real operator is read
  whole and starts its runbook (it was cut and answered 400 before);
- 600 KB of labels that Go's JSON encoder writes six times larger (``<``): the
  execution is created with the labels recorded cut short (it was a 500 from etcd's
  limit, answered 503, retried forever), and the next alert of the post starts too;
- every outcome counted on /metrics exactly as the answers report it, the request
  histogram by code, and one JSON log line per decision with the fingerprint;
- with tracing on, the notification's span is the parent of the execution's root
  span (same trace) and names the execution it created.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import ALERTS_TOKEN, OtlpReceiver, assert_json_logs
from kube import Kube, step, wait_for
from kubernetes import client
from otlp_receiver import ReceivedSpan
from test_alerts import alert, alert_executions, metric, notification, post

from operator_process import OperatorProcess
from runbook_operator.engine.alerts import occurrence_name, rfc3339_ns

pytestmark = pytest.mark.integration

STARTS = "2026-12-01T10:00:00Z"


def holding_runbook(kube: Kube, name: str, alertname: str, **trigger: Any) -> None:
    """A runbook an alert named ``alertname`` starts; its one step runs 10 minutes."""
    kube.ready_runbook(name, {
        "triggers": {"alerts": [{"match": [f'alertname="{alertname}"'], **trigger}]},
        "steps": [step("hold", duration="10m")]})


def name_of(runbook: str, fingerprint: str, starts_at: str = STARTS) -> str:
    starts_ns = rfc3339_ns(starts_at)
    assert starts_ns is not None
    return occurrence_name(runbook, fingerprint, starts_ns)


def resolved(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "status": "resolved", "endsAt": "2026-12-01T11:00:00Z"}


# -- neighbours ---------------------------------------------------------------------------


def test_a_planted_execution_is_not_counted_as_the_alerts_run_nor_cancelled(
        kube: Kube, operator: OperatorProcess) -> None:
    holding_runbook(kube, "squatted", "Squat", onResolved="Cancel")
    planted = name_of("squatted", "5a01")
    kube.execute(planted, "squatted")            # a manual run that took the name
    kube.wait_phase(planted, "Running")
    rejected_before = metric(operator, "rejected")
    firing = alert("Squat", "5a01", STARTS)
    status, answer = post(operator, notification(firing), path=f"/{kube.ns}")
    assert (status, answer["outcomes"], answer["created"]) == (200, {"rejected": 1}, [])
    assert metric(operator, "rejected") == rejected_before + 1
    status, answer = post(operator, notification(resolved(firing)), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"rejected": 1})
    body = kube.execution(planted)
    assert body["status"]["phase"] == "Running"
    assert "cancelRequested" not in body["status"]
    assert not [h for h in body["status"].get("history", []) if h["event"] == "AlertResolved"]
    assert "triggeredBy" not in body["spec"]
    assert alert_executions(kube) == []


def test_a_manual_run_with_the_fingerprint_label_puts_no_alert_in_cooldown(
        kube: Kube, operator: OperatorProcess) -> None:
    holding_runbook(kube, "cooling", "Cool", cooldown="1h")
    kube.create("runbookexecutions", {
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
        "metadata": {"name": "manual-1", "labels": {"runbooks.dev/alert-fingerprint": "c001"}},
        "spec": {"runbookRef": {"name": "cooling"}}})
    status, answer = post(operator, notification(alert("Cool", "c001", STARTS)),
                          path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 1})
    # The alert's own run does count: a flap within the hour starts nothing.
    status, answer = post(operator, notification(alert("Cool", "c001", "2026-12-01T10:05:00Z")),
                          path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"cooldown": 1})


def test_rapid_flaps_within_cooldown_start_one_run(kube: Kube,
                                                   operator: OperatorProcess) -> None:
    # Read from the API server's watch cache, the run created for the first flap was
    # not yet listed when the next was decided: three of five flaps started a run.
    holding_runbook(kube, "coolbatch", "CoolBatch", cooldown="1h")
    flaps = [alert("CoolBatch", "cb01", f"2026-12-01T10:{m:02d}:00Z") for m in range(5)]
    status, answer = post(operator, notification(*flaps), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 1, "cooldown": 4})
    for m in range(5, 8):  # and one post after another
        status, answer = post(operator, notification(
            alert("CoolBatch", "cb01", f"2026-12-01T10:{m:02d}:00Z")), path=f"/{kube.ns}")
        assert (status, answer["outcomes"]) == (200, {"cooldown": 1})
    assert len(alert_executions(kube)) == 1


def test_the_same_alert_twice_in_one_post_is_one_execution(kube: Kube,
                                                           operator: OperatorProcess) -> None:
    holding_runbook(kube, "twins", "Twin")
    one = alert("Twin", "7e01", "2026-12-01T10:00:00.5Z")
    twin = alert("Twin", "7E01", "2026-12-01T11:00:00.500000000+01:00")
    status, answer = post(operator, notification(one, twin), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 1, "duplicate": 1})
    (execution,) = alert_executions(kube)
    assert execution["metadata"]["name"] == name_of("twins", "7e01", "2026-12-01T10:00:00.5Z")


@pytest.fixture
def other_namespace(kube: Kube) -> Iterator[Kube]:
    name = f"rbo-other-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield Kube(kube.api, name)
    finally:
        kube.core.delete_namespace(name)


def test_runbooks_start_only_in_their_own_namespace(kube: Kube, other_namespace: Kube,
                                                    operator: OperatorProcess) -> None:
    spec = {"triggers": {"alerts": [{"match": ['alertname="Spread"']}]},
            "steps": [{"name": "hold", "type": "approval"}]}
    kube.ready_runbook("spread", spec)
    other_namespace.ready_runbook("spread", spec)
    status, answer = post(operator, notification(alert("Spread", "5b01")), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 1})
    assert len(alert_executions(kube)) == 1
    assert alert_executions(other_namespace) == []
    status, answer = post(operator, notification(alert("Spread", "5b02")))
    assert (status, answer["outcomes"]) == (200, {"created": 2})
    for where in (kube, other_namespace):
        mine = [e for e in alert_executions(where)
                if e["spec"]["triggeredBy"]["alert"]["fingerprint"] == "5b02"]
        assert [e["metadata"]["namespace"] for e in mine] == [where.ns]


# -- resolution and storms -----------------------------------------------------------------


def test_a_resolved_alert_cancels_and_the_finally_steps_run(kube: Kube,
                                                          operator: OperatorProcess) -> None:
    kube.ready_runbook("remedy", {
        "triggers": {"alerts": [{"match": ['alertname="Remedy"'], "onResolved": "Cancel"}]},
        "steps": [step("long", duration="10m")], "finally": [step("report")]})
    firing = alert("Remedy", "2e01", STARTS)
    (name,) = post(operator, notification(firing), path=f"/{kube.ns}")[1]["created"]
    wait_for("the step to run", lambda: ((kube.execution(name).get("status") or {})
                                         .get("steps", {}).get("long", {}).get("phase")
                                         == "Running"))
    status, answer = post(operator, notification(resolved(firing)), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"cancelled": 1})
    body = kube.wait_phase(name, "Cancelled", timeout=60)
    assert body["status"]["reason"] == "AlertResolved"
    assert body["status"]["steps"]["long"]["reason"] == "Cancelled"
    assert body["status"]["steps"]["report"]["phase"] == "Succeeded"


def test_a_flapping_alert_storm_runs_the_remediation_once(kube: Kube,
                                                          operator: OperatorProcess) -> None:
    kube.ready_runbook("stormy", {
        "concurrency": {"policy": "Forbid"},
        "triggers": {"alerts": [{"match": ['alertname="Storm"']}]},
        "steps": [step("long", duration="10m")]})
    (first,) = post(operator, notification(alert("Storm", "57a1", STARTS)),
                    path=f"/{kube.ns}")[1]["created"]
    kube.wait_phase(first, "Running")
    # Twenty flaps: resolved and firing again, each with a new startsAt.
    flaps = [alert("Storm", "57a1", f"2026-12-01T10:{minute:02d}:00Z")
             for minute in range(1, 21)]
    status, answer = post(operator, notification(*flaps), path=f"/{kube.ns}")
    assert (status, answer["outcomes"]) == (200, {"created": 20})
    for name in answer["created"]:
        body = kube.wait_finished(name)
        assert (body["status"]["phase"], body["status"]["reason"]) == (
            "Failed", "ConcurrencyForbidden")
        assert kube.jobs(name) == []
    assert kube.execution(first)["status"]["phase"] == "Running"
    assert len(kube.jobs(first)) == 1


# -- careless users -----------------------------------------------------------------------


def test_a_trigger_removed_while_alerts_arrive(kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("removed", {
        "triggers": {"alerts": [{"match": ['alertname="Removed"']}]},
        "steps": [{"name": "hold", "type": "approval"}]})
    posts = [notification(alert("Removed", f"{i + 1:04x}")) for i in range(60)]

    def deliver(i: int) -> tuple[int, dict[str, Any]]:
        if i == 20:
            kube.patch("runbooks", "removed", {"spec": {"triggers": None}})
        return post(operator, posts[i], path=f"/{kube.ns}")
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(deliver, range(len(posts))))
    assert {status for status, _ in answers} == {200}
    created = {name for _, a in answers for name in a["created"]}
    assert sum(sum(a["outcomes"].values()) for _, a in answers) == len(posts)
    assert {e["metadata"]["name"] for e in alert_executions(kube)} == created

    def unmatched() -> bool:
        # Once the operator has seen the change, nothing starts it.
        answer = post(operator, notification(alert("Removed", "ffff")), path=f"/{kube.ns}")[1]
        created.update(answer["created"])
        return bool(answer["outcomes"] == {"unmatched": 1})
    wait_for("the removed trigger unmatched", unmatched, timeout=60)
    assert {e["metadata"]["name"] for e in alert_executions(kube)} == created
    assert post(operator, notification(alert("Removed", "fffe")),
                path=f"/{kube.ns}")[1]["outcomes"] == {"unmatched": 1}


def test_a_notification_near_the_body_cap_is_read_whole(kube: Kube,
                                                        operator: OperatorProcess) -> None:
    holding_runbook(kube, "big", "Big")
    body = notification(alert("Big", "b16b", STARTS))
    body["commonAnnotations"] = {f"a{i}": "x" * 15_000 for i in range(60)}  # ~900 KB
    assert 800_000 < len(json.dumps(body)) < 1 << 20
    status, answer = post(operator, body, path=f"/{kube.ns}")
    assert (status, answer.get("outcomes")) == (200, {"created": 1}), answer


def test_labels_that_go_writes_six_times_larger_still_start_the_runbook(
        kube: Kube, operator: OperatorProcess) -> None:
    # ~600 KB of "<" on the wire: 3.6 MB as the API server stores it (Go escapes it as
    # \u003c), over etcd's limit: the create was a 500, answered 503 to Alertmanager,
    # retried forever, and the alerts after it in the post never started.
    kube.ready_runbook("fat", {
        "params": [{"name": "service"}],
        "triggers": {"alerts": [{"match": ['alertname="Fat"'],
                                 "params": {"service": "alert.labels.service"}}]},
        "steps": [{"name": "hold", "type": "approval"}]})
    fat = alert("Fat", "fa01", STARTS, service="api", severity="critical",
                **{f"l{i:02d}": "<" * 16_000 for i in range(38)})
    after = alert("Fat", "fa02", STARTS, service="web")
    status, answer = post(operator, notification(fat, after), path=f"/{kube.ns}",
                          retry_503_for=5)
    assert (status, answer.get("outcomes")) == (200, {"created": 2}), answer
    by_fp = {e["spec"]["triggeredBy"]["alert"]["fingerprint"]: e for e in alert_executions(kube)}
    recorded = by_fp["fa01"]["spec"]["triggeredBy"]["alert"]["labels"]
    assert (recorded["alertname"], recorded["severity"]) == ("Fat", "critical")
    assert by_fp["fa01"]["spec"]["params"] == {"service": "api"}
    assert by_fp["fa02"]["spec"]["params"] == {"service": "web"}


# -- observability ------------------------------------------------------------------------


def raw_post(operator: OperatorProcess, data: bytes, token: str = ALERTS_TOKEN,
             content_type: str = "application/json") -> int:
    request = urllib.request.Request(operator.alerts_url, data=data, method="POST", headers={
        "Content-Type": content_type, "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def histogram_count(operator: OperatorProcess, code: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    prefix = f'runbook_alert_request_duration_seconds_count{{code="{code}"}} '
    return sum(float(line[len(prefix):]) for line in text.splitlines()
               if line.startswith(prefix))


OUTCOMES = ("created", "duplicate", "unmatched", "cooldown", "rejected", "invalid",
            "unauthorized", "cancelled", "resolved")


def test_every_outcome_is_counted_and_logged_with_the_fingerprint(
        kube: Kube, operator: OperatorProcess) -> None:
    kube.ready_runbook("counted", {
        "params": [{"name": "service"}],
        "triggers": {"alerts": [{"match": ['alertname="Counted"'], "cooldown": "1h",
                                 "onResolved": "Cancel",
                                 "params": {"service": "alert.labels.service"}}]},
        "steps": [step("hold", duration="10m")]})
    before = {o: metric(operator, o) for o in OUTCOMES}
    codes_before = {c: histogram_count(operator, c) for c in (200, 401, 415, 422)}
    first = alert("Counted", "c0a1", STARTS, service="api")
    flapped = alert("Counted", "c0a1", "2026-12-01T10:10:00Z", service="api")
    no_service = alert("Counted", "c0a2", STARTS)                 # CEL fails: invalid
    nobody = alert("NobodyWantsThis", "c0a3", STARTS)
    tallies: dict[str, int] = {}
    for body in (notification(first, first, no_service, nobody), notification(flapped)):
        status, answer = post(operator, body, path=f"/{kube.ns}")
        assert status == 200
        for outcome, n in answer["outcomes"].items():
            tallies[outcome] = tallies.get(outcome, 0) + n
    (execution,) = alert_executions(kube)
    kube.wait_phase(execution["metadata"]["name"], "Running")
    status, answer = post(operator, notification(resolved(first)), path=f"/{kube.ns}")
    tallies["cancelled"] = answer["outcomes"].get("cancelled", 0)
    assert tallies == {"created": 1, "duplicate": 1, "invalid": 1, "unmatched": 1,
                       "cooldown": 1, "cancelled": 1}
    assert raw_post(operator, b"{}", token="wrong") == 401
    assert raw_post(operator, b"{}", content_type="text/plain") == 415
    assert raw_post(operator, json.dumps({"version": "3"}).encode()) == 422
    expected = {**tallies, "unauthorized": 1, "rejected": 2, "resolved": 0}
    assert {o: metric(operator, o) - before[o] for o in OUTCOMES} == expected
    assert {c: histogram_count(operator, c) - codes_before[c] for c in codes_before} == {
        200: 3, 401: 1, 415: 1, 422: 1}
    lines = [json.loads(line) for line in operator.log_path.read_text().splitlines()
             if '"alert decision"' in line]
    mine = [(r["outcome"], r["fingerprint"]) for r in lines
            if r.get("fingerprint", "").startswith("c0a")]
    assert sorted(mine) == sorted([
        ("created", "c0a1"), ("duplicate", "c0a1"), ("invalid", "c0a2"),
        ("unmatched", "c0a3"), ("cooldown", "c0a1"), ("cancelled", "c0a1")])


def test_the_notification_span_is_the_parent_of_the_executions_root(
        kube: Kube, operator: OperatorProcess, tmp_path: Path) -> None:
    kube.ready_runbook("spanned", {
        "triggers": {"alerts": [{"match": ['alertname="Spanned"']}]},
        "steps": [step("quick")]})
    with OtlpReceiver() as receiver:
        traced = OperatorProcess(operator.kubeconfig, tmp_path / "traced",
                                 alerts_token=ALERTS_TOKEN, env={
                                     "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                     "OTEL_SERVICE_NAME": "runbook-operator",
                                     "OTEL_BSP_SCHEDULE_DELAY": "200"})
        operator.stop()  # one operator at a time
        try:
            traced.start()
            status, answer = post(traced, notification(alert("Spanned", "5fa1", STARTS)),
                                  path=f"/{kube.ns}")
            assert (status, answer["outcomes"]) == (200, {"created": 1})
            (name,) = answer["created"]
            assert kube.wait_finished(name)["status"]["phase"] == "Succeeded"

            def exported() -> tuple[ReceivedSpan, ReceivedSpan] | None:
                notes = [s for s in receiver.spans if s.name == "alertmanager notification"]
                roots = [s for s in receiver.spans
                         if s.attributes.get("runbook.execution.name") == name and
                         s.name.startswith("execution")]
                return (notes[0], roots[0]) if len(notes) == 1 and roots else None
            notified, root = wait_for("the notification's and the execution's spans",
                                      exported, timeout=60)
        finally:
            traced.stop()
            operator.start()
    assert root.trace_id == notified.trace_id
    assert root.parent_span_id == notified.span_id
    assert notified.attributes["runbook.executions"] == [name]
    annotation = kube.execution(name)["metadata"]["annotations"]["runbooks.dev/traceparent"]
    assert annotation.split("-")[1:3] == [notified.trace_id, notified.span_id]
    assert_json_logs(tmp_path / "traced")
