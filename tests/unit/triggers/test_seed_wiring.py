"""The shipped alerts reach the shipped runbooks (deploy/alerting, examples/).

Cases: every rule in deploy/alerting/prometheus-rules.yaml names, in its
``runbook`` annotation, an example Runbook with an alert trigger; an alert as that
rule would raise it (its labels, plus the labels its expression keeps) starts that
runbook, with parameters the runbook accepts; a resolved one resolves it; an alert
of another name starts nothing there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.alerts import (
    Alert,
    Notification,
    Resolve,
    Start,
    compile_triggers,
    decide,
)
from runbook_operator.engine.params import resolve_params

ROOT = Path(__file__).resolve().parents[3]
RULES = yaml.safe_load((ROOT / "deploy/alerting/prometheus-rules.yaml").read_text())
ALERT_RULES = [r for g in RULES["groups"] for r in g["rules"] if "alert" in r]
KEPT_LABELS = {"namespace": "shop", "service": "checkout", "provider": "openai",
               "pod": "checkout-7d9f", "container": "checkout"}


def example(name: str) -> dict[str, Any]:
    path = ROOT / "examples" / f"{name}.yaml"
    assert path.exists(), f"rule names runbook {name!r}, but examples/{name}.yaml is missing"
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "Runbook":
            return dict(doc)
    raise AssertionError(f"no Runbook in {path}")


def notification(rule: dict[str, Any], status: str = "firing") -> Notification:
    labels = {**KEPT_LABELS, **rule.get("labels", {}), "alertname": rule["alert"]}
    alert = Alert(status=status, labels=labels,  # type: ignore[arg-type]
                  annotations={"value": "0.97", "summary": "s"},
                  starts_at="2026-12-01T00:00:00Z", starts_ns=1_796_083_200_000_000_000,
                  ends_at="", generator_url="", fingerprint="0123456789abcdef")
    return Notification(receiver="runbook-operator", status=status,  # type: ignore[arg-type]
                        group_key="{}", group_labels={"alertname": rule["alert"]},
                        common_labels=labels, common_annotations={}, external_url="",
                        truncated_alerts=0, alerts=(alert,))


@pytest.mark.parametrize("rule", ALERT_RULES, ids=[r["alert"] for r in ALERT_RULES])
def test_each_seed_alert_starts_its_runbook(rule: dict[str, Any]) -> None:
    body = example(rule["annotations"]["runbook"])
    spec = RunbookSpec.model_validate(body["spec"])
    assert spec.triggers is not None and spec.triggers.alerts, "the runbook has no trigger"
    triggers, problems = compile_triggers("runbooks", body["metadata"]["name"],
                                          spec.triggers.alerts, [p.name for p in spec.params])
    assert not problems

    firing = notification(rule)
    (start,) = decide(firing, firing.alerts[0], triggers)
    assert isinstance(start, Start), start
    _, errors = resolve_params(spec.params, start.params)
    assert errors == []
    assert start.severity in ("SEV1", "SEV2", "SEV3", "SEV4")

    resolved = notification(rule, "resolved")
    (resolve,) = decide(resolved, resolved.alerts[0], triggers)
    assert isinstance(resolve, Resolve) and resolve.name == start.name

    other = notification({**rule, "alert": "SomethingElse"})
    assert not any(isinstance(d, Start)
                   for d in decide(other, other.alerts[0], triggers))
