"""The CRDs under crds/ and the models they are generated from.

Cases:
- regenerating the CRDs from the models (api.crdgen.render_all) gives exactly the
  files in crds/, and crds/ holds no other CRD (stale output tells to run
  `runbook-operator crds`);
- every schema node is structural: it has a `type` unless it has
  `x-kubernetes-preserve-unknown-fields`; no `default` (the apiserver must never
  write into a GitOps-managed spec), no `$ref`, `anyOf`, `oneOf`, `allOf`, `not`
  (inside properties/items/additionalProperties);
- the CRDs name the API's group, version, kinds and short names (runbooks.dev,
  v1alpha1; rb, rbx or rbexec, cbp), with the status subresource;
- every example manifest is accepted by its kind's pydantic model;
- every kind's status.conditions is a list map keyed by type, each with observedGeneration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook_operator.api import CircuitPolicy, Runbook, RunbookExecution
from runbook_operator.api.crdgen import render_all

from ..support import CRDS, EXAMPLES, load

FORBIDDEN = {"default", "$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "definitions"}
RENDERED = render_all()


def test_crds_are_up_to_date() -> None:
    on_disk = {p.name for p in CRDS.glob("*.yaml")}
    assert on_disk == set(RENDERED), "crds/ is stale: run `runbook-operator crds`"
    for name, text in RENDERED.items():
        assert (CRDS / name).read_text() == text, (
            f"crds/{name} differs from the models: run `runbook-operator crds`")


def schema_nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def crd_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, text in RENDERED.items():
        crd = yaml.safe_load(text)
        for version in crd["spec"]["versions"]:
            yield f"{name}:{version['name']}", version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize(("name", "schema"), list(crd_schemas()), ids=lambda v: str(v)[:40])
def test_schema_is_structural(name: str, schema: dict[str, Any]) -> None:
    nodes = list(schema_nodes(schema, "$"))
    assert len(nodes) > 20
    for path, node in nodes:
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True, (
            f"{name} {path} has no type")
        assert not FORBIDDEN & set(node), f"{name} {path} has {FORBIDDEN & set(node)}"


def test_names_and_subresources() -> None:
    kinds = {}
    for text in RENDERED.values():
        crd = yaml.safe_load(text)
        spec = crd["spec"]
        assert spec["group"] == "runbooks.dev"
        assert spec["scope"] == "Namespaced"
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1"
        assert version["subresources"] == {"status": {}}
        kinds[spec["names"]["kind"]] = spec["names"]["shortNames"]
    assert kinds == {"Runbook": ["rb"], "RunbookExecution": ["rbx", "rbexec"],
                     "CircuitPolicy": ["cbp"]}


MODELS = {"Runbook": Runbook, "RunbookExecution": RunbookExecution,
          "CircuitPolicy": CircuitPolicy}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_parse_with_their_model(path: Path) -> None:
    doc = load(path)
    assert doc["apiVersion"] == "runbooks.dev/v1alpha1"
    MODELS[doc["kind"]].model_validate(doc)


def test_conditions_are_a_map_keyed_by_type() -> None:
    """The API conventions: at most one condition per type, merged by type."""
    for path in sorted(CRDS.glob("*.yaml")):
        status = yaml.safe_load(path.read_text())["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"]["properties"]["status"]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map", path.name
        assert conditions["x-kubernetes-list-map-keys"] == ["type"], path.name
        assert "type" in conditions["items"]["required"], path.name
        assert "observedGeneration" in conditions["items"]["properties"], path.name
