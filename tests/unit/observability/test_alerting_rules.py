"""deploy/alerting: the seed alert rules pass `promtool check rules` and their
`promtool test rules` tests, every alert carries the labels and annotations the
webhook receiver reads and names an example runbook that exists, and
alertmanager.yaml passes `amtool check-config` and routes those alerts to the
`runbook-operator` webhook as documented.

promtool comes from hack/build-promtool.sh, amtool from hack/build-alerting.sh (both
built once from the Go module proxy and cached; the first build takes minutes). Set
RBO_SKIP_PROMTOOL=1 to skip the tests that run them explicitly; they are never
skipped silently.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support import EXAMPLES, REPO
from .test_rules import promtool, skip_promtool

ALERTING = REPO / "deploy" / "alerting"
RULES = ALERTING / "prometheus-rules.yaml"
RULE_TESTS = ALERTING / "prometheus-rules.test.yaml"
ALERTMANAGER = ALERTING / "alertmanager.yaml"
RUNBOOKS = {"HighErrorRate": "incident-diagnostics", "AIResponseSlow": "ai-service-recovery",
            "HighMemoryUsage": "high-memory-usage",
            "DatabaseSlowQueries": "database-performance"}
WEBHOOK_URL = "http://runbook-operator-alerts.runbook-system.svc:9095/alerts"
TOKEN_FILE = "/etc/alertmanager/secrets/runbook-operator/token"


@cache
def alerting_bin() -> Path:
    """The cached directory of prometheus, alertmanager and amtool, built when missing."""
    done = subprocess.run(["bash", str(REPO / "hack" / "build-alerting.sh")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"hack/build-alerting.sh failed:\n{done.stderr[-4000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          check=False, cwd=ALERTING, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]


@skip_promtool
def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 4 rules found" in run(promtool(), "check", "rules", RULES.name)


@skip_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in run(promtool(), "test", "rules", RULE_TESTS.name)


def test_every_alert_names_its_runbook_and_carries_what_the_receiver_reads() -> None:
    assert {r["alert"]: r["annotations"]["runbook"] for r in rules()} == RUNBOOKS
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "value", "runbook"} <= rule["annotations"].keys()
        assert rule["annotations"]["value"] == "{{ $value }}", name
        # `service` is not a static label: it comes from the expression's result.
        assert "service" in rule["expr"], name
        assert rule.get("for"), f"{name} has no for: a single bad scrape would start a runbook"
        assert (EXAMPLES / f"{rule['annotations']['runbook']}.yaml").is_file(), name


def test_every_alert_is_shown_firing_and_quiet() -> None:
    cases = [c for t in load_yaml(RULE_TESTS)["tests"] for c in t.get("alert_rule_test", [])]
    for alert in RUNBOOKS:
        mine = [c for c in cases if c["alertname"] == alert]
        firing = [a for c in mine for a in c.get("exp_alerts") or []]
        assert firing, f"{alert} is never shown firing"
        assert any(not c.get("exp_alerts") for c in mine), f"{alert} is never shown quiet"
        for expected in firing:
            assert "service" in expected["exp_labels"], alert
            assert expected["exp_annotations"]["runbook"] == RUNBOOKS[alert]


@skip_promtool
def test_amtool_checks_the_alertmanager_config() -> None:
    output = run(alerting_bin() / "amtool", "check-config", ALERTMANAGER.name)
    assert "SUCCESS" in output
    assert "2 receivers" in output, output


def test_the_seed_alerts_route_to_the_operator_webhook() -> None:
    config = load_yaml(ALERTMANAGER)
    (receiver,) = [r for r in config["receivers"] if r["name"] == "runbook-operator"]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"] == WEBHOOK_URL
    assert webhook["send_resolved"] is True
    assert webhook["max_alerts"] == 0
    assert webhook["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": TOKEN_FILE}}
    (route,) = [r for r in config["route"]["routes"] if r["receiver"] == "runbook-operator"]
    assert route["continue"] is True
    assert config["route"]["group_by"] == ["alertname", "service"]


@skip_promtool
@pytest.mark.parametrize("alert", sorted(RUNBOOKS))
def test_amtool_routes_each_seed_alert_to_the_operator(alert: str) -> None:
    output = run(alerting_bin() / "amtool", "config", "routes", "test",
                 f"--config.file={ALERTMANAGER.name}", f"alertname={alert}", "service=api")
    assert output.split() == ["runbook-operator"], output


@skip_promtool
def test_amtool_leaves_other_alerts_to_the_default_receiver() -> None:
    output = run(alerting_bin() / "amtool", "config", "routes", "test",
                 f"--config.file={ALERTMANAGER.name}", "alertname=Watchdog")
    assert output.split() == ["default"], output
