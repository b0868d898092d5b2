"""A small HTTPS client to the API server for the plugin's reading commands.

Why it exists: importing the kubernetes client takes ~450 ms on this machine, which
alone breaks the plugin's 300 ms start-up target (issue #13) for ``list``, ``get``,
``watch`` and every Tab press that completes a name. These commands need four
things (GET a JSON document, merge-PATCH one, stream watch events, stream a pod's
log), which the standard library does in ~60 ms of imports. The kubeconfig is read
here for the common cases (client certificates, tokens, basic auth, CA data or
files); anything else (exec and auth-provider plugins, proxies, a list of
kubeconfig files) is handed to the kubernetes client's own loader, whose resulting
configuration this client then uses: slower, never wrong.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit


class ApiError(Exception):
    """A refused request: the status, the reason and the API server's own message."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body

    @property
    def message(self) -> str:
        try:
            text = json.loads(self.body).get("message")
        except (ValueError, AttributeError):
            text = None
        return str(text or f"{self.status} {self.reason}")


class ConfigError(Exception):
    """No usable kubeconfig."""


@dataclass
class Cluster:
    """Where the API server is and how to authenticate to it."""

    server: str
    namespace: str = "default"
    ca_pem: str | None = None
    ca_file: str | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = False
    _context: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._context is not None:
            return self._context
        context = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_pem:
            # ssl loads a certificate only from files: a private directory, removed at once
            with tempfile.TemporaryDirectory(prefix="kubectl-runbook-") as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_bytes(self.cert_pem)
                key.touch(mode=0o600)
                key.write_bytes(self.key_pem or b"")
                context.load_cert_chain(str(cert), str(key))
        self._context = context
        return context

    def open(self, method: str, path: str, query: Mapping[str, Any] | None = None,
             body: Any = None, content_type: str = "application/json",
             timeout: float = 30.0) -> Any:
        """Send a request; the response (an ``http.client.HTTPResponse``) if 2xx."""
        import http.client

        url = urlsplit(self.server)
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = (url.path.rstrip("/") + path) + (f"?{urlencode(params)}" if params else "")
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(url.hostname or "", url.port or 443,
                                               context=self.ssl_context(), timeout=timeout)
        else:
            conn = http.client.HTTPConnection(url.hostname or "", url.port or 80,
                                              timeout=timeout)
        headers = {"Accept": "application/json", "User-Agent": "kubectl-runbook",
                   **self.headers}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise ApiError(0, f"cannot reach the API server at {self.server}: {exc}") from None
        if response.status >= 300:
            text = response.read().decode("utf-8", "replace")
            conn.close()
            raise ApiError(response.status, response.reason, text)
        return response

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        response = self.open("GET", path, query)
        result: dict[str, Any] = json.loads(response.read())
        return result

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.open("PATCH", path, body=body,
                             content_type="application/merge-patch+json")
        result: dict[str, Any] = json.loads(response.read())
        return result

    def lines(self, path: str, timeout: float, **query: Any) -> Iterator[bytes]:
        """A streamed response, a line at a time (watch events, ``log?follow``)."""
        response = self.open("GET", path, query, timeout=timeout)
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                yield line
        finally:
            response.close()


def custom_path(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    from runbook_operator.cli.views import GROUP, VERSION

    path = f"/apis/{GROUP}/{VERSION}"
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    return path + (f"/{name}" if name else "")


def load(kubeconfig: str | None = None, namespace: str | None = None) -> Cluster:
    """The current context of the kubeconfig (``--kubeconfig``, else $KUBECONFIG, else
    ~/.kube/config) as a Cluster, with ``namespace`` or the context's."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if os.pathsep in path:
        return from_kubernetes(kubeconfig, namespace)  # several files to merge: its loader
    import yaml

    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"no usable kubeconfig: {path}: {exc}") from None
    context = _named(config, "contexts", config.get("current-context"))
    cluster = _named(config, "clusters", context.get("cluster"))
    user = _named(config, "users", context.get("user"))
    if not cluster.get("server"):
        raise ConfigError(f"no usable kubeconfig: {path}: the current context has no server")
    if any(k in user for k in ("exec", "auth-provider")) or \
            any(k in cluster for k in ("proxy-url", "tls-server-name")):
        return from_kubernetes(kubeconfig, namespace)
    base = Path(path).parent
    result = Cluster(server=str(cluster["server"]),
                     namespace=namespace or context.get("namespace") or "default",
                     insecure=bool(cluster.get("insecure-skip-tls-verify")))
    if cluster.get("certificate-authority-data"):
        result.ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    elif cluster.get("certificate-authority"):
        result.ca_file = str(base / cluster["certificate-authority"])
    if user.get("client-certificate-data"):
        result.cert_pem = base64.b64decode(user["client-certificate-data"])
        result.key_pem = base64.b64decode(user.get("client-key-data") or "")
    elif user.get("client-certificate"):
        result.cert_file = str(base / user["client-certificate"])
        result.key_file = str(base / user["client-key"]) if user.get("client-key") else None
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    if token:
        result.headers["Authorization"] = f"Bearer {token}"
    elif user.get("username"):
        basic = base64.b64encode(f"{user['username']}:{user.get('password', '')}".encode())
        result.headers["Authorization"] = f"Basic {basic.decode()}"
    return result


def _named(config: Mapping[str, Any], section: str, name: Any) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            key = section[:-1]  # contexts -> context
            value = entry.get(key)
            return dict(value) if isinstance(value, Mapping) else {}
    raise ConfigError(f"no usable kubeconfig: no {section[:-1]} named {name!r}")


def from_kubernetes(kubeconfig: str | None, namespace: str | None) -> Cluster:
    """What the kubernetes client's own loader makes of the kubeconfig (exec plugins...)."""
    import kubernetes

    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        _, context = kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
    except Exception as exc:
        raise ConfigError(f"no usable kubeconfig: {exc}") from None
    default = (context or {}).get("context", {}).get("namespace") or "default"
    return from_configuration(kubernetes.client.Configuration.get_default_copy(),
                              namespace or default)


def from_configuration(config: Any, namespace: str) -> Cluster:
    """A Cluster from a loaded ``kubernetes.client.Configuration``."""
    result = Cluster(server=str(config.host), namespace=namespace,
                     ca_file=config.ssl_ca_cert, cert_file=config.cert_file,
                     key_file=config.key_file, insecure=not config.verify_ssl)
    auth = (config.api_key or {}).get("authorization")
    if auth:
        result.headers["Authorization"] = str(auth)
    return result
