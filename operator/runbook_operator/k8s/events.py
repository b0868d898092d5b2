"""Kubernetes Events about executions, posted off the reconcile path.

An Event is a courtesy to the human running ``kubectl describe``; posting one
must never delay a step or fail a pass, so they go through a small background
queue and errors are only logged.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from runbook_operator.api.common import API_VERSION
from runbook_operator.engine.names import generate_prefix
from runbook_operator.engine.redact import SECRETS
from runbook_operator.k8s.client import Clients

log = logging.getLogger("runbook_operator.events")


class EventPoster:
    """Posts Events from a background thread; ``enabled=False`` posts none."""

    def __init__(self, clients: Clients, component: str = "runbook-operator",
                 enabled: bool = True) -> None:
        self.clients = clients
        self.enabled = enabled
        self.component = component
        self.instance = socket.gethostname()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10000)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def post(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        if not self.enabled:
            return
        meta = obj.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            # A 253-character name leaves no room for the server's suffix: shortened.
            "metadata": {"generateName": generate_prefix(str(meta.get("name") or "object"),
                                                         "."),
                         "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION),
                               "kind": obj.get("kind", "RunbookExecution"),
                               "name": meta.get("name"), "namespace": meta.get("namespace"),
                               "uid": meta.get("uid")},
            "reason": reason[:128],
            "message": SECRETS.text(message)[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self.component},
            "reportingComponent": f"runbooks.dev/{self.component}",
            "reportingInstance": self.instance[:128],
        }
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("event queue full; dropped event %s", reason)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            try:
                self.clients.core.create_namespaced_event(event["metadata"]["namespace"], event)
            except Exception as exc:  # an Event is never worth a crash
                log.warning("could not post event %s: %s", event.get("reason"), exc)
