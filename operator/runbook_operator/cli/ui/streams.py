"""Live updates for the web view: the watch API relayed as server-sent events.

Why it exists: the pages must follow the cluster as it changes, never poll it.
Each stream lists the objects once, then watches from that resourceVersion and
relays every change as an SSE message carrying a view model (``model``), so the
browser never sees a raw object. A watch the server ends is reopened where it
left off; a 410 Gone lists again (the page gets a fresh ``sync``). A client that
goes away ends the stream at the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from runbook_operator.cli import views
from runbook_operator.cli.rest import ApiError, custom_path
from runbook_operator.cli.ui import model
from runbook_operator.cli.ui.kube import Api, describe
from runbook_operator.cli.ui.state import STATE
from runbook_operator.engine.names import label_value

WATCH_SECONDS = 240
HEARTBEAT_SECONDS = 15.0


def now() -> datetime:
    return datetime.now(UTC)


async def open_sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    return response


async def send(response: web.StreamResponse, event: str, data: Any) -> None:
    """One SSE message; ``json.dumps`` escapes newlines, so the data is one line."""
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


async def list_then_watch(api: Api, path: str, **query: Any
                          ) -> AsyncIterator[tuple[str, Any]]:
    """``("SYNC", items)`` then ``(type, object)`` for every change, forever."""
    while True:
        listed = await api.get(path, **query)
        yield "SYNC", listed.get("items") or []
        version = views._get(listed, "metadata", "resourceVersion")
        while version:
            opened = asyncio.get_running_loop().time()
            try:
                async for line in api.lines(path, watch="1", resourceVersion=version,
                                            allowWatchBookmarks="true",
                                            timeoutSeconds=WATCH_SECONDS, **query):
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone: list again
                        version = None
                        break
                    version = views._get(obj, "metadata", "resourceVersion") or version
                    if kind != "BOOKMARK":
                        yield str(kind), obj
            except ApiError as exc:
                if exc.status not in (0, 410):
                    raise
                version = None if exc.status == 410 else version
            if asyncio.get_running_loop().time() - opened < 1:
                await asyncio.sleep(1)  # a server that ends watches at once: no busy loop


Render = Callable[[web.StreamResponse, str, str, Any], Awaitable[None]]
"""Writes one change (the source's tag, the change's type, the object) as SSE."""


Source = Callable[[], AsyncIterator[tuple[str, Any]]]
"""Opens a watch (``list_then_watch`` with its arguments) afresh."""


async def relay(request: web.Request, sources: dict[str, Source], render: Render
                ) -> web.StreamResponse:
    """Merge several watches into one SSE response, with heartbeats, until the client
    goes away. An API refusal or an unreachable API server becomes an ``error``
    message naming it, and that watch is opened again after a pause (doubling up to
    30 s): rights granted meanwhile, or a server back, show up without a reload."""
    response = await open_sse(request)
    queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()

    async def pump(tag: str, source: Source) -> None:
        pause = 1.0
        while True:
            try:
                async for kind, obj in source():
                    pause = 1.0
                    await queue.put((tag, kind, obj))
            except ApiError as exc:
                await queue.put((tag, "API_ERROR", describe(exc)))
            await asyncio.sleep(pause)
            pause = min(30.0, pause * 2)

    tasks = [asyncio.create_task(pump(tag, source)) for tag, source in sources.items()]
    try:
        while True:
            try:
                tag, kind, obj = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if kind == "API_ERROR":
                await send(response, "error", {"source": tag,
                                               "message": model.text(obj, 1024)})
                continue
            await render(response, tag, kind, obj)
    except ConnectionResetError:  # the page went away
        pass
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return response


# --- pages -------------------------------------------------------------------------------


async def executions(request: web.Request) -> web.StreamResponse:
    """The executions list of the namespace the UI was started for (or all)."""
    api: Api = request.app[STATE].api
    namespace: str | None = request.app[STATE].namespace

    async def render(response: web.StreamResponse, tag: str, kind: str, obj: Any) -> None:
        if kind == "SYNC":
            await send(response, "sync", [model.execution_row(o, now()) for o in obj])
        elif kind == "DELETED":
            await send(response, "delete", model.execution_row(obj, now()))
        else:
            await send(response, "upsert", model.execution_row(obj, now()))

    return await relay(request, {"executions": lambda: list_then_watch(
        api, custom_path("runbookexecutions", namespace))}, render)


async def execution(request: web.Request) -> web.StreamResponse:
    """One execution, its DAG and history, and its Events."""
    api: Api = request.app[STATE].api
    ns, name = request.match_info["namespace"], request.match_info["name"]
    live: dict[str, Any] = {}

    async def view(body: dict[str, Any]) -> dict[str, Any]:
        if not views._get(body, "status", "runbookSpec") and "spec" not in live:
            ref = views._get(body, "spec", "runbookRef", "name")
            try:
                live["spec"] = (await api.get(custom_path("runbooks", ns, str(ref)))).get("spec")
            except ApiError:
                live["spec"] = None
        return model.execution_view(body, live.get("spec"), now())

    async def render(response: web.StreamResponse, tag: str, kind: str, obj: Any) -> None:
        if tag == "events":
            for event in obj if kind == "SYNC" else [] if kind == "DELETED" else [obj]:
                await send(response, "event", model.event_row(event))
        elif (kind == "SYNC" and not obj) or kind == "DELETED":
            await send(response, "missing", {"name": model.text(name, 253)})
        else:
            for body in obj if kind == "SYNC" else [obj]:
                await send(response, "execution", await view(body))

    return await relay(request, {
        "execution": lambda: list_then_watch(api, custom_path("runbookexecutions", ns),
                                             fieldSelector=f"metadata.name={name}"),
        "events": lambda: list_then_watch(api, f"/api/v1/namespaces/{ns}/events",
                                          fieldSelector=f"involvedObject.name={name},"
                                                        "involvedObject.kind=RunbookExecution")},
        render)


async def circuits(request: web.Request) -> web.StreamResponse:
    """Every circuit of every CircuitPolicy in scope, live."""
    api: Api = request.app[STATE].api
    namespace: str | None = request.app[STATE].namespace
    policies: dict[str, Any] = {}

    async def render(response: web.StreamResponse, tag: str, kind: str, obj: Any) -> None:
        if kind == "SYNC":
            policies.clear()
            policies.update({views._get(o, "metadata", "uid"): o for o in obj})
        elif kind == "DELETED":
            policies.pop(views._get(obj, "metadata", "uid"), None)
        else:
            policies[views._get(obj, "metadata", "uid")] = obj
        await send(response, "circuits", model.circuit_rows(policies.values()))

    return await relay(request, {"circuits": lambda: list_then_watch(
        api, custom_path("circuitpolicies", namespace))}, render)


async def logs(request: web.Request) -> web.StreamResponse:
    """A step's pod logs, every attempt, followed while the pod runs."""
    api: Api = request.app[STATE].api
    ns, name = request.match_info["namespace"], request.match_info["name"]
    step = request.match_info["step"]
    response = await open_sse(request)
    try:
        body = await api.get(custom_path("runbookexecutions", ns, name))
        st = views._get(body, "status", "steps", step) or {}
        count = st.get("attempts")
        attempts = count if isinstance(count, int) else 0
        if not attempts:
            await send(response, "note", {"text": f"{step}: no attempt has run yet: no pod, "
                                                  "no logs"})
        for attempt in range(1, attempts + 1):
            selector = (f"runbooks.dev/execution={label_value(name)},"
                        f"runbooks.dev/step={step},runbooks.dev/attempt={attempt}")
            pods = (await api.get(f"/api/v1/namespaces/{ns}/pods",
                                  labelSelector=selector)).get("items") or []
            if not pods:
                await send(response, "note", {"text": f"{step}/{attempt}: the pod is gone"})
            for pod in pods:
                pod_name = str(views._get(pod, "metadata", "name"))
                try:
                    async for raw in api.lines(f"/api/v1/namespaces/{ns}/pods/{pod_name}/log",
                                               follow="true"):
                        await send(response, "line", {
                            "attempt": attempt,
                            "text": model.text(raw.decode("utf-8", "replace").rstrip("\n"))})
                except ApiError as exc:
                    await send(response, "note", {"text": model.text(
                        f"{step}/{attempt}: pod {pod_name}: logs unavailable: {describe(exc)}",
                        1024)})
        await send(response, "end", {})
    except ApiError as exc:
        await send(response, "error", {"message": model.text(describe(exc), 1024)})
    except ConnectionResetError:
        pass
    return response
