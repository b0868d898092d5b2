"""Shared building blocks of the API: the base model, durations, conditions.

Every model serialises to the camelCase JSON the Kubernetes API uses and rejects
unknown fields, so a typo in a Runbook is an error, not a silently ignored key.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "runbooks.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
RUNBOOKS = "runbooks"
"""The plurals of the three kinds, as the API's paths spell them."""
EXECUTIONS = "runbookexecutions"
CIRCUIT_POLICIES = "circuitpolicies"

DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# Kubernetes names: DNS-1123 labels, the form Job names and label values accept.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def k8s(**extra: Any) -> dict[str, Any]:
    """Schema keywords that only the CRD generator reads (``x-kubernetes-*``)."""
    return extra


def duration_rule(field: str) -> dict[str, Any]:
    return {
        "rule": f"self.matches('{DURATION_PATTERN}')",
        "message": f"{field}must be a duration such as 30s, 5m or 1h30m",
    }


Duration = Annotated[
    str,
    Field(max_length=32, pattern=DURATION_PATTERN),
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 32,
            "x-kubernetes-validations": [duration_rule("")],
        }
    ),
]
"""A Go-style duration string: ``500ms``, ``30s``, ``5m``, ``1h30m``."""

JSONValue = Annotated[
    Any,
    WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True}),
]
"""Any JSON value (parameter values, outputs): kept as is by the apiserver."""

JSONObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A free-form JSON object, such as a Kubernetes type we pass through untouched."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``1h30m`` or ``500ms``.

    Raises ``ValueError`` naming the text when it is not a duration.
    """
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration (use forms such as 30s, 5m, 1h30m, 500ms)")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The object as the Kubernetes API would hold it (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(ApiModel):
    """A Kubernetes-style condition: the state of one aspect, with a reason."""

    type: str = Field(max_length=64)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=128)
    message: str = Field(default="", max_length=4096)
    last_transition_time: str | None = None
    observed_generation: int | None = None


CONDITIONS_LIST: JsonDict = {"x-kubernetes-list-type": "map",
                             "x-kubernetes-list-map-keys": ["type"]}
"""Conditions are a map keyed by ``type`` (the API conventions): at most one per type,
and server-side apply merges them by type."""


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
