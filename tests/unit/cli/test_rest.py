"""cli.rest: the plugin's small API client, against a local HTTP server.

Cases:
- kubeconfig: the current context's server, namespace (or ``default``, or the
  flag's), CA and client certificate data, a bearer token, a token file relative
  to the kubeconfig, basic auth; an exec plugin or several files go to the
  kubernetes client's loader; a missing context or file is a ConfigError;
- paths of namespaced and cluster-wide custom resources;
- GET and merge-PATCH send the credentials and JSON, a refusal is an ApiError
  carrying the API server's message, an unreachable server is status 0;
- the watch of one execution (``execution_events``): events in order, reopened
  from the last resourceVersion when the server ends the stream, from scratch
  after an ERROR event (410 Gone); ends at the deadline.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from runbook_operator.cli import inspect_commands, rest


def kubeconfig(tmp_path: Path, user: dict[str, Any], namespace: str | None = None) -> str:
    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "ctx",
              "contexts": [{"name": "other", "context": {"cluster": "x", "user": "x"}},
                           {"name": "ctx", "context": context}],
              "clusters": [{"name": "c", "cluster": {
                  "server": "https://127.0.0.1:6443",
                  "certificate-authority-data": base64.b64encode(b"CA").decode()}}],
              "users": [{"name": "u", "user": user}]}
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_kubeconfig_certificates_and_namespace(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"client-certificate-data": base64.b64encode(b"CERT").decode(),
                                 "client-key-data": base64.b64encode(b"KEY").decode()}, "prod")
    cluster = rest.load(path)
    assert (cluster.server, cluster.namespace, cluster.ca_pem) == ("https://127.0.0.1:6443",
                                                                  "prod", "CA")
    assert (cluster.cert_pem, cluster.key_pem, cluster.headers) == (b"CERT", b"KEY", {})
    assert rest.load(path, "other").namespace == "other"


def test_kubeconfig_tokens_and_basic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert rest.load(kubeconfig(tmp_path, {"token": "t0k"})).headers == {
        "Authorization": "Bearer t0k"}
    (tmp_path / "token").write_text("from-file\n")
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path, {"tokenFile": "token"}))
    loaded = rest.load()
    assert loaded.headers == {"Authorization": "Bearer from-file"}
    assert loaded.namespace == "default"
    basic = rest.load(kubeconfig(tmp_path, {"username": "a", "password": "b"}))
    assert basic.headers == {"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}


def test_kubeconfig_handed_to_the_kubernetes_loader(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str | None, str | None]] = []

    def fake(kubeconfig: str | None, namespace: str | None) -> rest.Cluster:
        seen.append((kubeconfig, namespace))
        return rest.Cluster(server="https://x")

    monkeypatch.setattr(rest, "from_kubernetes", fake)
    path = kubeconfig(tmp_path, {"exec": {"command": "aws"}})
    assert rest.load(path, "ns").server == "https://x"
    monkeypatch.setenv("KUBECONFIG", f"{path}:{path}")
    rest.load(None, None)
    assert seen == [(path, "ns"), (None, None)]


def test_kubeconfig_errors(tmp_path: Path) -> None:
    with pytest.raises(rest.ConfigError, match="no usable kubeconfig"):
        rest.load(str(tmp_path / "missing"))
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({"current-context": "nope", "contexts": []}))
    with pytest.raises(rest.ConfigError, match="no context named 'nope'"):
        rest.load(str(path))


def test_paths() -> None:
    assert rest.custom_path("runbooks") == "/apis/runbooks.dev/v1alpha1/runbooks"
    assert rest.custom_path("runbooks", "ns", "rb") == \
        "/apis/runbooks.dev/v1alpha1/namespaces/ns/runbooks/rb"


class Server:
    """An HTTP server answering from a script: (method, path) -> handler."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str], bytes]] = []
        self.watches: list[list[dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_PATCH(self) -> None:
                self._serve()

            def _serve(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, url.path, query, dict(self.headers), body))
                if "watch" in query:
                    events = outer.watches.pop(0) if outer.watches else []
                    self.send_response(200)
                    self.end_headers()
                    for event in events:
                        self.wfile.write(json.dumps(event).encode() + b"\n")
                        self.wfile.flush()
                    return
                if url.path.endswith("/forbidden"):
                    self._json(403, {"kind": "Status", "message": "no, you may not"})
                else:
                    self._json(200, {"path": url.path, "items": []})

            def _json(self, code: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.httpd.shutdown()


def test_get_patch_and_refusal(server: Server) -> None:
    cluster = rest.Cluster(server=server.url, headers={"Authorization": "Bearer t"})
    assert cluster.get("/api/v1/namespaces", labelSelector="a=b")["path"] == "/api/v1/namespaces"
    cluster.merge_patch("/apis/x/y", {"spec": {"mode": "Disabled"}})
    (_, _, query, headers, _), (method, _, _, patch_headers, body) = server.requests
    assert query == {"labelSelector": ["a=b"]} and headers["Authorization"] == "Bearer t"
    assert method == "PATCH" and patch_headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(body) == {"spec": {"mode": "Disabled"}}
    with pytest.raises(rest.ApiError) as refused:
        cluster.get("/forbidden")
    assert (refused.value.status, refused.value.message) == (403, "no, you may not")
    with pytest.raises(rest.ApiError) as unreachable:
        rest.Cluster(server="http://127.0.0.1:1").get("/")
    assert unreachable.value.status == 0


def _event(kind: str, phase: str, version: str) -> dict[str, Any]:
    return {"type": kind, "object": {"metadata": {"name": "ex", "resourceVersion": version},
                                     "status": {"phase": phase}}}


def test_watch_reopens_where_it_left_off(server: Server) -> None:
    server.watches = [
        [_event("ADDED", "Running", "5")],
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}],
        [_event("ADDED", "Running", "9"), _event("MODIFIED", "Succeeded", "10")],
    ]
    cluster = rest.Cluster(server=server.url)
    events = inspect_commands.execution_events(cluster, "ns", "ex", time.monotonic() + 30)
    seen = []
    for kind, body in events:
        seen.append((kind, body["status"]["phase"]))
        if body["status"]["phase"] == "Succeeded":
            break
    assert seen == [("ADDED", "Running"), ("ADDED", "Running"), ("MODIFIED", "Succeeded")]
    queries = [q for _, _, q, _, _ in server.requests]
    assert [q.get("resourceVersion") for q in queries] == [None, ["5"], None]
    assert all(q["fieldSelector"] == ["metadata.name=ex"] and q["watch"] == ["1"]
               for q in queries)


def test_watch_ends_at_the_deadline(server: Server) -> None:
    cluster = rest.Cluster(server=server.url)
    started = time.monotonic()
    assert list(inspect_commands.execution_events(cluster, "ns", "ex", started + 1)) == []
    assert time.monotonic() - started < 10
