"""The operator process: kopf embedded in our own asyncio loop, with its handlers.

One process serves kopf and ``/healthz`` (later ``/metrics`` and the receivers)
in one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes

from runbook_operator.api.common import GROUP, VERSION
from runbook_operator.controllers import runbooks
from runbook_operator.controllers.executions import PLURAL, ExecutionReconciler
from runbook_operator.controllers.store import Key, Store
from runbook_operator.controllers.workqueue import WorkQueue
from runbook_operator.k8s.client import Clients, load_config, make_clients
from runbook_operator.k8s.events import EventPoster
from runbook_operator.k8s.jobs import LABEL_EXECUTION, job_finished, pod_terminated
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


class Operator:
    """The pieces one operator process shares: clients, store, queue, reconcilers."""

    def __init__(self, clients: Clients, settings: OperatorSettings) -> None:
        self.clients = clients
        self.settings = settings
        self.store = Store()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.events = EventPoster(clients, enabled=settings.events)
        self.executions = ExecutionReconciler(clients, self.store, self.events,
                                              job_ttl_seconds=settings.job_ttl_seconds)
        self.failures: dict[Key, int] = {}

    async def handle(self, key: Key) -> None:
        """One pass over one execution, in a thread (the kubernetes client blocks)."""
        try:
            outcome = await asyncio.to_thread(self.executions.reconcile, key)
        except Exception:
            count = self.failures.get(key, 0) + 1
            self.failures[key] = count
            delay = min(60.0, 0.5 * 2 ** (count - 1))
            log.exception("reconcile of %s/%s failed (attempt %d); again in %.1fs",
                          *key, count, delay)
            self.queue.add_after(key, delay)
            return
        self.failures.pop(key, None)
        if outcome.again:
            self.queue.add(key)
        elif outcome.wake_at is not None:
            delay = (outcome.wake_at - datetime.now(UTC)).total_seconds()
            self.queue.add_after(key, delay + 0.01)

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Attach the handlers to a kopf registry."""
        clients, store, queue = self.clients, self.store, self.queue

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.peering.standalone = True
            settings.posting.level = logging.WARNING
            settings.watching.server_timeout = 300
            settings.batching.batch_window = 0.01
            settings.persistence.finalizer = f"{GROUP}/finalizer"
            # One line per handled watch event is noise at our event rates; failures
            # are still logged at ERROR.
            logging.getLogger("kopf.objects").setLevel(logging.WARNING)

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return kopf.login_with_kubeconfig(**kwargs) or \
                kopf.login_with_service_account(**kwargs)

        @kopf.on.event(GROUP, VERSION, runbooks.PLURAL, registry=registry)
        def runbook_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            deleted = type == "DELETED"
            store.put_runbook(body, deleted)
            if not deleted and not body.get("metadata", {}).get("deletionTimestamp"):
                runbooks.reconcile(clients, body)

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def execution_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            key = store.put_execution(_body(event), deleted=type == "DELETED")
            if type == "DELETED":
                queue.forget(key)
            else:
                queue.add(key)

        @kopf.on.event("batch", "v1", "jobs", labels={LABEL_EXECUTION: kopf.PRESENT},
                       registry=registry)
        async def job_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            key = store.put_job(body, deleted=type == "DELETED")
            # Only an ending or a vanishing Job changes a plan; the rest is noise.
            if key is not None and key in store.executions and \
                    (type == "DELETED" or job_finished(body)):
                queue.add(key)

        @kopf.on.event("", "v1", "pods", labels={LABEL_EXECUTION: kopf.PRESENT},
                       registry=registry)
        async def pod_event(type: str, event: kopf.RawEvent, **_: Any) -> None:
            body = _body(event)
            key = store.put_pod(body, deleted=type == "DELETED")
            if key is not None and key in store.executions and pod_terminated(body):
                queue.add(key)


def _body(event: kopf.RawEvent) -> dict[str, Any]:
    """The object of a raw watch event: a fresh dict per event, safe to keep."""
    return cast(dict[str, Any], event["object"])


async def serve(settings: OperatorSettings, configuration: kubernetes.client.Configuration,
                stop: asyncio.Event | None = None, workers: int = 4) -> None:
    """Run the operator until ``stop`` is set (or forever)."""
    operator = Operator(make_clients(configuration), settings)
    registry = kopf.OperatorRegistry()
    operator.register(registry)
    tasks = [asyncio.create_task(operator.queue.work(operator.handle), name=f"worker-{i}")
             for i in range(workers)]
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://{settings.health_address}:{settings.health_port}/healthz",
            stop_flag=stop,
        )
    finally:
        for task in tasks:
            task.cancel()
        operator.events.close()
