"""Self-test of tests/integration/alerting.py: the real chain exporter -> Prometheus
(the shipped deploy/alerting rules, every ``for:`` 0s) -> Alertmanager -> a webhook
sink that checks the bearer token. No Kubernetes control plane is involved.

Cases:
- HighMemoryUsage fires from the exporter's values: one version "4" notification
  with the exporter's labels, ``service`` taken from the container, the rule's
  annotations; when the value drops, a ``resolved`` notification of the same alert;
- an unpeered HA pair: both members notify, with the same groupKey, fingerprint
  and startsAt, told apart only by externalURL;
- a peered pair forms a two-member cluster and delivers the alert;
- a short repeat_interval resends an unchanged firing group (the duplicates the
  receiver must recognise);
- alerts posted straight to Alertmanager's API reach the sink (no Prometheus);
- a wrong bearer token is refused by the sink (401), so the other cases' deliveries
  do prove Alertmanager sent the token file's content.

The captured bodies are kept in tests/unit/triggers/fixtures/ for the webhook
parser's unit tests. Each run checks that the stored fixtures still have the shape
of what Alertmanager sends now; RBO_CAPTURE_ALERT_FIXTURES=1 rewrites them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alerting import (
    REPO_ROOT,
    Alertmanager,
    Exporter,
    Prometheus,
    Route,
    WebhookSink,
    alerting_bin,
    alertmanager_pair,
    poll,
    running,
    zero_time,
)

FIXTURES = REPO_ROOT / "tests" / "unit" / "triggers" / "fixtures"
WORKING_SET = "container_memory_working_set_bytes"
LIMIT = "container_spec_memory_limit_bytes"
POD = {"namespace": "production", "pod": "api-7d9f8-x2k4q", "container": "api"}
ALERT_LABELS = {**POD, "alertname": "HighMemoryUsage", "severity": "critical", "service": "api"}
WAIT = 90.0  # seconds; a notification normally takes 2 to 4


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return alerting_bin()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(secrets.token_hex(16) + "\n")  # Alertmanager trims the newline
    return path


def token(path: Path) -> str:
    return path.read_text().strip()


@contextlib.contextmanager
def logs_on_failure(*processes: Prometheus | Alertmanager) -> Iterator[None]:
    """On failure, print each process's log tail (pytest shows it with the failure)."""
    try:
        yield
    except BaseException:
        for p in processes:
            print(f"--- {p.log_path}\n{p.tail(40)}")
        raise


def high_memory(status: str, external_url: str | None = None) -> Callable[[dict[str, Any]], bool]:
    def match(body: dict[str, Any]) -> bool:
        return (body["status"] == status
                and body["groupLabels"].get("alertname") == "HighMemoryUsage"
                and (external_url is None or body["externalURL"] == external_url))
    return match


def shape(value: Any) -> Any:
    """Keys and value types, recursively: what a parser relies on, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def keep_fixture(name: str, body: dict[str, Any]) -> None:
    """Write ``body`` as fixture ``name`` when capturing; else check the stored one's shape."""
    path = FIXTURES / name
    if os.environ.get("RBO_CAPTURE_ALERT_FIXTURES"):
        FIXTURES.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return
    assert path.is_file(), f"{path} is missing: run with RBO_CAPTURE_ALERT_FIXTURES=1"
    assert shape(json.loads(path.read_text())) == shape(body), (
        f"{path.name} no longer has the shape of what Alertmanager sends: recapture it "
        "with RBO_CAPTURE_ALERT_FIXTURES=1")


def test_high_memory_fires_then_resolves(bin_dir: Path, token_file: Path,
                                         tmp_path: Path) -> None:
    with Exporter() as exporter, WebhookSink(token(token_file)) as sink:
        am = Alertmanager(bin_dir, tmp_path / "am", webhook_url=sink.url, token_file=token_file)
        prom = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter,
                          alertmanagers=[am.address])
        with running(am, prom), logs_on_failure(am, prom):
            exporter.set(LIMIT, POD, 1000)
            exporter.set(WORKING_SET, POD, 950)
            (firing,) = sink.wait_for(high_memory("firing"), WAIT)

            assert firing["version"] == "4"
            assert firing["receiver"] == "runbook-operator"
            assert firing["groupLabels"] == {"alertname": "HighMemoryUsage", "service": "api"}
            assert firing["commonLabels"] == ALERT_LABELS
            assert firing["externalURL"] == am.url
            assert firing["truncatedAlerts"] == 0
            (alert,) = firing["alerts"]
            assert alert["status"] == "firing"
            assert alert["labels"] == ALERT_LABELS
            assert alert["annotations"]["runbook"] == "high-memory-usage"
            assert float(alert["annotations"]["value"]) == pytest.approx(0.95)
            assert alert["annotations"]["summary"] == \
                "production/api-7d9f8-x2k4q uses 95% of its memory limit"
            assert zero_time(alert["endsAt"])
            assert alert["fingerprint"]
            assert alert["generatorURL"].startswith(prom.url)
            assert am.alerts(active="true")[0]["fingerprint"] == alert["fingerprint"]

            exporter.set(WORKING_SET, POD, 500)
            (resolved,) = sink.wait_for(high_memory("resolved"), WAIT)

            assert resolved["groupKey"] == firing["groupKey"]
            (gone,) = resolved["alerts"]
            assert gone["status"] == "resolved"
            assert gone["fingerprint"] == alert["fingerprint"]
            assert gone["startsAt"] == alert["startsAt"]
            assert not zero_time(gone["endsAt"])
            assert gone["endsAt"] >= gone["startsAt"]
            assert sink.rejected == 0
    keep_fixture("alertmanager-firing.json", firing)
    keep_fixture("alertmanager-resolved.json", resolved)


def test_unpeered_pair_both_notify_the_same_alert(bin_dir: Path, token_file: Path,
                                                  tmp_path: Path) -> None:
    with Exporter() as exporter, WebhookSink(token(token_file)) as sink:
        am0, am1 = alertmanager_pair(bin_dir, tmp_path, webhook_url=sink.url,
                                     token_file=token_file, peered=False)
        prom = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter,
                          alertmanagers=[am0.address, am1.address])
        with running(am0, am1, prom), logs_on_failure(am0, am1, prom):
            exporter.set(LIMIT, POD, 1000)
            exporter.set(WORKING_SET, POD, 950)
            (first,) = sink.wait_for(high_memory("firing", am0.url), WAIT)
            (second,) = sink.wait_for(high_memory("firing", am1.url), WAIT)
            assert am0.peer_names() == set()  # gossip off: neither knows the other

    assert first["externalURL"] != second["externalURL"]
    assert first["groupKey"] == second["groupKey"]
    ((a,), (b,)) = first["alerts"], second["alerts"]
    assert a["fingerprint"] == b["fingerprint"]
    assert a["startsAt"] == b["startsAt"]
    assert a["labels"] == b["labels"] == ALERT_LABELS
    keep_fixture("alertmanager-unpeered-am0.json", first)
    keep_fixture("alertmanager-unpeered-am1.json", second)


def test_peered_pair_forms_a_cluster_and_delivers(bin_dir: Path, token_file: Path,
                                                  tmp_path: Path) -> None:
    with Exporter() as exporter, WebhookSink(token(token_file)) as sink:
        am0, am1 = alertmanager_pair(bin_dir, tmp_path, webhook_url=sink.url,
                                     token_file=token_file, peered=True)
        prom = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter,
                          alertmanagers=[am0.address, am1.address])
        with running(am0, am1, prom), logs_on_failure(am0, am1, prom):
            poll(lambda: am0.peer_names() == am1.peer_names() == {"am0", "am1"}, WAIT,
                 "both members to see a two-member cluster")
            exporter.set(LIMIT, POD, 1000)
            exporter.set(WORKING_SET, POD, 950)
            (body,) = sink.wait_for(high_memory("firing"), WAIT)
            assert body["alerts"][0]["labels"] == ALERT_LABELS


def test_short_repeat_interval_resends_the_unchanged_alert(bin_dir: Path, token_file: Path,
                                                           tmp_path: Path) -> None:
    with WebhookSink(token(token_file)) as sink:
        am = Alertmanager(bin_dir, tmp_path / "am", webhook_url=sink.url, token_file=token_file,
                          route=Route(repeat_interval="2s"))
        with am, logs_on_failure(am):
            alert = {"labels": {"alertname": "HighErrorRate", "service": "api",
                                "severity": "critical", "namespace": "production"},
                     "annotations": {"runbook": "incident-diagnostics", "value": "0.1"}}
            am.post_alerts([alert])
            first, again = sink.wait_for(lambda b: b["status"] == "firing", WAIT, count=2)

    assert first["groupKey"] == again["groupKey"]
    assert first["alerts"] == again["alerts"]  # same fingerprint, startsAt, everything
    assert first["alerts"][0]["labels"] == alert["labels"]
    assert first["alerts"][0]["generatorURL"] == ""


def test_alerts_posted_to_alertmanager_reach_the_sink(bin_dir: Path, token_file: Path,
                                                      tmp_path: Path) -> None:
    with WebhookSink(token(token_file)) as sink:
        am = Alertmanager(bin_dir, tmp_path / "am", webhook_url=sink.url, token_file=token_file,
                          route=Route(group_by=("alertname",)))
        with am, logs_on_failure(am):
            am.post_alerts([
                {"labels": {"alertname": "AIResponseSlow", "service": s, "provider": "openai",
                            "severity": "warning"},
                 "annotations": {"runbook": "ai-service-recovery"}}
                for s in ("assistant", "search")])
            (body,) = sink.wait_for(lambda b: len(b["alerts"]) == 2, WAIT)
    # Grouped by alertname only: one notification carries both services' alerts.
    assert body["groupLabels"] == {"alertname": "AIResponseSlow"}
    assert sorted(a["labels"]["service"] for a in body["alerts"]) == ["assistant", "search"]
    assert body["commonLabels"] == {"alertname": "AIResponseSlow", "provider": "openai",
                                    "severity": "warning"}


def test_sink_refuses_a_wrong_token(bin_dir: Path, token_file: Path, tmp_path: Path) -> None:
    with WebhookSink("not-" + token(token_file)) as sink:
        am = Alertmanager(bin_dir, tmp_path / "am", webhook_url=sink.url, token_file=token_file)
        with am, logs_on_failure(am):
            am.post_alerts([{"labels": {"alertname": "HighErrorRate", "service": "api"}}])
            poll(lambda: sink.rejected, WAIT, "a rejected notification")
    assert sink.bodies() == []
