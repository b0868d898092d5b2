"""What a replica does to hold the state the last leader held, before it acts.

A standby watches all along, but its watches may lag behind the old leader's last
writes, and a replica that starts must not answer ready before its caches hold what
the API holds. Both list Runbooks, executions and CircuitPolicies with a consistent
(quorum) read and wait until the watches have delivered every listed version
(:func:`catch_up`; versions compared for equality only, as they are opaque). A new
leader then replaces its circuits with the listed statuses (:func:`take_over`), and
the operator hands the listed executions, whole, to the notifier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runbook_operator.api.common import CIRCUIT_POLICIES, EXECUTIONS, RUNBOOKS
from runbook_operator.api.execution import FINISHED_EXECUTION_PHASES
from runbook_operator.controllers.circuits import CircuitRegistry
from runbook_operator.k8s.client import Clients, list_raw
from runbook_operator.k8s.store import Key, Store
from runbook_operator.observability.metrics import Metrics

log = logging.getLogger("runbook_operator.takeover")


@dataclass(frozen=True)
class Caches:
    """The pieces of one operator process a fresh listing is checked against."""

    clients: Clients
    """Clients for reads (any replica may list)."""
    store: Store
    circuits: CircuitRegistry
    namespaces: tuple[str, ...]
    """The namespaces served; empty: all."""
    learn_secrets: Callable[[Key, dict[str, Any]], None]
    """Teaches the redactor a running execution's secrets (``Operator.learn_secrets``)."""


CATCH_UP = 10.0
"""Seconds to wait for the watches to reach a fresh listing (at start, at takeover)."""


async def sync_caches(caches: Caches, synced: asyncio.Event) -> None:
    """At start, on every replica: set ``synced`` (``/readyz``) once the watches have
    brought every Runbook, execution and CircuitPolicy of a fresh listing."""
    while True:
        try:
            await catch_up(caches, timeout=3 * CATCH_UP)
        except Exception as exc:  # the API is down: not ready; try again
            log.warning("could not list objects to check the caches (%s); again in 2s", exc)
            await asyncio.sleep(2.0)
            continue
        synced.set()
        return


async def catch_up(caches: Caches, timeout: float | None = CATCH_UP
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """List Runbooks, executions and CircuitPolicies consistently; wait until the watches
    have brought each listed version (by equality: versions are opaque). Returns the
    listed CircuitPolicies and executions. Raises when the listing fails; gives up
    waiting (with a warning) after ``timeout`` seconds (None: never)."""
    namespaces = list(caches.namespaces) or None
    started = time.monotonic()
    runbooks_, executions, policies = await asyncio.gather(
        asyncio.to_thread(list_raw, caches.clients, RUNBOOKS, namespaces),
        asyncio.to_thread(list_raw, caches.clients, EXECUTIONS, namespaces),
        asyncio.to_thread(list_raw, caches.clients, CIRCUIT_POLICIES, namespaces))

    def ident(body: dict[str, Any]) -> tuple[Key, str]:
        meta = body.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or "")), \
            str(meta.get("resourceVersion") or "")

    for body in executions:
        if (body.get("status") or {}).get("phase") not in FINISHED_EXECUTION_PHASES:
            caches.learn_secrets(ident(body)[0], body)
    store = caches.store
    missing = [("execution", *ident(b)) for b in executions] + \
        [("runbook", *ident(b)) for b in runbooks_] + \
        [("policy", *ident(b)) for b in policies]
    while True:
        missing = [(kind, key, version) for kind, key, version in missing if not (
            store.caught_up(key, version) if kind == "execution" else
            store.runbook_seen(key, version) if kind == "runbook" else
            caches.circuits.known(*key))]
        if not missing or (timeout is not None and time.monotonic() - started > timeout):
            break
        await asyncio.sleep(0.02)
    if missing:
        log.warning("the watches have not reached %d object(s) of a fresh listing after "
                    "%.0fs (e.g. %s %s/%s); writes stay guarded by resourceVersion",
                    len(missing), timeout, missing[0][0], *missing[0][1])
    log.info("caught up with a fresh listing in %.3fs (%d Runbooks, %d executions, %d "
             "CircuitPolicies)", time.monotonic() - started, len(runbooks_),
             len(executions), len(policies))
    return policies, executions


async def take_over(caches: Caches, metrics: Metrics) -> list[dict[str, Any]] | None:
    """Rebuild what the last leader held, from the API, before this replica's first write.

    Circuits (states, windows, ``openUntil``, HalfOpen trials) are read afresh from
    every CircuitPolicy's status: the watch may lag behind the old leader's last
    writes, and a standby's picture must never reopen or close a circuit. The
    executions (bulkhead occupancy and lines, notification ledgers, failure streaks,
    secret values) and Runbooks (schedule slots) are the watch's, once it has caught
    up with a fresh listing: no pass plans from an older status than the old leader
    left. Returns the listed executions (whole: the notifier's ledgers), or None when
    the API could not list them.
    """
    started = time.monotonic()
    try:
        policies, executions = await catch_up(caches)
    except Exception as exc:  # the API is down: the watch's picture is all there is
        log.error("new leader could not list objects (%s); acting on what the watch "
                  "brought, every write guarded by resourceVersion", exc)
        return None
    caches.circuits.reload(list(caches.namespaces) or None, policies)
    metrics.takeover(time.monotonic() - started)
    log.info("new leader: state rebuilt from the API in %.3fs",
             time.monotonic() - started)
    return executions
