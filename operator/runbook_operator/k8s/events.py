"""Kubernetes Events about executions: aggregated, posted off the reconcile path.

An Event is a courtesy to the human running ``kubectl describe``; posting one
must never delay a step or fail a pass, so they go through a background thread
and errors are only logged. Every write also loads the API server the Job
controller shares, so Events are aggregated the way Kubernetes' own event
recorder does: a repeated reason on one object (same type) becomes one Event
whose ``count`` and ``lastTimestamp`` are patched, its message the latest
("(combined from similar events): ..." when they differed). Occurrences that
arrive while earlier ones wait to be written are merged before any request, so a
pass that starts four steps costs one write, not four. What waits is bounded
(``max_pending`` aggregated Events; beyond it new ones are dropped and counted),
and so is what is remembered of written Events (``cache_size``, least recently
used first, each for ``window`` seconds), so a storm cannot grow memory.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.api.common import API_VERSION
from runbook_operator.engine.names import generate_prefix
from runbook_operator.k8s.client import Clients
from runbook_operator.observability.secrets import SECRETS

log = logging.getLogger("runbook_operator.events")

COMBINED = "(combined from similar events): "
EventKey = tuple[str, str, str, str, str, str]
"""(namespace, kind, name, uid, type, reason): what makes occurrences one Event."""


@dataclass
class _Pending:
    """Occurrences of one aggregated Event not written yet."""

    body: dict[str, Any]
    count: int
    mixed: bool
    """Whether the occurrences' messages differed."""


@dataclass
class _Written:
    """An Event on the server that later occurrences are added to."""

    name: str
    count: int
    message: str
    at: float


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventPoster:
    """Aggregates and posts Events from a background thread; ``enabled=False`` posts none."""

    def __init__(self, clients: Clients, component: str = "runbook-operator",
                 enabled: bool = True, *, max_pending: int = 10_000,
                 cache_size: int = 4096, window: float = 600.0, linger: float = 0.2,
                 start: bool = True) -> None:
        self.clients = clients
        self.enabled = enabled
        self.component = component
        self.instance = socket.gethostname()
        self.max_pending = max_pending
        self.cache_size = cache_size
        self.window = window
        self.linger = linger
        """Seconds the writer waits after the first occurrence, so a burst merges."""
        self.dropped = 0
        self._pending: OrderedDict[EventKey, _Pending] = OrderedDict()
        self._written: OrderedDict[EventKey, _Written] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        if start:
            self._thread.start()

    def post(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        if not self.enabled:
            return
        meta = obj.get("metadata") or {}
        kind = obj.get("kind", "RunbookExecution")
        type_ = "Warning" if warning else "Normal"
        key: EventKey = (str(meta.get("namespace") or ""), str(kind), str(meta.get("name")),
                         str(meta.get("uid") or ""), type_, reason[:128])
        message = SECRETS.text(message)[:1024]
        with self._cond:
            pending = self._pending.get(key)
            if pending is not None:
                pending.count += 1
                pending.mixed = pending.mixed or pending.body["message"] != message
                pending.body["message"] = message
                pending.body["lastTimestamp"] = _now()
                return
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.warning("event backlog full (%d); dropped %d events so far",
                                self.max_pending, self.dropped)
                return
            self._pending[key] = _Pending(self._event(obj, meta, kind, type_, reason, message),
                                          1, False)
            self._cond.notify()

    def _event(self, obj: dict[str, Any], meta: dict[str, Any], kind: str, type_: str,
               reason: str, message: str) -> dict[str, Any]:
        now = _now()
        return {
            "apiVersion": "v1",
            "kind": "Event",
            # A 253-character name leaves no room for the server's suffix: shortened.
            "metadata": {"generateName": generate_prefix(str(meta.get("name") or "object"),
                                                         "."),
                         "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": obj.get("apiVersion", API_VERSION),
                               "kind": kind,
                               "name": meta.get("name"), "namespace": meta.get("namespace"),
                               "uid": meta.get("uid")},
            "reason": reason[:128],
            "message": message,
            "type": type_,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self.component},
            "reportingComponent": f"runbooks.dev/{self.component}",
            "reportingInstance": self.instance[:128],
        }

    def pending(self) -> int:
        """Aggregated Events waiting to be written."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
            if self.linger and not self._closed:
                time.sleep(self.linger)
            self.flush()

    def flush(self) -> None:
        """Write every waiting Event (one request each): the writer thread's work."""
        with self._cond:
            batch, self._pending = self._pending, OrderedDict()
        for key, pending in batch.items():
            try:
                self._write(key, pending)
            except Exception as exc:  # an Event is never worth a crash
                log.warning("could not post event %s: %s", pending.body.get("reason"), exc)

    def _write(self, key: EventKey, pending: _Pending) -> None:
        body, namespace = pending.body, key[0]
        now = time.monotonic()
        written = self._written.pop(key, None)
        if written is not None and now - written.at > self.window:
            written = None
        if written is not None:
            count = written.count + pending.count
            mixed = pending.mixed or written.message != body["message"].removeprefix(COMBINED)
            message = (COMBINED if mixed else "") + body["message"]
            try:
                self.clients.core.patch_namespaced_event(written.name, namespace, {
                    "count": count, "lastTimestamp": body["lastTimestamp"],
                    "message": message[:1024]})
                self._remember(key, _Written(written.name, count, body["message"], written.at))
                return
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # Expired or deleted on the server: start a new one.
        if pending.count > 1:
            body["count"] = pending.count
            if pending.mixed:
                body["message"] = (COMBINED + body["message"])[:1024]
        created = self.clients.core.create_namespaced_event(namespace, body)
        self._remember(key, _Written(created.metadata.name, pending.count,
                                     body["message"].removeprefix(COMBINED), now))

    def _remember(self, key: EventKey, written: _Written) -> None:
        self._written[key] = written
        self._written.move_to_end(key)
        while len(self._written) > self.cache_size:
            self._written.popitem(last=False)
