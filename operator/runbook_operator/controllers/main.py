"""The operator process: kopf embedded in our own asyncio loop, with its handlers.

One process serves kopf and ``/healthz`` (later ``/metrics`` and the receivers)
in one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import kubernetes

from runbook_operator.api.common import GROUP, VERSION
from runbook_operator.controllers import runbooks
from runbook_operator.k8s.client import Clients, load_config, make_clients
from runbook_operator.settings import OperatorSettings

log = logging.getLogger("runbook_operator")


class ClusterUnreachable(Exception):
    """No usable Kubernetes API: no config, or the server does not answer."""


def check_cluster(settings: OperatorSettings) -> kubernetes.client.Configuration:
    """Load the config and ask the server its version, failing fast with a reason."""
    try:
        configuration = load_config(settings.kubeconfig)
    except Exception as exc:
        raise ClusterUnreachable(f"no cluster configuration ({exc})") from None
    api = kubernetes.client.VersionApi(kubernetes.client.ApiClient(configuration))
    try:
        api.get_code(_request_timeout=5)
    except Exception as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ClusterUnreachable(f"{configuration.host} did not answer ({reason})") from None
    return configuration


def register(registry: kopf.OperatorRegistry, clients: Clients) -> None:
    """Attach the handlers to a kopf registry."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.peering.standalone = True
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.persistence.finalizer = f"{GROUP}/finalizer"

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs) or kopf.login_with_service_account(**kwargs)

    @kopf.on.event(GROUP, VERSION, runbooks.PLURAL, registry=registry)
    def runbook_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
            return
        runbooks.reconcile(clients, dict(body))


async def serve(settings: OperatorSettings, configuration: kubernetes.client.Configuration,
                stop: asyncio.Event | None = None) -> None:
    """Run the operator until ``stop`` is set (or forever)."""
    clients = make_clients(configuration)
    registry = kopf.OperatorRegistry()
    register(registry, clients)
    await kopf.operator(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://{settings.health_address}:{settings.health_port}/healthz",
        stop_flag=stop,
    )


