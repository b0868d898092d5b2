"""What the web view shows of an execution, a runbook and circuits (cli/ui/model.py),
and the pure parts of its actions (cli/ui/actions.py).

Cases: an execution's view has every step with phase, attempts, reason, message,
outputs and circuit, its DAG in layers (fan-out and join; a cycle or an unknown
dependency still places every step once), history, approvals and waiting steps;
secret parameters (frozen spec, or the live Runbook's before the run started) are
redacted, and so are values under sensitive keys and bearer tokens in messages;
markup in a message stays the same characters (the page renders it as text);
property: any JSON-shaped object gives a view without raising, with no secret
param's value anywhere in it and no string over the limit. The run form: secret
defaults hidden, a param with a default is not required. Actions: form values are
converted to declared types (the CLI's ``convert``), empty ones omitted, unknown
names and wrong types refused; an approval appends to the decisions so far at the
version read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.cli.ui import actions, model

NOW = datetime(2026, 12, 8, 12, 0, 0, tzinfo=UTC)
XSS = "<img src=x onerror=alert(1)>"


def execution(**status: Any) -> dict[str, Any]:
    spec = {"params": [{"name": "db_pass", "secret": True}, {"name": "target"},
                       {"name": "api_token"}],
            "steps": [{"name": "probe", "image": "busybox"},
                      {"name": "gate", "type": "approval", "dependsOn": ["probe"],
                       "approval": {"approvers": {"groups": ["sre-oncall"],
                                                  "users": ["carol"]}}},
                      {"name": "left", "dependsOn": ["gate"]},
                      {"name": "right", "dependsOn": ["gate"],
                       "circuit": {"policy": "ai-provider"}},
                      {"name": "join", "dependsOn": ["left", "right"]}],
            "finally": [{"name": "report"}]}
    return {"metadata": {"name": "run-1", "namespace": "ops", "resourceVersion": "7"},
            "spec": {"runbookRef": {"name": "rb"},
                     "params": {"db_pass": "hunter22", "target": "db-1",
                                "api_token": "t0ps3cret"},
                     "approvals": [{"step": "gate", "decision": "Approve", "by": "carol",
                                    "comment": "go"}]},
            "status": {"phase": "Running", "runbookSpec": spec, **status}}


def test_the_view_has_each_steps_state_and_the_dag_in_layers() -> None:
    body = execution(steps={
        "probe": {"phase": "Succeeded", "attempts": 2, "exitCode": 0, "reason": "Completed",
                  "message": XSS, "outputs": {"healthy": True},
                  "startedAt": "2026-12-08T11:59:00Z", "finishedAt": "2026-12-08T11:59:30Z"},
        "gate": {"phase": "WaitingForApproval"},
        "right": {"phase": "Failed", "circuit": "ai-provider/openai", "circuitTrial": True}},
        history=[{"time": "t", "event": "StepStarted", "step": "probe", "message": XSS}])
    view = model.execution_view(body, None, NOW)
    steps = {s["name"]: s for s in view["steps"]}
    probe = steps["probe"]
    assert (probe["phase"], probe["attempts"], probe["exitCode"], probe["reason"]) == \
        ("Succeeded", 2, 0, "Completed")
    assert probe["message"] == XSS  # the same characters: the page renders text, not HTML
    assert probe["outputs"] == '{"healthy": true}'
    assert probe["duration"] == "30s"
    assert steps["right"]["circuit"] == "ai-provider/openai" and steps["right"]["circuitTrial"]
    assert steps["left"]["phase"] == "Pending" and steps["left"]["circuit"] == ""
    assert steps["gate"]["approvers"] == {"users": ["carol"], "groups": ["sre-oncall"]}
    assert steps["report"]["finally"] and steps["join"]["deps"] == ["left", "right"]
    assert view["layers"] == [["probe"], ["gate"], ["left", "right"], ["join"], ["report"]]
    assert view["waiting"] == ["gate"]
    assert view["approvals"] == [{"step": "gate", "decision": "Approve", "by": "carol",
                                  "comment": "go"}]
    assert view["history"][0]["message"] == XSS
    assert not view["finished"]


def test_secret_params_are_redacted_by_declaration_and_by_key() -> None:
    view = model.execution_view(execution(), None, NOW)
    assert view["params"] == {"db_pass": "[REDACTED]", "target": "db-1",
                              "api_token": "[REDACTED]"}
    text = json.dumps(view)
    assert "hunter22" not in text and "t0ps3cret" not in text


def test_before_the_run_starts_the_live_runbook_declares_the_secrets() -> None:
    body = execution()
    live = body["status"].pop("runbookSpec")
    body["status"] = {}
    view = model.execution_view(body, live, NOW)
    assert view["params"]["db_pass"] == "[REDACTED]"
    assert [s["phase"] for s in view["steps"]] == ["Pending"] * 6


def test_credentials_in_messages_are_redacted() -> None:
    body = execution(steps={"probe": {"phase": "Failed",
                                      "message": "401 with Authorization: Bearer abc.def"}})
    probe = model.execution_view(body, None, NOW)["steps"][0]
    assert "abc.def" not in probe["message"] and "[REDACTED]" in probe["message"]


def test_a_cycle_or_unknown_dependency_still_places_every_step_once() -> None:
    steps = [{"name": "a", "deps": ["b"]}, {"name": "b", "deps": ["a"]},
             {"name": "c", "deps": ["nowhere"]}]
    placed = [n for layer in model.layers(steps) for n in layer]
    assert sorted(placed) == ["a", "b", "c"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(status=JSON, steps=JSON, history=JSON, params=JSON, message=st.text(max_size=6000))
def test_any_object_gives_a_bounded_view_without_secrets(status: Any, steps: Any,
                                                         history: Any, params: Any,
                                                         message: str) -> None:
    body = execution(steps=steps if not isinstance(steps, dict) else
                     {**steps, "probe": {"phase": "Failed", "message": message}},
                     history=history)
    body["status"]["extra"] = status
    body["spec"]["params"] = {"db_pass": "hunter22",
                              **(params if isinstance(params, dict) else {})}
    view = model.execution_view(body, None, NOW)
    text = json.dumps(view)
    assert "hunter22" not in text

    def strings(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list | tuple):
            return [s for v in value for s in strings(v)]
        return []
    assert all(len(s) <= model.MAX_TEXT for s in strings(view))


@given(JSON)
def test_any_object_as_a_list_row_runbook_or_policy_does_not_raise(value: Any) -> None:
    if isinstance(value, dict):
        model.execution_row(value, NOW)
        model.runbook_row(value)
        model.circuit_rows([value])


def test_run_form_fields_from_the_parameter_schema() -> None:
    row = model.runbook_row({"metadata": {"name": "rb", "namespace": "ops"},
                             "spec": {"params": [
                                 {"name": "replicas", "type": "integer", "required": True},
                                 {"name": "mode", "enum": ["fast", "safe"], "default": "safe",
                                  "required": True},
                                 {"name": "key", "secret": True, "default": "s3cr3t-value"}]},
                             "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    fields = {f["name"]: f for f in row["params"]}
    assert row["ready"]
    assert fields["replicas"]["required"] and fields["replicas"]["type"] == "integer"
    assert not fields["mode"]["required"] and fields["mode"]["enum"] == ["fast", "safe"]
    assert fields["key"]["secret"] and fields["key"]["default"] == "[REDACTED]"


def test_circuit_rows() -> None:
    rows = model.circuit_rows([
        {"metadata": {"name": "p", "namespace": "ops"}, "spec": {"mode": "ForcedOpen"},
         "status": {"circuits": [{"key": "openai", "state": "Open", "failureRate": 75.0,
                                  "calls": 4, "openedAt": "t"}]}},
        {"metadata": {"name": "q", "namespace": "ops"}, "spec": {}}])
    assert rows[0]["state"] == "Open" and rows[0]["failureRate"] == "75%"
    assert rows[0]["mode"] == "ForcedOpen" and rows[1]["key"] == "" and rows[1]["mode"] == "Normal"


DECLARED = [{"name": "replicas", "type": "integer"}, {"name": "dry_run", "type": "boolean"},
            {"name": "targets", "type": "array"}, {"name": "note"}]


def test_form_values_become_the_declared_types() -> None:
    assert actions.run_params(DECLARED, {"replicas": "3", "dry_run": "false",
                                         "targets": '["a"]', "note": ""}) == \
        {"replicas": 3, "dry_run": False, "targets": ["a"]}


@pytest.mark.parametrize("given_", [{"replicas": "three"}, {"nope": "1"}, {"replicas": 3},
                                    {"targets": "[not json"}, ["replicas"]])
def test_bad_form_values_are_refused(given_: Any) -> None:
    with pytest.raises(actions.BadRequest):
        actions.run_params(DECLARED, given_)


def test_an_approval_appends_at_the_version_read() -> None:
    patch = actions.decision_patch(execution(), "gate", "Reject", "dave", "no")
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["spec"]["approvals"][-1] == {"step": "gate", "decision": "Reject",
                                              "by": "dave", "comment": "no"}
    assert len(patch["spec"]["approvals"]) == 2


FIELDS = st.dictionaries(st.sampled_from(
    ["phase", "steps", "history", "runbookSpec", "startedAt", "finishedAt", "message",
     "reason", "params", "approvals", "runbookRef", "triggeredBy", "severity", "cancel",
     "resumeFrom", "progress", "name", "namespace", "creationTimestamp"]), JSON, max_size=8)


@settings(max_examples=300, deadline=None)
@given(metadata=FIELDS, spec=st.one_of(FIELDS, JSON), status=st.one_of(FIELDS, JSON),
       live=st.one_of(FIELDS, JSON))
def test_an_object_of_any_shape_never_takes_the_page_down(metadata: Any, spec: Any,
                                                           status: Any, live: Any) -> None:
    body = {"metadata": metadata, "spec": spec, "status": status}
    json.dumps(model.execution_view(body, live if isinstance(live, dict) else None, NOW))
    json.dumps(model.execution_row(body, NOW))
