"""Step pod security: restricted defaults, what a step may change, and who may run as what.

A Runbook makes the operator create Jobs with the operator's rights, so a step's
``securityContext`` must never quietly turn a step pod into a privileged one. A
step's settings are merged key by key over the restricted defaults (what it does
not set stays restricted), and the settings that leave the restricted profile
(privileged, root, added capabilities, privilege escalation...) are refused unless
the cluster admin allowed them for the Runbook's namespace. The account step pods
run as must be one the admin listed. Pure: the allowances are passed in.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NON_ROOT_UID = 65532

DEFAULT_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_UID,
    "runAsGroup": NON_ROOT_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}

DEFAULT_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}

DEFAULT_RUNNER_ACCOUNTS = frozenset({"runbook-runner"})
"""The runner account the Helm chart creates (``runner.name``)."""


@dataclass(frozen=True)
class SecurityPolicy:
    """What the cluster admin allowed the operator (flags and chart values)."""

    privileged_namespaces: frozenset[str] = frozenset()
    """Namespaces whose Runbooks may have privileged steps (``--allow-privileged-namespace``)."""
    runner_accounts: frozenset[str] = field(default_factory=lambda: DEFAULT_RUNNER_ACCOUNTS)
    """Service accounts step pods may run as (``--runner-service-account``)."""


@dataclass(frozen=True)
class Violation:
    """One setting of a step that needs an allowance; ``field`` is its path."""

    step: str | None
    field: str
    message: str


def merge(defaults: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``override`` over ``defaults`` key by key, nested objects merged the same way.

    ``capabilities.drop`` is the union of both: a step can add capabilities (which
    needs an allowance) but cannot un-drop the default ``ALL`` by omission.
    """
    out = copy.deepcopy(dict(defaults))
    for key, value in (override or {}).items():
        base = out.get(key)
        if isinstance(base, dict) and isinstance(value, Mapping):
            out[key] = merge(base, value)
        else:
            out[key] = copy.deepcopy(value)
    caps = out.get("capabilities")
    default_drop = (defaults.get("capabilities") or {}).get("drop") or []
    if isinstance(caps, dict) and default_drop:
        drop = caps.get("drop")
        drop = list(drop) if isinstance(drop, list) else []
        caps["drop"] = [*default_drop, *(d for d in drop if d not in default_drop)]
    return out


def container_security(override: Mapping[str, Any] | None) -> dict[str, Any]:
    """The container ``securityContext`` of a step pod.

    An (allowed) ``runAsUser: 0`` implies ``runAsNonRoot: false``: otherwise the
    kubelet refuses to start the container the admin allowed.
    """
    out = merge(DEFAULT_CONTAINER_SECURITY, override)
    if override and override.get("runAsUser") == 0 and "runAsNonRoot" not in override:
        out["runAsNonRoot"] = False
    return out


def pod_security(override: Mapping[str, Any] | None) -> dict[str, Any]:
    """The pod ``securityContext``: the restricted defaults, with the container's user.

    A step that runs as a given user (allowed) must not be refused by a pod-level
    ``runAsNonRoot`` it cannot see; the pod level follows the container's choice.
    """
    out = copy.deepcopy(DEFAULT_POD_SECURITY)
    if container_security(override).get("runAsNonRoot") is False:
        out["runAsNonRoot"] = False
    return out


# The Pod Security Standards' baseline: SELinux types a container may ask for
# (spc_t, "super privileged container", is unconfined), and the legacy annotations
# that still set a pod's AppArmor or seccomp profile: pod metadata is as much a
# way to leave the restricted profile as securityContext is.
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_ANNOTATIONS = ("seccomp.security.alpha.kubernetes.io/pod",
                       "container.seccomp.security.alpha.kubernetes.io/")

# securityContext fields and the JSON type the API server decodes them into: a
# wrong type ("0", "true") is refused at apply rather than when the Job is created.
_BOOLEANS = ("privileged", "runAsNonRoot", "allowPrivilegeEscalation",
             "readOnlyRootFilesystem")
_INTEGERS = ("runAsUser", "runAsGroup")
_OBJECTS = ("capabilities", "seccompProfile", "appArmorProfile", "seLinuxOptions",
            "windowsOptions")


def malformed(context: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(field, why) for securityContext fields of the wrong JSON type.

    Checked whatever the allowances: a string ``"0"`` is not root to this check but
    is not a UID either, and the API server would refuse every Job of the step.
    """
    if context is None:
        return []
    if not isinstance(context, Mapping):
        return [("securityContext", "must be an object")]
    out: list[tuple[str, str]] = []
    for name in _BOOLEANS:
        if name in context and not isinstance(context[name], bool):
            out.append((f"securityContext.{name}", "must be true or false"))
    for name in _INTEGERS:
        value = context.get(name)
        if name in context and (not isinstance(value, int) or isinstance(value, bool)):
            out.append((f"securityContext.{name}", "must be an integer"))
    for name in _OBJECTS:
        if name in context and not isinstance(context[name], Mapping):
            out.append((f"securityContext.{name}", "must be an object"))
    caps = context.get("capabilities")
    if isinstance(caps, Mapping):
        for name in ("add", "drop"):
            if name in caps and not (isinstance(caps[name], list)
                                     and all(isinstance(c, str) for c in caps[name])):
                out.append((f"securityContext.capabilities.{name}",
                            "must be a list of capability names"))
    return out


def annotation_violations(step: str | None,
                          annotations: Mapping[str, Any] | None) -> list[Violation]:
    """Pod annotations that set an unconfined AppArmor or seccomp profile."""
    found = []
    for key, value in (annotations or {}).items():
        field_ = f"podMetadata.annotations[{key}]"
        if key.startswith(APPARMOR_ANNOTATION) and not (
                value == "runtime/default" or str(value).startswith("localhost/")):
            found.append(Violation(step, field_, f"AppArmor profile {value!r} is not "
                                   "runtime/default or localhost/*"))
        elif key.startswith(SECCOMP_ANNOTATIONS) and not (
                value in ("runtime/default", "docker/default")
                or str(value).startswith("localhost/")):
            found.append(Violation(step, field_, f"seccomp profile {value!r} is not "
                                   "runtime/default or localhost/*"))
    return found


def violations(step: str | None, context: Mapping[str, Any] | None,
               annotations: Mapping[str, Any] | None = None) -> list[Violation]:
    """The settings of a step's ``securityContext`` (and pod annotations) that leave
    the restricted profile."""
    found: list[Violation] = annotation_violations(step, annotations)
    if not context or not isinstance(context, Mapping):
        return found

    def add(path: str, why: str) -> None:
        found.append(Violation(step, f"securityContext.{path}", why))

    if context.get("privileged") is True:
        add("privileged", "a privileged container has every capability of the node")
    user = context.get("runAsUser")
    if user == 0 or (isinstance(user, (int, float)) and not isinstance(user, bool)
                     and user < 0):
        add("runAsUser", "runs as root (UID 0)")
    if context.get("runAsNonRoot") is False:
        add("runAsNonRoot", "allows the container to run as root")
    if context.get("allowPrivilegeEscalation") is True:
        add("allowPrivilegeEscalation", "lets a process gain more privileges than its parent")
    caps = context.get("capabilities")
    if isinstance(caps, Mapping) and caps.get("add"):
        add("capabilities.add", f"adds capabilities {caps.get('add')!r}")
    elif caps is not None and not isinstance(caps, Mapping):
        add("capabilities", "must be an object with drop (and, when allowed, add)")
    if context.get("procMount") not in (None, "Default"):
        add("procMount", "an unmasked /proc exposes the host")
    for name in ("seccompProfile", "appArmorProfile"):
        profile = context.get(name)
        if isinstance(profile, Mapping) and profile.get("type") == "Unconfined":
            add(f"{name}.type", "Unconfined turns off the kernel's syscall filter")
    selinux = context.get("seLinuxOptions")
    if isinstance(selinux, Mapping):
        if selinux.get("type", "") not in SELINUX_TYPES:
            add("seLinuxOptions.type", f"SELinux type {selinux.get('type')!r} is not a "
                "container type (spc_t and others are unconfined)")
        for name in ("user", "role"):
            if selinux.get(name):
                add(f"seLinuxOptions.{name}", "a custom SELinux user or role may leave "
                    "the container's confinement")
    windows = context.get("windowsOptions")
    if isinstance(windows, Mapping) and windows.get("hostProcess") is True:
        add("windowsOptions.hostProcess", "runs in the host's namespaces")
    # The host's namespaces and volumes are pod fields a step cannot set; a step
    # that tries through securityContext finds them refused by name.
    for name in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if name in context:
            add(name, "the host's namespaces are not available to steps")
    return found


StepPod = tuple[str, Mapping[str, Any] | None, Mapping[str, Any] | None]
"""A run step's name, securityContext and pod annotations."""


def check_step_security(steps: list[StepPod],
                        service_account: str | None, namespace: str | None,
                        policy: SecurityPolicy) -> tuple[list[Violation], str | None]:
    """Privileged settings not allowed in ``namespace``, and a refused service account.

    Returns (violations, the service-account problem or None).
    """
    found: list[Violation] = []
    if namespace is None or namespace not in policy.privileged_namespaces:
        for name, context, annotations in steps:
            found += violations(name, context, annotations)
    account = None
    if service_account and service_account not in policy.runner_accounts:
        allowed = ", ".join(sorted(policy.runner_accounts)) or "none"
        account = (f"serviceAccountName {service_account!r} is not a runner account of this "
                   f"operator (allowed: {allowed}); use one of them, or ask the cluster "
                   "admin to add it (--runner-service-account, chart value "
                   "runner.serviceAccounts)")
    return found, account


def allowance_hint(namespace: str | None) -> str:
    """What to do about a privileged step: the message's second half."""
    where = f"namespace {namespace!r}" if namespace else "the Runbook's namespace"
    return (f"remove the setting, or ask the cluster admin to allow privileged steps in {where} "
            "(--allow-privileged-namespace, chart value security.privilegedNamespaces)")
