"""The web view's HTTP front (cli/ui/server.py) on a real socket, no cluster needed.

Cases: no token, a wrong one or one in the wrong place is 401 on every route
(page, assets, event streams, actions); a foreign Host (DNS rebinding) or Origin
(CSRF) is 403 even with the token; an action without the token header (a cross-site
form) is 403; every response, refusals included, carries the strict CSP and the
other security headers; the page has no inline script or style and loads its
assets from this server only; a hostile name in a stream's path or an action's
body is a 400 naming the problem before any call to the API server (here there is
none to call); the bundle size is what the assets weigh; the command binds
127.0.0.1 on a free port and prints a URL with the token, and warns on stderr when
``--address`` binds more (a wildcard then admits any IP literal in Host, never a
DNS name).
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from runbook_operator.cli.rest import Cluster
from runbook_operator.cli.ui import guard, server
from runbook_operator.cli.ui.kube import Api

TOKEN = guard.new_token()
ROUTES = ["/", "/static/app.js", "/static/app.css", "/api/whoami", "/api/runbooks",
          "/api/stream/executions", "/api/stream/circuits",
          "/api/stream/execution/ops/run-1", "/api/stream/logs/ops/run-1/probe"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def served(check: Callable[[TestClient[Any, Any], str], Awaitable[None]]) -> None:
    async def main() -> None:
        port = free_port()
        # An API server nobody listens on: these requests must never reach it.
        api = Api(Cluster(server=f"http://127.0.0.1:{free_port()}"))
        app = server.make_app(api, "ops", TOKEN, guard.allowed_hosts("127.0.0.1", port))
        async with TestClient(TestServer(app, host="127.0.0.1", port=port)) as client:
            await check(client, f"127.0.0.1:{port}")
    asyncio.run(main())


def test_every_route_needs_the_token() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        for path in ROUTES:
            for query in ("", "?token=", f"?token={TOKEN[:-1]}", f"?tok={TOKEN}"):
                response = await client.get(path + query)
                assert response.status == 401, (path, query)
                assert "token is required" in await response.text()
        for path in ("/api/decide", "/api/cancel", "/api/retry", "/api/run"):
            response = await client.post(path, json={})
            assert response.status == 401, path
    served(check)


def test_foreign_host_or_origin_is_refused_even_with_the_token() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        port = host.split(":")[1]
        for path in ROUTES:
            for bad in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port}.evil",
                        f"localhost.evil.example:{port}"):
                response = await client.get(f"{path}?token={TOKEN}", headers={"Host": bad})
                assert response.status == 403, (path, bad)
                assert "Host" in await response.text()
        for origin in ("http://evil.example", "null", f"https://{host}"):
            response = await client.post("/api/cancel", json={"namespace": "ops",
                                                              "name": "run-1"},
                                         headers={"Origin": origin,
                                                  server.TOKEN_HEADER: TOKEN})
            assert response.status == 403, origin
            assert "another origin" in await response.text()
    served(check)


def test_actions_need_the_token_header_not_just_the_query() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        response = await client.post(f"/api/cancel?token={TOKEN}", data="namespace=ops",
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"})
        assert response.status == 403
        assert server.TOKEN_HEADER in await response.text()
    served(check)


def test_security_headers_on_every_response_refusals_included() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        for path in ("/", f"/?token={TOKEN}", f"/static/app.js?token={TOKEN}",
                     f"/static/nope.js?token={TOKEN}"):
            response = await client.get(path)
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["X-Frame-Options"] == "DENY"
    served(check)


def test_the_page_has_no_inline_script_and_loads_only_its_own_assets() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        response = await client.get(f"/?token={TOKEN}")
        assert response.status == 200
        page = await response.text()
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
        assert scripts and all('src="/static/' in attrs and not body.strip()
                               for attrs, body in scripts)
        assert "<style" not in page and " on" not in page.replace("content=", "")
        assert "//" not in re.sub(r"<!--.*?-->", "", page).replace("http-equiv", "")
        js = await (await client.get(f"/static/app.js?token={TOKEN}")).text()
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js
        assert "eval(" not in js and "document.write" not in js
        assert "http://" not in js and "https://" not in js
        for name in server.STATIC:
            assert (await client.get(f"/static/{name}?token={TOKEN}")).status == 200
        assert (await client.get(f"/static/..%2fserver.py?token={TOKEN}")).status == 404
    served(check)


def test_hostile_names_are_a_400_before_any_api_call() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        headers = {server.TOKEN_HEADER: TOKEN}
        for path in ("/api/stream/execution/OPS/run-1", "/api/stream/execution/ops/a,b",
                     "/api/stream/logs/ops/run-1/a,runbooks.dev%2Fx=y",
                     "/api/stream/execution/ops/..%2F..%2Fsecrets"):
            response = await client.get(path, headers=headers)
            assert response.status in (400, 404), path
        for body in ({"namespace": "ops", "name": "../x"}, {"namespace": "ops"},
                     {"namespace": ["ops"], "name": "x"}, {"namespace": "ops", "name": "x" * 300},
                     {"namespace": "ops", "name": "r", "step": "a,b", "decision": "Approve"},
                     {"namespace": "ops", "name": "r", "step": "gate", "decision": "Maybe"},
                     {"namespace": "ops", "name": "r", "step": "gate", "decision": "Approve",
                      "comment": "x" * 2000}):
            for path in ("/api/decide", "/api/cancel", "/api/retry", "/api/run"):
                response = await client.post(path, json=body, headers=headers)
                if path != "/api/decide" and "step" in body:
                    continue
                assert response.status == 400, (path, body)
                reply = await response.json()
                assert reply["ok"] is False and reply["message"]
        for raw in (b"not json", b"[1, 2]", b"\xff\xfe"):
            response = await client.post("/api/cancel", data=raw, headers=headers)
            assert response.status == 400
        response = await client.post("/api/cancel", data=b"{" * (server.MAX_BODY + 10),
                                     headers=headers)
        assert response.status == 413
    served(check)


def test_an_unreachable_api_server_is_a_502_with_its_reason() -> None:
    async def check(client: TestClient[Any, Any], host: str) -> None:
        response = await client.post("/api/cancel", json={"namespace": "ops", "name": "r"},
                                     headers={server.TOKEN_HEADER: TOKEN})
        assert response.status == 502
        assert "cannot reach the API server" in (await response.json())["message"]
    served(check)


def test_bundle_size_is_the_assets() -> None:
    assert 0 < server.bundle_size() < 64 * 1024
    assert isinstance(aiohttp.__version__, str)


def run_ui(tmp: Any, *args: str) -> tuple[str, str]:
    """`kubectl-runbook ui --no-browser ARGS` until it prints its URL; (URL, stderr)."""
    config = Path(tmp) / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: ops}}]\n")
    binary = Path(sys.executable).parent / "kubectl-runbook"
    proc = subprocess.Popen([str(binary), "ui", "--no-browser", "--kubeconfig", str(config),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next((line.strip() for line in proc.stdout or [] if line.startswith("http")), "")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return url, err


def test_it_binds_loopback_on_a_free_port_unless_told(tmp_path: Any) -> None:
    url, err = run_ui(tmp_path)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{43,}", url), url
    assert "WARNING" not in err
    url, err = run_ui(tmp_path, "--address", "0.0.0.0")
    assert url.startswith("http://127.0.0.1:")
    assert "WARNING: serving on 0.0.0.0, not only on this machine" in err, err
