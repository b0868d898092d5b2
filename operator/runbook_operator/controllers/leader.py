"""Leader election for replicas of the operator: one acts, the others stand by.

Every replica watches (its store and trigger index stay current) and serves
``/healthz``, ``/metrics`` and the Alertmanager receiver; only the holder of the
Lease reconciles executions and writes Runbook status. What to do with the Lease
is decided by :mod:`runbook_operator.engine.lease`; this module reads it, writes it
with a ``resourceVersion`` guard (of two candidates writing at once, one gets 409
and stays a standby) and reports through :attr:`LeaderElector.leading`.

A leader that cannot renew for ``renew_deadline``, or that reads the Lease held by
another, calls ``on_lost``: the operator then exits, so that it stops acting before
a standby may take over and restarts as a standby itself. Every write a leader
makes first asks :meth:`LeaderElector.may_act` (the fence), so a leader that wakes
from a freeze writes nothing before its election loop has looked again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.lease import (
    LeaseRecord,
    LeaseTimings,
    Observed,
    decide,
    still_leading,
)
from runbook_operator.engine.timeutil import parse
from runbook_operator.k8s.client import Clients, read_raw

log = logging.getLogger("runbook_operator.leader")


class LeaderElector:
    """Holds, or waits for, the Lease ``namespace/name`` as ``identity``."""

    def __init__(self, clients: Clients, namespace: str, name: str, identity: str,
                 timings: LeaseTimings | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clients = clients
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self.monotonic = monotonic
        self.wall = wall
        self.leading = asyncio.Event()
        """Set while this replica holds the Lease (see :meth:`may_act` for writes)."""
        self.last_renewed: float | None = None
        """Monotonic time before the read that last renewed (or acquired) the Lease."""
        self.observed: Observed | None = None

    def may_act(self) -> bool:
        """Whether a write may go out now: checked before every write a leader makes.

        By the monotonic clock, not by :attr:`leading`: a leader frozen (SIGSTOP, a
        long pause) past ``renew_deadline`` wakes with ``leading`` still set, and its
        tasks would run before the election loop re-reads the Lease. They find this
        false and write nothing; the loop then sees the Lease lost and exits.
        """
        return self.leading.is_set() and \
            still_leading(self.last_renewed, self.monotonic(), self.timings)

    async def run(self, on_lost: Callable[[], None]) -> None:
        """Campaign and renew forever; ``on_lost()`` once leadership cannot be kept."""
        while True:
            started = self.monotonic()
            retry_in = self.timings.retry_period.total_seconds()
            verdict = None
            try:
                verdict, retry_in = await asyncio.to_thread(self.attempt, started)
            except Exception as exc:  # the API is unreachable: keep trying
                log.warning("leader election: could not read or write Lease %s/%s: %s",
                            self.namespace, self.name, exc)
            if verdict in ("acquire", "renew"):
                self.last_renewed = started
                if not self.leading.is_set():
                    log.info("leader election: %s leads (Lease %s/%s)", self.identity,
                             self.namespace, self.name)
                    self.leading.set()
            elif self.leading.is_set() and (
                    verdict == "lost" or
                    not still_leading(self.last_renewed, self.monotonic(), self.timings)):
                log.error("leader election: %s lost Lease %s/%s (%s); stopping",
                          self.identity, self.namespace, self.name,
                          "another replica holds it" if verdict == "lost" else
                          f"not renewed for {self.timings.renew_deadline}")
                self.leading.clear()
                on_lost()
                return
            await asyncio.sleep(max(0.0, started + retry_in - self.monotonic()))

    def attempt(self, now: float) -> tuple[str, float]:
        """One round: read the Lease, decide, write it if ours to take. Blocks.

        Returns the verdict (``acquire`` and ``renew`` only once written) and the
        seconds until the next round.
        """
        body = self._read()
        current = None if body is None else _record(body)
        decision = decide(current, self.observed, self.identity, now, self.wall(),
                          self.timings, was_leading=self.leading.is_set())
        self.observed = decision.observed
        retry_in = decision.retry_in.total_seconds()
        if decision.record is None:
            return decision.verdict, retry_in
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
                return "standby", retry_in
            raise
        if decision.verdict == "acquire":
            log.info("leader election: %s acquired Lease %s/%s (was %s)", self.identity,
                     self.namespace, self.name, current.holder if current else None)
        return decision.verdict, retry_in

    def _read(self) -> dict[str, Any] | None:
        return read_raw(self.clients.coordination.read_namespaced_lease, self.name,
                        self.namespace)


def _record(body: dict[str, Any]) -> LeaseRecord:
    """A Lease as read; a hand-edited one with odd fields reads as odd, never raises."""
    spec = body.get("spec") or {}
    renewed = spec.get("renewTime")
    version = f"{(body.get('metadata') or {}).get('resourceVersion')}/{renewed}"
    return LeaseRecord(holder=str(spec.get("holderIdentity") or "") or None,
                       renewed_at=parse(renewed) if isinstance(renewed, str) else None,
                       duration=timedelta(seconds=_int(spec.get("leaseDurationSeconds"))),
                       transitions=_int(spec.get("leaseTransitions")), version=version)


def _int(value: Any) -> int:
    """A non-negative int32, as the API's fields are; anything else reads as 0."""
    try:
        return min(max(0, int(value or 0)), 2**31 - 1)
    except (TypeError, ValueError, OverflowError):
        return 0


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
