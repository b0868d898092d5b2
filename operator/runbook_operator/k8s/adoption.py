"""Whether a Job found under a step's name is one the operator would have built.

Why: a step's Job name is predictable (``<execution>-<step>-<attempt>``) and the
execution's uid is readable by anyone who may read the run. Whoever may create Jobs
in the namespace (every Runbook author, by design) can create that Job first, with
the run as its controlling owner and another image or command, and its ending would
be read as the step's outcome and outputs. The operator adopts a Job it did not
create in this pass (a 409 at create, or a Job newer than a lost status write) only
if the Job matches, field by field, the manifest it would build now for that step
and attempt, tolerating only what the API server and the Job controller add by
default. The admission policy ``step-jobs.runbooks.dev`` refuses such Jobs first;
this check is for clusters without it.

Pure: two manifests in (the built one, the observed one as JSON), one reason out.
What is compared is a projection of every field that decides what runs, as whom,
with what inputs, where its outcome is read from, and how the Job counts success;
resources, TTL, image pull policy and scheduling hints are not.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from runbook_operator.api.common import GROUP

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
"""The W3C carrier the operator adds when tracing is on (it may be off after a restart)."""

JOB_CONTROLLER_LABELS = frozenset({
    "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
    "controller-uid", "job-name"})
"""Labels the Job controller adds to a Job's pod template."""

JOB_FIELDS: dict[str, Any] = {
    # field: the API server's default (None: no default)
    "backoffLimit": 6, "activeDeadlineSeconds": None, "completions": 1, "parallelism": 1,
    "completionMode": "NonIndexed", "podFailurePolicy": None, "successPolicy": None,
    "backoffLimitPerIndex": None, "maxFailedIndexes": None, "manualSelector": False,
    "suspend": False, "managedBy": None,  # another controller would write its status
}
POD_FIELDS: dict[str, Any] = {
    "containers": None, "initContainers": None, "ephemeralContainers": None,
    "volumes": None, "securityContext": None, "serviceAccountName": None,
    "automountServiceAccountToken": None, "hostNetwork": False, "hostPID": False,
    "hostIPC": False, "hostUsers": None, "shareProcessNamespace": None,
    "hostAliases": None, "dnsPolicy": "ClusterFirst", "dnsConfig": None, "nodeName": None,
    "runtimeClassName": None, "restartPolicy": "Always", "os": None,
    "schedulingGates": None,  # a staged Job's (engine.staging)
}
CONTAINER_FIELDS: dict[str, Any] = {
    "name": None, "image": None, "command": None, "args": None, "workingDir": None,
    "env": None, "envFrom": None, "volumeMounts": None, "volumeDevices": None,
    "securityContext": None, "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File", "lifecycle": None, "startupProbe": None,
    "livenessProbe": None, "readinessProbe": None, "stdin": False, "stdinOnce": False,
    "tty": False, "restartPolicy": None,
}


def owned_by_execution(job: Mapping[str, Any], uid: str | None) -> bool:
    """Whether ``job``'s controller is the RunbookExecution whose uid is ``uid``.

    The same bar the operator sets for its own (``owner_reference``): a reference
    that is no controller, or to another kind with the same uid, is not the run's.
    """
    if not uid:
        return False
    return any(o.get("controller") is True and o.get("kind") == "RunbookExecution"
               and str(o.get("apiVersion", "")).split("/", 1)[0] == GROUP
               and o.get("uid") == uid
               for o in (job.get("metadata") or {}).get("ownerReferences") or [])


def params_secret_in(job: Mapping[str, Any], prefix: str) -> str | None:
    """The params Secret a Job reads, when its name is one the operator's ``generateName``
    gives (``prefix`` and five characters).

    The Secret is created before the Jobs that read it and recorded in the status
    written after them: when that write was lost, the status names no Secret (or a
    newer one) while the Job names the one its pass created. Only a name of that form
    is taken, so a Job reading some other Secret still mismatches.
    """
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            name = ref.get("name")
            if isinstance(name, str) and name.startswith(prefix) and \
                    re.fullmatch(r"[a-z0-9]{5}", name[len(prefix):]):
                return name
    return None


def foreign_reason(expected: Mapping[str, Any], observed: Mapping[str, Any],
                   secret_prefix: str | None = None) -> str | None:
    """Why ``observed`` is not the Job ``expected`` (the operator's build); None if it is.

    The first differing field, as ``path: observed instead of expected``. With
    ``secret_prefix`` (the params Secret's ``generateName``), the params Secret the
    observed Job reads may be another one of that form (``params_secret_in``).
    """
    found = params_secret_in(observed, secret_prefix) if secret_prefix else None
    if found is not None and secret_prefix is not None:
        expected = _with_secret(expected, secret_prefix, found)
    want, got = _flat(projection(expected)), _flat(projection(observed))
    for path in sorted(set(want) | set(got)):
        if want.get(path) != got.get(path):
            return (f"{path}: {_show(got.get(path))} instead of "
                    f"{_show(want.get(path))}")
    return None


def _with_secret(job: Mapping[str, Any], prefix: str, name: str) -> dict[str, Any]:
    """``job`` reading its params from the Secret ``name`` (refs to ``prefix*`` only)."""
    out: dict[str, Any] = copy.deepcopy(dict(job))
    pod = ((out.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if isinstance(ref, dict) and str(ref.get("name", "")).startswith(prefix):
                ref["name"] = name
    return out


def projection(job: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Job that are compared, with API server defaults removed."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    pod = template.get("spec") or {}
    out: dict[str, Any] = {"metadata.name": meta.get("name")}
    out["spec"] = _pick(spec, JOB_FIELDS)
    out["template.annotations"] = dict(tmeta.get("annotations") or {})
    out["template.labels"] = {k: v for k, v in (tmeta.get("labels") or {}).items()
                              if k not in JOB_CONTROLLER_LABELS}
    pod_out = _pick(pod, POD_FIELDS)
    if pod.get("serviceAccount") not in (None, "", pod.get("serviceAccountName")):
        pod_out["serviceAccount"] = pod["serviceAccount"]  # the deprecated alias, set apart
    for kind in ("containers", "initContainers", "ephemeralContainers"):
        if kind in pod_out:
            pod_out[kind] = {f"{i}:{c.get('name')}": _container(c)
                             for i, c in enumerate(pod.get(kind) or [])}
    out["pod"] = pod_out
    pruned: dict[str, Any] = _prune(out)
    return pruned


def _container(container: Mapping[str, Any]) -> dict[str, Any]:
    out = _pick(container, CONTAINER_FIELDS)
    env: dict[str, Any] = {}
    for entry in container.get("env") or []:
        name = str(entry.get("name"))
        value = entry.get("value")
        if name == "TRACEPARENT" and isinstance(value, str) and TRACEPARENT.match(value) \
                and not entry.get("valueFrom"):
            continue  # tracing may be on in one process and off in the next
        key = name
        while key in env:  # a duplicate name (the last one wins in the kubelet)
            key += "+"
        env[key] = {"value": value or None, "valueFrom": _value_from(entry.get("valueFrom"))}
    if env:
        out["env"] = env
    return out


def _value_from(source: Any) -> Any:
    if not isinstance(source, Mapping):
        return source
    field_ref = source.get("fieldRef")
    if isinstance(field_ref, Mapping) and not field_ref.get("apiVersion"):
        source = {**source, "fieldRef": {**field_ref, "apiVersion": "v1"}}
    return source


def _pick(obj: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The listed fields of ``obj`` that are set and differ from their default."""
    return {k: obj[k] for k, default in fields.items()
            if k in obj and obj[k] is not None and obj[k] != default}


def _prune(value: Any) -> Any:
    """Empty strings, lists and objects are the same as absent (the API omits them)."""
    if isinstance(value, Mapping):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """Leaves by dotted path (lists by index), for the first difference's name."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(_flat(v, f"{path}[{i}]"))
        return out
    return {path: value}


def _show(value: Any) -> str:
    text = "(absent)" if value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
