"""What the web view shows of the cluster's objects: plain, JSON-ready view models.

Why it exists: the browser must never decide what is secret, and must never get a
value it should not display. Everything a page shows goes through here first, as
plain dicts of strings and numbers: secret parameters (``secret: true`` in the
frozen runbook, or the live one) are replaced by the marker, other values go
through the operator's redactor (``engine.redact``) like its logs and Events, and
long texts are cut. Pure: time is passed in; unit- and property-tested.
The browser renders every string here as text (``textContent``), never as HTML.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from runbook_operator.cli import views
from runbook_operator.engine.redact import REDACTED, redact, redact_text
from runbook_operator.engine.severity import severity_of

MAX_TEXT = 4096
"""Longest string sent to the page (a status message is at most 4 KiB)."""


def _get(value: Any, *path: str) -> Any:
    return views._get(value, *path)


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    """``value`` if it is a list, else empty (a field of the wrong type shows nothing)."""
    return value if isinstance(value, list) else []


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """Any value as a redacted string of at most ``limit`` characters."""
    if value is None:
        return ""
    raw = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                          ensure_ascii=False, default=str)
    cut = redact_text(raw)
    return cut if len(cut) <= limit else cut[: limit - 1] + "…"


def _safely(function: Any, *args: Any) -> Any:
    """The CLI's formatter on an object of any shape; empty if it cannot (a field of
    the wrong type must not take the page down)."""
    try:
        return function(*args)
    except (TypeError, ValueError, AttributeError, KeyError):
        return ""


def secret_names(*specs: Any) -> frozenset[str]:
    """Names of the parameters declared ``secret: true`` in any of the runbook specs."""
    names: set[str] = set()
    for spec in specs:
        for param in _list(_get(spec, "params")) if isinstance(spec, Mapping) else []:
            if isinstance(param, Mapping) and param.get("secret") is True:
                names.add(str(param.get("name")))
    return frozenset(names)


def redacted_params(params: Any, secret: frozenset[str]) -> dict[str, str]:
    """Each parameter's value as text; secret ones (and sensitive keys) redacted."""
    if not isinstance(params, Mapping):
        return {}
    shown = redact({str(k): v for k, v in params.items()})
    return {str(k): REDACTED if k in secret else text(v, 512) for k, v in shown.items()}


def execution_row(body: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One line of the executions list."""
    spec, status = _map(body.get("spec")), _map(body.get("status"))
    return {
        "namespace": text(_get(body, "metadata", "namespace"), 253),
        "name": text(_get(body, "metadata", "name"), 253),
        "runbook": text(_get(spec, "runbookRef", "name"), 253),
        "phase": text(status.get("phase") or "Pending", 64),
        "progress": text(status.get("progress"), 64),
        "severity": text(severity_of(spec), 64),
        "trigger": text(_safely(views.trigger_of, spec), 64),
        "started": text(status.get("startedAt"), 64),
        "age": _safely(views.age, body, now),
        "resourceVersion": text(_get(body, "metadata", "resourceVersion"), 64),
    }


def _approval(step: Mapping[str, Any]) -> dict[str, Any]:
    approvers = _map(_map(step.get("approval")).get("approvers"))
    return {"users": [text(u, 256) for u in _list(approvers.get("users"))],
            "groups": [text(g, 256) for g in _list(approvers.get("groups"))]}


def step_view(step: Mapping[str, Any], st: Mapping[str, Any], deps: list[str],
              is_finally: bool, now: datetime) -> dict[str, Any]:
    """One node of the DAG: what it is, where it stands, and why."""
    kind = str(step.get("type") or "run")
    policy = _map(step.get("circuit")).get("policy")
    view: dict[str, Any] = {
        "name": text(step.get("name"), 63),
        "type": text(kind, 32),
        "deps": [text(d, 63) for d in deps],
        "finally": is_finally,
        "phase": text(st.get("phase") or "Pending", 64),
        "attempts": st.get("attempts") if isinstance(st.get("attempts"), int) else 0,
        "reason": text(st.get("reason"), 256),
        "message": text(st.get("message"), 1024),
        "exitCode": st.get("exitCode") if isinstance(st.get("exitCode"), int) else None,
        "outputs": text(st.get("outputs")) if st.get("outputs") is not None else "",
        "circuit": text(st.get("circuit") or policy, 256),
        "circuitTrial": st.get("circuitTrial") is True,
        "duration": _safely(lambda: views.human_duration(views.span(
            st.get("startedAt"), st.get("finishedAt"), now))),
        "nextAttemptAt": text(st.get("nextAttemptAt"), 64),
        "when": text(step.get("when"), 256),
    }
    if kind == "approval":
        view["approvers"] = _approval(step)
    return view


def layers(steps: list[dict[str, Any]]) -> list[list[str]]:
    """Steps by depth in the DAG (0: no dependencies), for drawing columns.

    Unknown dependencies are ignored; a cycle (a runbook the validator refused)
    degrades to the declared order instead of looping.
    """
    names = [s["name"] for s in steps]
    order = views.topological([(s["name"], s["deps"]) for s in steps])
    known = set(names)
    depth: dict[str, int] = {}
    for name in order:
        deps = next(s["deps"] for s in steps if s["name"] == name)
        depth[name] = 1 + max((depth[d] for d in deps if d in known and d in depth),
                              default=-1)
    result: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for name in names:
        result[depth[name]].append(name)
    return result


def execution_view(body: Mapping[str, Any], live_spec: Mapping[str, Any] | None,
                   now: datetime) -> dict[str, Any]:
    """Everything the execution page shows, computed from the object alone (plus the
    live Runbook's spec while the run has no frozen copy yet)."""
    spec, status = _map(body.get("spec")), _map(body.get("status"))
    frozen = status.get("runbookSpec")
    rb_spec: Mapping[str, Any] = frozen if isinstance(frozen, Mapping) else \
        (live_spec if isinstance(live_spec, Mapping) else {})
    secret = secret_names(rb_spec, live_spec)
    found = status.get("steps")
    states: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    steps = []
    for is_finally, key in ((False, "steps"), (True, "finally")):
        for step in _list(rb_spec.get(key)):
            if not isinstance(step, Mapping):
                continue
            name = str(step.get("name"))
            deps = [str(d) for d in _list(step.get("dependsOn"))] if not is_finally else []
            st = states.get(name)
            steps.append(step_view(step, st if isinstance(st, Mapping) else {}, deps,
                                   is_finally, now))
    main = [s for s in steps if not s["finally"]]
    finals = [s["name"] for s in steps if s["finally"]]
    header = [(k, text(v, 512)) for k, v in _safely(views.header_lines, {
        **body, "spec": {**spec, "params": {}}, "status": status}, now) or
        [("Name", _get(body, "metadata", "name")), ("Phase", status.get("phase"))]]
    return {
        "namespace": text(_get(body, "metadata", "namespace"), 253),
        "name": text(_get(body, "metadata", "name"), 253),
        "runbook": text(_get(spec, "runbookRef", "name"), 253),
        "phase": text(status.get("phase") or "Pending", 64),
        "finished": status.get("phase") in views.FINISHED,
        "cancelRequested": spec.get("cancel") is True,
        "header": header,
        "params": redacted_params(spec.get("params"), secret),
        "steps": steps,
        "layers": layers(main) + ([finals] if finals else []),
        "history": [history_row(h) for h in _list(status.get("history"))
                    if isinstance(h, Mapping)],
        "approvals": [{"step": text(a.get("step"), 63), "decision": text(a.get("decision"), 16),
                       "by": text(a.get("by"), 256), "comment": text(a.get("comment"), 1024)}
                      for a in _list(spec.get("approvals")) if isinstance(a, Mapping)],
        "waiting": [s["name"] for s in steps if s["phase"] == "WaitingForApproval"],
    }


def history_row(entry: Mapping[str, Any]) -> dict[str, str]:
    return {"time": text(entry.get("time"), 64), "event": text(entry.get("event"), 64),
            "step": text(entry.get("step"), 63), "message": text(entry.get("message"), 512)}


def event_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """One Kubernetes Event of an execution."""
    when = event.get("lastTimestamp") or event.get("eventTime") or \
        _get(event, "metadata", "creationTimestamp")
    return {"uid": text(_get(event, "metadata", "uid"), 64), "time": text(when, 64),
            "type": text(event.get("type"), 32), "reason": text(event.get("reason"), 128),
            "message": text(event.get("message"), 1024),
            "count": event.get("count") if isinstance(event.get("count"), int) else 1}


def param_field(param: Mapping[str, Any]) -> dict[str, Any]:
    """One input of the run form, from a parameter's schema."""
    secret = param.get("secret") is True
    default = param.get("default")
    return {"name": text(param.get("name"), 63),
            "type": text(param.get("type") or "string", 16),
            "description": text(param.get("description"), 1024),
            "required": param.get("required") is True and default is None,
            "secret": secret,
            "default": "" if default is None else (REDACTED if secret else
                                                    default if isinstance(default, str)
                                                    else json.dumps(default)),
            "enum": [e if isinstance(e, str) else json.dumps(e)
                     for e in _list(param.get("enum"))][:64],
            "pattern": text(param.get("pattern"), 256)}


def runbook_row(body: Mapping[str, Any]) -> dict[str, Any]:
    """A runbook with its run form's fields."""
    ready = next((c for c in _list(_get(body, "status", "conditions"))
                  if isinstance(c, Mapping) and c.get("type") == "Ready"), {})
    params = _list(_get(body, "spec", "params"))
    return {"namespace": text(_get(body, "metadata", "namespace"), 253),
            "name": text(_get(body, "metadata", "name"), 253),
            "ready": ready.get("status") == "True",
            "reason": text(ready.get("reason"), 128),
            "message": text(ready.get("message"), 1024),
            "description": text(_get(body, "spec", "description"), 1024),
            "params": [param_field(p) for p in params if isinstance(p, Mapping)]}


def circuit_rows(policies: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every circuit of every CircuitPolicy (a policy with none gets one row)."""
    rows = []
    for policy in policies:
        base = {"namespace": text(_get(policy, "metadata", "namespace"), 253),
                "policy": text(_get(policy, "metadata", "name"), 253),
                "mode": text(_get(policy, "spec", "mode") or "Normal", 32)}
        circuits = [c for c in _list(_get(policy, "status", "circuits"))
                    if isinstance(c, Mapping)]
        if not circuits:
            rows.append({**base, "key": "", "state": "", "failureRate": "", "calls": "",
                         "openedAt": "", "nextAttemptAt": ""})
        for c in circuits:
            rate = c.get("failureRate")
            rows.append({**base, "key": text(c.get("key"), 256),
                         "state": text(c.get("state") or "Closed", 32),
                         "failureRate": f"{rate:.0f}%" if isinstance(rate, int | float) else "",
                         "calls": str(c.get("calls") if isinstance(c.get("calls"), int) else 0),
                         "openedAt": text(c.get("openedAt"), 64),
                         "nextAttemptAt": text(c.get("nextAttemptAt"), 64)})
    return rows
