"""Leader election for replicas of the operator: one acts, the others stand by.

Every replica watches (its store and trigger index stay current) and serves
``/healthz``, ``/metrics`` and the Alertmanager receiver; only the holder of the
Lease reconciles executions and writes Runbook status. What to do with the Lease
is decided by :mod:`runbook_operator.engine.lease`; this module reads it, writes it
with a ``resourceVersion`` guard (of two candidates writing at once, one gets 409
and stays a standby) and reports through :attr:`LeaderElector.leading`.

A leader that cannot renew for ``renew_deadline`` calls ``on_lost``: the operator
then exits, so that it stops acting before a standby may take over and restarts
as a standby itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.lease import LeaseRecord, LeaseTimings, decide, still_leading
from runbook_operator.k8s.client import Clients, read_raw

log = logging.getLogger("runbook_operator.leader")


class LeaderElector:
    """Holds, or waits for, the Lease ``namespace/name`` as ``identity``."""

    def __init__(self, clients: Clients, namespace: str, name: str, identity: str,
                 timings: LeaseTimings | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clients = clients
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self.clock = clock
        self.leading = asyncio.Event()
        """Set while this replica holds the Lease."""
        self.last_renewed: datetime | None = None

    async def run(self, on_lost: Callable[[], None]) -> None:
        """Campaign and renew forever; ``on_lost()`` once leadership cannot be kept."""
        while True:
            now = self.clock()
            retry_at = now + self.timings.retry_period
            try:
                won, retry_at = await asyncio.to_thread(self.attempt, now)
            except Exception as exc:  # the API is unreachable: keep trying
                log.warning("leader election: could not read or write Lease %s/%s: %s",
                            self.namespace, self.name, exc)
                won = False
            if won:
                self.last_renewed = now
                if not self.leading.is_set():
                    log.info("leader election: %s leads (Lease %s/%s)", self.identity,
                             self.namespace, self.name)
                    self.leading.set()
            elif self.leading.is_set() and not still_leading(self.last_renewed, self.clock(),
                                                             self.timings):
                log.error("leader election: %s could not renew Lease %s/%s for %s; "
                          "stopping", self.identity, self.namespace, self.name,
                          self.timings.renew_deadline)
                self.leading.clear()
                on_lost()
                return
            await asyncio.sleep(max(0.0, (retry_at - self.clock()).total_seconds()))

    def attempt(self, now: datetime) -> tuple[bool, datetime]:
        """One round: read the Lease, decide, write it if ours to take. Blocks.

        Returns whether we hold it now, and when to look again.
        """
        body = self._read()
        current = None if body is None else _record(body)
        decision = decide(current, self.identity, now, self.timings)
        if decision.record is None:
            return False, decision.retry_at
        spec = _spec(decision.record, acquired=decision.verdict == "acquire",
                     previous=(body or {}).get("spec") or {})
        try:
            if body is None:
                self.clients.coordination.create_namespaced_lease(
                    self.namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                     "metadata": {"name": self.name}, "spec": spec})
            else:
                self.clients.coordination.replace_namespaced_lease(
                    self.name, self.namespace, {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name,
                                     "resourceVersion": body["metadata"]["resourceVersion"]},
                        "spec": spec})
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                return False, decision.retry_at
            raise
        if decision.verdict == "acquire":
            log.info("leader election: %s acquired Lease %s/%s (was %s)", self.identity,
                     self.namespace, self.name, current.holder if current else None)
        return True, decision.retry_at

    def _read(self) -> dict[str, Any] | None:
        return read_raw(self.clients.coordination.read_namespaced_lease, self.name,
                        self.namespace)


def _record(body: dict[str, Any]) -> LeaseRecord:
    spec = body.get("spec") or {}
    renewed = spec.get("renewTime")
    try:
        renewed_at = datetime.fromisoformat(renewed.replace("Z", "+00:00")) if renewed else None
    except ValueError:
        renewed_at = None
    return LeaseRecord(holder=spec.get("holderIdentity"), renewed_at=renewed_at,
                       duration=timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)),
                       transitions=int(spec.get("leaseTransitions") or 0))


def _spec(record: LeaseRecord, acquired: bool, previous: dict[str, Any]) -> dict[str, Any]:
    assert record.renewed_at is not None
    stamp = _micro_time(record.renewed_at)
    return {"holderIdentity": record.holder,
            "leaseDurationSeconds": int(record.duration.total_seconds()),
            "acquireTime": stamp if acquired else previous.get("acquireTime", stamp),
            "renewTime": stamp,
            "leaseTransitions": record.transitions}


def _micro_time(moment: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
