"""deploy/monitoring: the rules pass promtool, the two rule files agree, the dashboard
and the rules only chart metrics that metrics.py defines.

promtool comes from hack/build-promtool.sh (built once from the Go module proxy and
cached; the first build takes minutes). Set RBO_SKIP_PROMTOOL=1 to skip the promtool
tests explicitly; they are never skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_operator.observability.metrics import Metrics

from ..support import REPO

MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "rules.yaml"
RULE_TESTS = MONITORING / "rules.test.yaml"
PROMETHEUS_RULE = MONITORING / "prometheus-rules.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRIC = re.compile(r"\b(?:runbook_[a-z0-9_]+|up)\b(?!\s*\()")
ALERTS = {"RunbookCircuitOpen", "RunbookExecutionFailureRateHigh", "RunbookStepTransitionSlow",
          "RunbookExecutionsQueuedTooLong", "RunbookOperatorDown"}

skip_promtool = pytest.mark.skipif(
    bool(os.environ.get("RBO_SKIP_PROMTOOL")), reason="RBO_SKIP_PROMTOOL is set")


@cache
def promtool() -> str:
    """The path of the cached promtool, building it first when missing."""
    done = subprocess.run(["bash", str(REPO / "hack" / "build-promtool.sh")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"hack/build-promtool.sh failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip().splitlines()[-1]


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, check=False,
                          cwd=MONITORING, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@skip_promtool
def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 5 rules found" in run_promtool("check", "rules", RULES.name)


@skip_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", RULE_TESTS.name)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_prometheus_rule_carries_the_same_groups() -> None:
    rule = load_yaml(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == "runbook-operator"
    assert rule["spec"]["groups"] == load_yaml(RULES)["groups"], (
        "prometheus-rules.yaml is out of date: regenerate it from rules.yaml "
        "(the command is in its header)")


def test_every_alert_is_labelled_annotated_and_tested() -> None:
    rules = [r for g in load_yaml(RULES)["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys()
    tested = load_yaml(RULE_TESTS)["tests"]
    for alert in ALERTS:
        cases = [c for t in tested for c in t.get("alert_rule_test", [])
                 if c["alertname"] == alert]
        assert any(c.get("exp_alerts") for c in cases), f"{alert} is never shown firing"
        assert any(not c.get("exp_alerts") for c in cases), f"{alert} is never shown quiet"


@cache
def defined_series() -> frozenset[str]:
    """Every series name the operator's registry can expose."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return frozenset(names)


def referenced(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label values and strings excluded)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(METRIC.findall(without_strings))


def test_rules_reference_only_defined_metrics() -> None:
    for group in load_yaml(RULES)["groups"]:
        for rule in group["rules"]:
            unknown = referenced(rule["expr"]) - defined_series() - {"up"}
            assert not unknown, (rule["alert"], unknown)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_dashboard_is_valid_and_charts_only_defined_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
            assert panel["targets"], panel["title"]
    exprs = dashboard_exprs(dashboard)
    used: set[str] = set()
    for expr in exprs:
        names = referenced(expr)
        assert names, expr
        assert names <= defined_series(), (expr, names - defined_series())
        used |= names
    for needed in ("runbook_executions_total", "runbook_executions_queued",
                   "runbook_executions_active", "runbook_bulkhead_available",
                   "runbook_circuit_state", "runbook_step_duration_seconds_bucket",
                   "runbook_step_transition_latency_seconds_bucket"):
        assert needed in used, needed
    joined = "\n".join(exprs)
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(runbook_step_duration_seconds_bucket" \
            in joined
        assert f"histogram_quantile({q}, sum by (le) " \
            "(rate(runbook_step_transition_latency_seconds_bucket" in joined
    assert 'count(runbook_circuit_state{namespace=~"$namespace",state="Open"} == 1)' in joined
