"""The CRD rules that freeze a RunbookExecution's spec once it exists.

Cases:
- every spec property but ``cancel`` and ``approvals`` has a transition rule
  (``oldSelf``) comparing presence and value, so a field added to the model later
  (``severity``) is frozen without anyone writing a rule for it;
- ``approvals`` has an append-only rule and ``cancel`` a may-only-turn-on rule;
- ``params`` is a map (``additionalProperties``), not a free-form object: the API
  server's CEL compares unknown fields of a free-form object only by one side's
  keys, so renaming a parameter would pass ``self == oldSelf``;
- the rules reach the generated CRD on the spec node.
(That the API server enforces them is tested in tests/integration/test_admission.py.)
"""

from __future__ import annotations

from typing import Any

import yaml

from runbook_operator.api.crdgen import render_all, structural_schema
from runbook_operator.api.execution import MUTABLE_SPEC_FIELDS, RunbookExecutionSpec


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


def test_params_is_a_map() -> None:
    params = spec_schema()["properties"]["params"]
    assert params["type"] == "object"
    assert params["additionalProperties"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-preserve-unknown-fields" not in params


def test_rules_reach_the_crd() -> None:
    crd = yaml.safe_load(render_all()["runbooks.dev_runbookexecutions.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert any("oldSelf" in r["rule"] for r in spec["x-kubernetes-validations"])
