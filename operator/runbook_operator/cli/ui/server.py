"""The web view's aiohttp application and the ``kubectl runbook ui`` command.

Why it exists: it wires the checks of ``guard`` in front of every route (static
assets and event streams included), sets the security headers on every response,
serves the vendored assets from the package (no CDN: clusters are often
air-gapped), and runs on 127.0.0.1 on a free port unless told otherwise.

Order of the checks: a foreign ``Host`` (DNS rebinding) or ``Origin`` (CSRF) is
refused with 403 before the token is even looked at; then a missing or wrong
token is 401. The token is taken from the ``token`` query parameter (page,
assets, event streams: ``EventSource`` cannot send headers) or the
``X-Runbook-Token`` header (the page's actions).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import socket
import webbrowser
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TextIO

from aiohttp import web

from runbook_operator.cli import rest
from runbook_operator.cli.ui import actions, guard, streams
from runbook_operator.cli.ui.kube import Api
from runbook_operator.cli.ui.state import STATE, State

TOKEN_HEADER = "X-Runbook-Token"
MAX_BODY = 64 * 1024
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def asset(name: str) -> bytes:
    return resources.files("runbook_operator.cli.ui").joinpath("static", name).read_bytes()


def bundle_size() -> int:
    """Bytes of everything the browser loads: the page and its assets."""
    return sum(len(asset(name)) for name in ("index.html", *STATIC))


@web.middleware
async def checks(request: web.Request, handler: Handler) -> web.StreamResponse:
    allowed: frozenset[str] = request.app[STATE].hosts
    if not guard.host_ok(request.headers.get("Host"), allowed):
        return web.Response(status=403, text="refused: the Host header does not name this "
                                             "server (DNS rebinding?)\n")
    if not guard.origin_ok(request.headers.get("Origin"), allowed):
        return web.Response(status=403, text="refused: a request from another origin\n")
    given = request.headers.get(TOKEN_HEADER) or request.query.get("token")
    if not guard.token_ok(request.app[STATE].token, given):
        return web.Response(status=401, text="a valid token is required: open the URL "
                                             "`kubectl runbook ui` printed\n")
    if request.method == "POST" and request.headers.get(TOKEN_HEADER) is None:
        # Actions only from the page's fetch (a header a cross-site form cannot set).
        return web.Response(status=403, text=f"refused: actions need the {TOKEN_HEADER} "
                                             "header\n")
    try:
        return await handler(request)
    except actions.BadRequest as exc:
        return actions.reply(400, str(exc))


async def headers(request: web.Request, response: web.StreamResponse) -> None:
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)


async def index(request: web.Request) -> web.Response:
    token = html.escape(request.app[STATE].token, quote=True)
    page = asset("index.html").decode().replace("{{TOKEN}}", token)
    return web.Response(text=page, content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    return web.Response(body=asset(name), content_type=STATIC[name], charset="utf-8")


def valid_path(handler: Handler) -> Handler:
    """Refuse a namespace, name or step in the path that could not be one (so no
    path segment or selector of ours is ever made of anything else)."""
    async def checked(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        if not guard.namespace_name(info["namespace"]) or \
                not guard.object_name(info["name"]) or \
                ("step" in info and not guard.step_name(info["step"])):
            return actions.reply(400, "not a valid namespace, name or step")
        return await handler(request)
    return checked


def make_app(api: Api, namespace: str | None, token: str, hosts: frozenset[str]
             ) -> web.Application:
    app = web.Application(middlewares=[checks], client_max_size=MAX_BODY)
    app[STATE] = State(api, namespace, token, hosts)
    app.on_response_prepare.append(headers)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/whoami", actions.whoami)
    app.router.add_get("/api/runbooks", actions.runbooks)
    app.router.add_get("/api/stream/executions", streams.executions)
    app.router.add_get("/api/stream/circuits", streams.circuits)
    app.router.add_get("/api/stream/execution/{namespace}/{name}",
                       valid_path(streams.execution))
    app.router.add_get("/api/stream/logs/{namespace}/{name}/{step}", valid_path(streams.logs))
    app.router.add_post("/api/decide", actions.decide)
    app.router.add_post("/api/cancel", actions.cancel)
    app.router.add_post("/api/retry", actions.retry)
    app.router.add_post("/api/run", actions.run)

    async def close(app: web.Application) -> None:
        await api.close()
    app.on_cleanup.append(close)
    return app


def listen(address: str, port: int) -> socket.socket:
    """A listening socket on ``address`` (port 0: a free one chosen by the kernel)."""
    family, kind, proto, _, where = socket.getaddrinfo(
        address or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(where)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace, cluster: rest.Cluster, out: TextIO,
                err: TextIO) -> None:
    token = guard.new_token()
    address = args.address or "127.0.0.1"
    namespace = None if args.all_namespaces else cluster.namespace
    sock = listen(address, args.port)
    port = int(sock.getsockname()[1])
    app = make_app(Api(cluster), namespace, token, guard.allowed_hosts(address, port))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    shown = "127.0.0.1" if address in guard.WILDCARDS else guard.host_name(address)
    url = f"http://{shown}:{port}/?token={token}"
    if args.address and address not in ("127.0.0.1", "localhost", "::1"):
        print(f"kubectl-runbook: WARNING: serving on {address}, not only on this machine: "
              "anyone who can reach it and learns the URL acts as you", file=err, flush=True)
    scope = "all namespaces" if namespace is None else f"namespace {namespace}"
    print(f"Runbook web view ({scope}, as your kubeconfig's user); open:\n{url}\n"
          "Press Ctrl-C to stop.", file=out, flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def cmd_ui(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        cluster = rest.load(args.kubeconfig, args.namespace)
    except rest.ConfigError as exc:
        print(f"kubectl-runbook: {exc}", file=err)
        return 2
    try:
        asyncio.run(serve(args, cluster, out, err))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"kubectl-runbook: cannot serve: {exc}", file=err)
        return 2
    return 0
