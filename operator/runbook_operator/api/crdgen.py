"""Generates the CustomResourceDefinitions under ``crds/`` from the pydantic models.

The models are the one source of truth; this module turns their JSON schema into
a structural OpenAPI v3 schema (refs inlined, nullables folded, no defaults so
the apiserver never writes into a GitOps-managed spec) and adds what only a CRD
has: short names, printer columns, the status subresource.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from runbook_operator.api.circuitpolicy import CircuitPolicySpec, CircuitPolicyStatus
from runbook_operator.api.common import CIRCUIT_POLICIES, EXECUTIONS, GROUP, RUNBOOKS, VERSION
from runbook_operator.api.execution import RunbookExecutionSpec, RunbookExecutionStatus
from runbook_operator.api.runbook import RunbookSpec, RunbookStatus

# JSON-schema keywords a structural CRD schema keeps; everything else is dropped.
_KEEP = {
    "type", "properties", "items", "required", "enum", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "description",
    "additionalProperties", "nullable",
}


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and the parts of its CRD that are not its schema."""

    kind: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: list[dict[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=lambda: ["runbooks"])


KINDS = [
    Kind(
        kind="Runbook",
        plural=RUNBOOKS,
        short_names=["rb"],
        spec=RunbookSpec,
        status=RunbookStatus,
        columns=[
            {"name": "Ready", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Reason", "type": "string", "priority": "1",
             "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
            {"name": "Steps", "type": "integer", "jsonPath": ".status.stepCount"},
            {"name": "Schedule", "type": "string", "priority": "1",
             "jsonPath": ".spec.schedule.cron"},
            {"name": "Last Schedule", "type": "date", "priority": "1",
             "jsonPath": ".status.schedule.lastScheduleTime"},
            {"name": "Next Schedule", "type": "string", "priority": "1",
             "jsonPath": ".status.schedule.nextScheduleTime"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    Kind(
        kind="RunbookExecution",
        plural=EXECUTIONS,
        short_names=["rbx", "rbexec"],
        spec=RunbookExecutionSpec,
        status=RunbookExecutionStatus,
        columns=[
            {"name": "Runbook", "type": "string", "jsonPath": ".spec.runbookRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
            {"name": "Reason", "type": "string", "priority": "1", "jsonPath": ".status.reason"},
            {"name": "Started", "type": "date", "jsonPath": ".status.startedAt"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
    Kind(
        kind="CircuitPolicy",
        plural=CIRCUIT_POLICIES,
        short_names=["cbp"],
        spec=CircuitPolicySpec,
        status=CircuitPolicyStatus,
        columns=[
            {"name": "Open", "type": "integer", "jsonPath": ".status.openCircuits"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    ),
]


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a structural OpenAPI v3 schema for a CRD."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            return _convert({**branches[0], **{k: v for k, v in rest.items()
                                               if k in ("description",)}}, defs)
        return {"x-kubernetes-preserve-unknown-fields": True,
                **({"description": rest["description"]} if "description" in rest else {})}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            out[key] = value
        elif key not in _KEEP:
            continue
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in node:
                out[key] = _convert(value, defs)
        elif key == "description":
            out[key] = " ".join(str(value).split())
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema's numeric form; OpenAPI v3.0 (CRDs) wants a bound plus a flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    free_form = "properties" not in out and "additionalProperties" not in out
    if out.get("type") == "object" and free_form:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "required" in out and "properties" in out:
        out["required"] = [r for r in out["required"] if r in out["properties"]]
    return out


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec_schema = structural_schema(kind.spec)
    status_schema = structural_schema(kind.status)
    status_schema.pop("required", None)
    columns = [{**c, "priority": int(c["priority"])} if "priority" in c else c
               for c in kind.columns]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": kind.short_names,
                "categories": kind.categories,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `runbook-operator crds` from runbook_operator.api. Do not edit.\n"
    return {
        f"{GROUP}_{k.plural}.yaml": header + yaml.safe_dump(crd(k), sort_keys=False, width=100)
        for k in KINDS
    }


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
