"""Runbooks on the real apiserver: CRDs, validation, schema rejection, printer columns.

Cases (issue 2): the CRDs install and are established; every example gets
Ready=True; each invalid case gets Ready=False with its reason and the step
named; schema-invalid objects are rejected at create with the field named;
`kubectl get rb,rbx,cbp` shows the printer columns; the operator writes only
status (generation unchanged, no annotations or finalizers added).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import Kube, step, wait_for
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def ready(kube: Kube, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        rb = kube.get("runbooks", name)
        status = (rb or {}).get("status") or {}
        if status.get("observedGeneration") != (rb or {}).get("metadata", {}).get("generation"):
            return None
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
    return wait_for(f"Ready condition of {name}", probe, timeout=60)


def test_crds_are_established(k8s_api: Any, operator: Any) -> None:
    import kubernetes

    ext = kubernetes.client.ApiextensionsV1Api(k8s_api)
    for plural in ("runbooks", "runbookexecutions", "circuitpolicies"):
        crd = ext.read_custom_resource_definition(f"{plural}.runbooks.dev")
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", conditions


def test_every_example_runbook_is_ready(kube: Kube) -> None:
    runbooks = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Runbook":
                kube.runbook(doc["metadata"]["name"], doc["spec"])
                runbooks.append(doc["metadata"]["name"])
    assert len(runbooks) >= 7
    for name in runbooks:
        condition = ready(kube, name)
        assert condition["status"] == "True", (name, condition)


INVALID = {
    "cycle": ({"steps": [step("a", after=["c"]), step("b", after=["a"]),
                         step("c", after=["b"])]}, "DependencyCycle", "a -> c -> b -> a"),
    "unknown-dep": ({"steps": [step("a"), step("b", after=["nope"])]},
                    "UnknownDependency", "'b'"),
    "duplicate": ({"steps": [step("a")], "finally": [step("a")]}, "DuplicateName", "'a'"),
    "bad-cel": ({"steps": [step("a"), step("b", after=["a"], when="steps.a.phase ==")]},
                "InvalidExpression", "'b'"),
    "bad-default": ({"params": [{"name": "provider", "enum": ["openai"], "default": "x"}],
                     "steps": [step("a")]}, "InvalidDefault", "provider"),
    "bad-type": ({"params": [{"name": "n", "type": "integer", "default": "three"}],
                  "steps": [step("a")]}, "InvalidDefault", "'n'"),
    "bad-fallback": ({"steps": [step("a", circuit={"policy": "p", "onOpen": "Fallback",
                                                   "fallback": "ghost"})]},
                     "UnknownFallback", "'a'"),
    "bad-promql": ({"params": [{"name": "service"}], "steps": [{
        "name": "verify", "type": "query", "query": {
            "source": "prometheus", "expr": "avg(latency{service=$service}) bar",
            "successCondition": "result.value < 5.0"}}]},
        "InvalidQuery", "step 'verify': query.expr does not parse: invalid promql query "
                        "(line 1, column 32)"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_runbook_gets_ready_false(kube: Kube, case: str) -> None:
    spec, reason, named = INVALID[case]
    kube.runbook(case, spec)
    condition = ready(kube, case)
    assert condition["status"] == "False"
    assert condition["reason"] == reason, condition
    assert named in condition["message"], condition["message"]


def test_cycle_message_shows_the_cycle(kube: Kube) -> None:
    kube.runbook("loop", {"steps": [step("x", after=["y"]), step("y", after=["x"])]})
    condition = ready(kube, "loop")
    assert condition["reason"] == "DependencyCycle"
    assert "x -> y -> x" in condition["message"]


def test_fixing_a_runbook_makes_it_ready(kube: Kube) -> None:
    kube.runbook("fixme", {"steps": [step("a", after=["b"])]})
    assert ready(kube, "fixme")["status"] == "False"
    kube.patch("runbooks", "fixme", {"spec": {"steps": [step("a")]}})
    wait_for("Ready=True after the fix", lambda: ready(kube, "fixme")["status"] == "True")


SCHEMA_INVALID = {
    "no-name": ({"steps": [{"image": "busybox"}]}, "spec.steps[0].name"),
    "negative-retry": ({"steps": [step("a", retry={"limit": -1})]}, "spec.steps[0].retry.limit"),
    "bad-duration": ({"steps": [step("a", timeout="soon")]}, "spec.steps[0].timeout"),
    "no-image": ({"steps": [{"name": "a"}]}, "a run step needs an image"),
    "dup-in-list": ({"steps": [step("a"), step("a")]}, "spec.steps[1]"),
    "bad-step-name": ({"steps": [step("Not_A_Label")]}, "spec.steps[0].name"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_INVALID))
def test_schema_rejects_at_create_naming_the_field(kube: Kube, case: str) -> None:
    spec, field = SCHEMA_INVALID[case]
    with pytest.raises(ApiException) as caught:
        kube.runbook(case, spec)
    assert caught.value.status == 422
    assert field in caught.value.body, caught.value.body


def test_printer_columns(kube: Kube, kubectl: Any) -> None:
    kube.runbook("columns", {"steps": [step("a"), step("b")]})
    ready(kube, "columns")
    kube.create("circuitpolicies", {"apiVersion": "runbooks.dev/v1alpha1",
                                    "kind": "CircuitPolicy", "metadata": {"name": "cols"},
                                    "spec": {"minimumCalls": 3}})
    kube.execute("columns-1", "columns")
    kube.wait_finished("columns-1")
    out = kubectl("get", "rb,rbx,cbp", "-n", kube.ns)
    for header in ("READY", "STEPS", "RUNBOOK", "PHASE", "PROGRESS", "STARTED", "OPEN", "AGE"):
        assert header in out, out
    rb_line = next(line for line in out.splitlines()
                   if line.startswith("runbook.runbooks.dev/columns"))
    assert rb_line.split()[1:3] == ["True", "2"], rb_line


def test_operator_writes_only_status(kube: Kube) -> None:
    kube.runbook("untouched", {"steps": [step("a")]})
    ready(kube, "untouched")
    rb = kube.get("runbooks", "untouched")
    assert rb is not None
    assert rb["metadata"]["generation"] == 1
    assert not rb["metadata"].get("annotations")
    assert not rb["metadata"].get("finalizers")
    ours = [m.get("subresource", "") for m in rb["metadata"]["managedFields"]
            if m["manager"] == "runbook-operator"]
    assert ours == ["status"], rb["metadata"]["managedFields"]
