"""engine.podsecurity and its place in validation and start: step pod security.

Cases:
- merge: a step's securityContext is merged key by key over the restricted
  defaults (readOnlyRootFilesystem added, everything else kept); nested objects
  merge; capabilities.drop keeps ALL whatever the step lists; an allowed
  runAsUser 0 implies runAsNonRoot false at both levels;
- every privileged setting is refused, one problem each, naming the step and the
  field (privileged, runAsUser 0, runAsNonRoot false, allowPrivilegeEscalation,
  capabilities.add, procMount, seccomp Unconfined, hostProcess, host namespaces);
- the same class reached another way: added capabilities in any spelling or case
  (sys_admin, CAP_SYS_ADMIN, ALL, a bare string), root as 0.0, SELinux types and
  users outside the baseline (spc_t), and pod annotations that set an unconfined
  AppArmor or seccomp profile (podMetadata.annotations) are refused too, even
  when securityContext says nothing; runtime/default and localhost/* pass;
- wrong JSON types ("0", "true", 1 for a boolean, a string for capabilities.add)
  are InvalidStep at apply, even in an allowed namespace (the Job would be refused);
- a step's securityContext is container level only: the pod level keeps
  runAsNonRoot and seccomp whatever the step sets, unless the allowed container
  runs as root;
- a step has no field that reaches the host (volumes, ports, containers, pod
  fields): not in the CRD's step schema, refused by the model;
- the restricted settings a step may change freely are not refused;
- an allowed namespace accepts them, another namespace does not;
- serviceAccountName outside the allowlist is ServiceAccountNotAllowed; absent or
  listed is fine; the default allowlist is the chart's runner account;
- circuit and concurrency keys may not read a secret parameter (they are published);
- start_execution fails with reason PrivilegedStep (no frozen spec, so no Job) and
  starts the same runbook in an allowed namespace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from runbook_operator.api.crdgen import render_all
from runbook_operator.api.execution import RunbookExecutionSpec
from runbook_operator.engine.podsecurity import (
    DEFAULT_CONTAINER_SECURITY,
    SecurityPolicy,
    container_security,
    pod_security,
)
from runbook_operator.engine.start import start_execution
from runbook_operator.engine.validation import validate_spec

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def spec(context: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "fix", "image": "busybox:1.37"}
    if context is not None:
        step["securityContext"] = context
    return {"steps": [step], **fields}


def test_merge_keeps_the_defaults() -> None:
    merged = container_security({"readOnlyRootFilesystem": True, "runAsUser": 1000})
    assert merged == {**DEFAULT_CONTAINER_SECURITY, "readOnlyRootFilesystem": True,
                      "runAsUser": 1000}
    assert container_security(None) == DEFAULT_CONTAINER_SECURITY
    assert pod_security(None) == {"runAsNonRoot": True,
                                  "seccompProfile": {"type": "RuntimeDefault"}}


def test_merge_nested_and_drop_all_stays() -> None:
    merged = container_security({"capabilities": {"drop": ["NET_RAW"]},
                                 "seccompProfile": {"localhostProfile": "x"}})
    assert merged["capabilities"] == {"drop": ["ALL", "NET_RAW"]}
    assert merged["seccompProfile"] == {"type": "RuntimeDefault", "localhostProfile": "x"}
    assert container_security({"capabilities": {"drop": []}})["capabilities"]["drop"] == ["ALL"]


def test_allowed_root_implies_run_as_non_root_false() -> None:
    assert container_security({"runAsUser": 0})["runAsNonRoot"] is False
    assert pod_security({"runAsUser": 0})["runAsNonRoot"] is False


@pytest.mark.parametrize(("context", "field"), [
    ({"privileged": True}, "securityContext.privileged"),
    ({"runAsUser": 0}, "securityContext.runAsUser"),
    ({"runAsNonRoot": False}, "securityContext.runAsNonRoot"),
    ({"allowPrivilegeEscalation": True}, "securityContext.allowPrivilegeEscalation"),
    ({"capabilities": {"add": ["NET_ADMIN"]}}, "securityContext.capabilities.add"),
    ({"procMount": "Unmasked"}, "securityContext.procMount"),
    ({"seccompProfile": {"type": "Unconfined"}}, "securityContext.seccompProfile.type"),
    ({"windowsOptions": {"hostProcess": True}},
     "securityContext.windowsOptions.hostProcess"),
    ({"hostNetwork": True}, "securityContext.hostNetwork"),
    ({"hostPID": True}, "securityContext.hostPID"),
])
def test_privileged_settings_are_refused(context: dict[str, Any], field: str) -> None:
    (problem,) = validate_spec(spec(context), SecurityPolicy(), "ops")
    assert problem.reason == "PrivilegedStep"
    assert problem.step == "fix"
    assert field in problem.message
    assert "--allow-privileged-namespace" in problem.message


def test_restricted_changes_are_fine() -> None:
    ok = {"runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": True,
          "capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}
    assert validate_spec(spec(ok), SecurityPolicy(), "ops") == []


def test_allowed_namespace_only() -> None:
    policy = SecurityPolicy(privileged_namespaces=frozenset({"break-glass"}))
    raw = spec({"privileged": True, "runAsUser": 0})
    assert validate_spec(raw, policy, "break-glass") == []
    assert [p.reason for p in validate_spec(raw, policy, "ops")] == ["PrivilegedStep"] * 2


def test_service_account_allowlist() -> None:
    assert validate_spec(spec(serviceAccountName="runbook-runner")) == []
    assert validate_spec(spec()) == []
    (problem,) = validate_spec(spec(serviceAccountName="cluster-admin-sa"))
    assert problem.reason == "ServiceAccountNotAllowed"
    assert "cluster-admin-sa" in problem.message and "runbook-runner" in problem.message
    policy = SecurityPolicy(runner_accounts=frozenset({"cluster-admin-sa"}))
    assert validate_spec(spec(serviceAccountName="cluster-admin-sa"), policy) == []


def test_start_refuses_a_privileged_runbook_before_any_job() -> None:
    runbook = {"metadata": {"generation": 1}, "spec": spec({"privileged": True})}
    ex = RunbookExecutionSpec.model_validate({"runbookRef": {"name": "rb"}})
    status = start_execution(ex, runbook, "ops", NOW, SecurityPolicy())
    assert status.phase == "Failed" and status.reason == "PrivilegedStep"
    assert status.runbook_spec is None
    assert "fix" in (status.message or "") and "privileged" in (status.message or "")
    allowed = SecurityPolicy(privileged_namespaces=frozenset({"ops"}))
    assert start_execution(ex, runbook, "ops", NOW, allowed).phase == "Running"


def test_keys_may_not_read_secret_parameters() -> None:
    params = [{"name": "token", "secret": True}, {"name": "provider"}]
    raw = {"params": params, "concurrency": {"policy": "Forbid", "key": "params.token"},
           "steps": [{"name": "a", "image": "x",
                      "circuit": {"policy": "p", "key": "params['token'] + params.provider"}}]}
    problems = validate_spec(raw)
    assert [(p.reason, p.step) for p in problems] == [("InvalidExpression", "a"),
                                                      ("InvalidExpression", None)]
    assert all("secret parameter 'token'" in p.message for p in problems)
    raw["concurrency"]["key"] = "params.provider"
    raw["steps"][0]["circuit"]["key"] = "params.provider"
    assert validate_spec(raw) == []


def step_with(context: dict[str, Any] | None = None,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    raw = spec(context)
    if annotations is not None:
        raw["steps"][0]["podMetadata"] = {"annotations": annotations}
    return raw


@pytest.mark.parametrize(("context", "annotations", "field"), [
    ({"capabilities": {"add": ["sys_admin"]}}, None, "securityContext.capabilities.add"),
    ({"capabilities": {"add": ["CAP_SYS_ADMIN"]}}, None, "securityContext.capabilities.add"),
    ({"capabilities": {"add": ["ALL"], "drop": ["ALL"]}}, None,
     "securityContext.capabilities.add"),
    ({"runAsUser": 0.0}, None, "securityContext.runAsUser"),
    ({"seLinuxOptions": {"type": "spc_t"}}, None, "securityContext.seLinuxOptions.type"),
    ({"seLinuxOptions": {"user": "system_u"}}, None, "securityContext.seLinuxOptions.user"),
    ({"appArmorProfile": {"type": "Unconfined"}}, None,
     "securityContext.appArmorProfile.type"),
    (None, {"container.apparmor.security.beta.kubernetes.io/step": "unconfined"},
     "podMetadata.annotations[container.apparmor.security.beta.kubernetes.io/step]"),
    ({"readOnlyRootFilesystem": True},
     {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"},
     "podMetadata.annotations[seccomp.security.alpha.kubernetes.io/pod]"),
    (None, {"container.seccomp.security.alpha.kubernetes.io/step": "unconfined"},
     "podMetadata.annotations[container.seccomp.security.alpha.kubernetes.io/step]"),
])
def test_the_class_reached_another_way_is_refused(context: dict[str, Any] | None,
                                                  annotations: dict[str, str] | None,
                                                  field: str) -> None:
    problems = validate_spec(step_with(context, annotations), SecurityPolicy(), "ops")
    privileged = [p for p in problems if p.reason == "PrivilegedStep"]
    assert [p.step for p in privileged] == ["fix"], problems
    assert field in privileged[0].message
    allowed = SecurityPolicy(privileged_namespaces=frozenset({"ops"}))
    assert not [p for p in validate_spec(step_with(context, annotations), allowed, "ops")
                if p.reason == "PrivilegedStep"]


def test_a_privileged_annotation_fails_the_run_before_any_job() -> None:
    raw = step_with(None, {"container.apparmor.security.beta.kubernetes.io/step": "unconfined"})
    ex = RunbookExecutionSpec.model_validate({"runbookRef": {"name": "rb"}})
    status = start_execution(ex, {"metadata": {"generation": 1}, "spec": raw}, "ops", NOW,
                             SecurityPolicy())
    assert (status.phase, status.reason) == ("Failed", "PrivilegedStep")
    assert status.runbook_spec is None


def test_confined_profiles_and_other_annotations_pass() -> None:
    fine = {"container.apparmor.security.beta.kubernetes.io/step": "runtime/default",
            "seccomp.security.alpha.kubernetes.io/pod": "localhost/profile.json",
            "example.com/team": "sre"}
    context = {"seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
               "appArmorProfile": {"type": "RuntimeDefault"}}
    assert validate_spec(step_with(context, fine), SecurityPolicy(), "ops") == []


@pytest.mark.parametrize(("context", "field"), [
    ({"runAsUser": "0"}, "securityContext.runAsUser"),
    ({"runAsGroup": True}, "securityContext.runAsGroup"),
    ({"privileged": "true"}, "securityContext.privileged"),
    ({"allowPrivilegeEscalation": 1}, "securityContext.allowPrivilegeEscalation"),
    ({"capabilities": {"add": "SYS_ADMIN"}}, "securityContext.capabilities.add"),
    ({"seLinuxOptions": "spc_t"}, "securityContext.seLinuxOptions"),
])
def test_wrong_types_are_invalid_even_where_privilege_is_allowed(context: dict[str, Any],
                                                                 field: str) -> None:
    allowed = SecurityPolicy(privileged_namespaces=frozenset({"ops"}))
    for policy in (SecurityPolicy(), allowed):
        invalid = [p for p in validate_spec(spec(context), policy, "ops")
                   if p.reason == "InvalidStep"]
        assert [p.step for p in invalid] == ["fix"]
        assert field in invalid[0].message


def test_the_pod_level_stays_restricted_whatever_the_container_sets() -> None:
    for context in ({"runAsUser": 1000}, {"runAsNonRoot": True, "runAsUser": 5},
                    {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
                    {"runAsNonRoot": "false"}):
        assert pod_security(context) == {"runAsNonRoot": True,
                                         "seccompProfile": {"type": "RuntimeDefault"}}
    # Root at the container level (allowed) is the only thing that moves the pod level.
    assert pod_security({"runAsUser": 0})["runAsNonRoot"] is False


def test_a_step_has_no_field_that_reaches_the_host() -> None:
    """Volumes (hostPath), ports (hostPort), extra containers and pod-level fields are
    not in the Runbook API: the model refuses them and the CRD's step schema, which
    keeps no unknown fields, prunes them before the operator sees the object."""
    crd = yaml.safe_load(render_all()["runbooks.dev_runbooks.yaml"])
    step_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"]["spec"]["properties"]["steps"]["items"]
    assert not step_schema.get("x-kubernetes-preserve-unknown-fields")
    for name in ("volumes", "volumeMounts", "ports", "initContainers", "containers",
                 "hostNetwork", "hostPID", "hostIPC", "nodeName", "podSecurityContext"):
        assert name not in step_schema["properties"]
        raw = spec()
        raw["steps"][0][name] = [{"name": "root", "hostPath": {"path": "/"}}]
        assert [p.reason for p in validate_spec(raw, SecurityPolicy(), "ops")] == ["InvalidSpec"]
