"""The CRD rules that freeze a RunbookExecution's spec once it exists.

Cases:
- every spec property but ``cancel`` and ``approvals`` has a transition rule
  (``oldSelf``) comparing presence and value, so a field added to the model later
  (``severity``) is frozen without anyone writing a rule for it;
- ``approvals`` has an append-only rule and ``cancel`` a may-only-turn-on rule;
- ``params`` is free-form, whose keys the API server's CEL cannot see (a renamed
  key at the same size passes ``self == oldSelf``): the chart's immutable-runs
  policy compares the raw spec, with the same mutable fields;
- the rules reach the generated CRD on the spec node.
(That the API server enforces them is tested in tests/integration/test_admission.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runbook_operator.api.crdgen import render_all, structural_schema
from runbook_operator.api.execution import MUTABLE_SPEC_FIELDS, RunbookExecutionSpec

POLICIES = (Path(__file__).resolve().parents[3] / "charts" / "runbook-operator" / "files"
            / "admission-policies.yaml")


def spec_schema() -> dict[str, Any]:
    return structural_schema(RunbookExecutionSpec)


def test_every_other_field_is_frozen() -> None:
    schema = spec_schema()
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    frozen = set(schema["properties"]) - set(MUTABLE_SPEC_FIELDS)
    assert {"runbookRef", "params", "triggeredBy"} <= frozen
    for field in frozen:
        assert any(f"self.{field} == oldSelf.{field}" in r and f"has(oldSelf.{field})" in r
                   for r in rules), field


def test_approvals_append_only_and_cancel_one_way() -> None:
    rules = {r["message"]: r["rule"] for r in spec_schema()["x-kubernetes-validations"]}
    append = next(rule for msg, rule in rules.items() if msg.startswith("spec.approvals"))
    assert "size(self.approvals) >= size(oldSelf.approvals)" in append
    assert "self.approvals[i] == a" in append
    cancel = next(rule for msg, rule in rules.items() if msg.startswith("spec.cancel"))
    assert "oldSelf.cancel" in cancel


def test_free_form_params_are_covered_by_the_chart_policy() -> None:
    # CEL in a CRD cannot see a free-form object's keys: {a: 1} -> {b: 1} passes the
    # CRD rule, so the chart's immutable-runs policy compares the raw spec.
    params = spec_schema()["properties"]["params"]
    assert params.get("x-kubernetes-preserve-unknown-fields") is True
    policies = yaml.safe_load(POLICIES.read_text())
    policy = next(p for p in policies if p["metadata"]["name"] == "immutable-runs.runbooks.dev")
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == [
        "runbookexecutions"]
    changed = next(v for v in policy["spec"]["variables"] if v["name"] == "changed")
    assert "object.spec[k] != oldObject.spec[k]" in changed["expression"]
    mutable = next(v for v in policy["spec"]["variables"] if v["name"] == "mutable")
    assert mutable["expression"] == repr(list(MUTABLE_SPEC_FIELDS))


def test_rules_reach_the_crd() -> None:
    crd = yaml.safe_load(render_all()["runbooks.dev_runbookexecutions.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert any("oldSelf" in r["rule"] for r in spec["x-kubernetes-validations"])
