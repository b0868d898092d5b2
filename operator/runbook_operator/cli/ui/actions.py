"""The web view's actions: approve or reject, cancel, retry from a step, run.

Why it exists: every button is the user's own API call, the same one the CLI makes
(``cli.cluster_commands``): an approval appends a decision recorded ``by`` the user
the API server authenticates (SelfSubjectReview), pinned to the resourceVersion
read; cancel sets ``spec.cancel``; retry creates the execution ``retry_body``
builds; run converts each value to its declared type with the CLI's ``convert``.
The API server's RBAC and the chart's admission policies judge them as they judge
the CLI, and a refusal comes back to the page with the API server's own message.

Request bodies are untrusted JSON: every field is checked (type, length, name
syntax) and a bad one is a 400 naming it, before any call to the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from runbook_operator.cli.cluster_commands import convert, retry_body
from runbook_operator.cli.inspect_commands import CommandError
from runbook_operator.cli.rest import ApiError, custom_path
from runbook_operator.cli.ui import guard, model
from runbook_operator.cli.ui.kube import Api, describe
from runbook_operator.cli.ui.state import STATE
from runbook_operator.cli.views import GROUP, VERSION

EXECUTIONS = "runbookexecutions"
MAX_COMMENT = 1024


class BadRequest(Exception):
    """A request body the page should never send: 400 with the reason."""


def reply(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": status < 300, "message": model.text(message, 2048),
                              **extra}, status=status)


def refused(exc: ApiError) -> web.Response:
    """The API server's refusal, passed on with its status (5xx when unreachable)."""
    status = exc.status if 400 <= exc.status < 600 else 502
    return reply(status, describe(exc))


async def read_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def field(body: Mapping[str, Any], key: str, check: Any = None, *, optional: bool = False,
          limit: int = 253) -> str | None:
    """A string field of the body, checked; ``None`` only when optional and absent."""
    value = body.get(key)
    if value is None or value == "":
        if optional:
            return None
        raise BadRequest(f"{key} is required")
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"{key} must be a string of at most {limit} characters")
    if check is not None and not check(value):
        raise BadRequest(f"{key} {value[:80]!r} is not a valid name")
    return value


def target(body: Mapping[str, Any]) -> tuple[str, str]:
    ns = field(body, "namespace", guard.namespace_name)
    name = field(body, "name", guard.object_name)
    assert ns is not None and name is not None
    return ns, name


def decision_patch(execution: Mapping[str, Any], step: str, decision: str, by: str,
                   comment: str | None) -> dict[str, Any]:
    """The CLI's approval patch: the decisions so far plus this one, at the version read
    (a concurrent change makes the API server refuse it rather than lose either)."""
    entry = {"step": step, "decision": decision, "by": by}
    if comment:
        entry["comment"] = comment
    approvals = [*((execution.get("spec") or {}).get("approvals") or []), entry]
    return {"metadata": {"resourceVersion": execution["metadata"]["resourceVersion"]},
            "spec": {"approvals": approvals}}


async def decide(request: web.Request) -> web.Response:
    api: Api = request.app[STATE].api
    body = await read_body(request)
    ns, name = target(body)
    step = field(body, "step", guard.step_name)
    decision = body.get("decision")
    if decision not in ("Approve", "Reject"):
        raise BadRequest("decision must be Approve or Reject")
    comment = field(body, "comment", optional=True, limit=MAX_COMMENT)
    assert step is not None
    try:
        execution = await api.get(custom_path(EXECUTIONS, ns, name))
        by = await api.whoami()
        steps = (execution.get("status") or {}).get("steps") or {}
        if (steps.get(step) or {}).get("phase") != "WaitingForApproval":
            waiting = [n for n, s in steps.items() if (s or {}).get("phase") ==
                       "WaitingForApproval"]
            return reply(409, f"step {step!r} is not waiting for approval "
                              f"(waiting: {', '.join(waiting) or 'none'})")
        await api.merge_patch(custom_path(EXECUTIONS, ns, name),
                              decision_patch(execution, step, decision, by, comment))
    except ApiError as exc:
        done = "approved" if decision == "Approve" else "rejected"
        response = refused(exc)
        return reply(response.status, f"{name}: step {step} not {done}: {describe(exc)}")
    done = "approved" if decision == "Approve" else "rejected"
    return reply(200, f"{name}: step {step} {done} by {by}")


async def cancel(request: web.Request) -> web.Response:
    api: Api = request.app[STATE].api
    ns, name = target(await read_body(request))
    try:
        await api.merge_patch(custom_path(EXECUTIONS, ns, name), {"spec": {"cancel": True}})
    except ApiError as exc:
        return refused(exc)
    return reply(200, f"{name}: cancel requested")


async def retry(request: web.Request) -> web.Response:
    api: Api = request.app[STATE].api
    body = await read_body(request)
    ns, name = target(body)
    from_step = field(body, "from", guard.step_name, optional=True)
    try:
        source = await api.get(custom_path(EXECUTIONS, ns, name))
        created = await api.post(custom_path(EXECUTIONS, ns),
                                 retry_body(source, from_step, None))
    except ApiError as exc:
        return refused(exc)
    new = str(created["metadata"]["name"])
    return reply(201, f"runbookexecution.{GROUP}/{new} created", namespace=ns, name=new)


def run_params(declared: list[Any], given: Any) -> dict[str, Any]:
    """The form's values (strings) as the declared types; empty optional ones omitted
    so that the runbook's default applies. Unknown names are refused."""
    if not isinstance(given, dict):
        raise BadRequest("params must be a JSON object")
    schema = {str(p.get("name")): p for p in declared if isinstance(p, dict)}
    params: dict[str, Any] = {}
    for key, value in given.items():
        if key not in schema:
            raise BadRequest(f"the runbook has no parameter {str(key)[:80]!r}")
        if not isinstance(value, str) or len(value) > 65536:
            raise BadRequest(f"parameter {key!r} must be a string from the form")
        if value == "":
            continue
        try:
            params[key] = convert(schema[key], key, value)
        except CommandError as exc:
            raise BadRequest(str(exc)) from None
    return params


async def run(request: web.Request) -> web.Response:
    api: Api = request.app[STATE].api
    body = await read_body(request)
    ns, name = target(body)
    try:
        runbook = await api.get(custom_path("runbooks", ns, name))
        params = run_params((runbook.get("spec") or {}).get("params") or [],
                            body.get("params") or {})
        created = await api.post(custom_path(EXECUTIONS, ns), {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"generateName": f"{name}-"},
            "spec": {"runbookRef": {"name": name}, "params": params,
                     "triggeredBy": {"kind": "Manual"}}})
    except ApiError as exc:
        return refused(exc)
    new = str(created["metadata"]["name"])
    return reply(201, f"runbookexecution.{GROUP}/{new} created", namespace=ns, name=new)


async def runbooks(request: web.Request) -> web.Response:
    """The runbooks in scope with their run forms (read once per visit: they rarely
    change during an incident, and the page says when a run is refused)."""
    api: Api = request.app[STATE].api
    namespace: str | None = request.app[STATE].namespace
    try:
        items = (await api.get(custom_path("runbooks", namespace))).get("items") or []
    except ApiError as exc:
        return refused(exc)
    return web.json_response({"ok": True, "runbooks": [model.runbook_row(r) for r in items]})


async def whoami(request: web.Request) -> web.Response:
    api: Api = request.app[STATE].api
    try:
        user = await api.whoami()
    except ApiError as exc:
        return refused(exc)
    return web.json_response({"ok": True, "user": model.text(user, 256),
                              "namespace": request.app[STATE].namespace or "",
                              "allNamespaces": request.app[STATE].namespace is None})
