"""The bulkhead of a CircuitPolicy: who of the waiting guarded steps runs next.

A policy's ``bulkhead.maxConcurrent`` bounds the guarded steps running at once
across all executions; the others wait in line (the planner times them out after
``maxWait``). The line is fair and deterministic: the most severe incident first
(SEV1 before SEV4, no severity last), then first come first served, ties broken
by ticket id. Because the order depends only on (severity, enqueued_at, id),
``rebuild`` gets the queue from what is observed (which steps run, which wait
and since when: ``rows_of`` reads it from execution statuses, the one place
occupancy is read), with no state of its own to persist. Times are kept at
millisecond precision, as in status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from runbook_operator.engine.severity import severity_of
from runbook_operator.engine.timeutil import parse

Phase = Literal["running", "waiting"]
BulkheadRow = tuple[str, Phase, datetime, str | None]
"""(ticket id, phase, since, severity) of one guarded attempt, as :func:`rebuild` reads."""

LOWEST = 1_000_000
"""The rank of a ticket without a (recognisable) severity: after every SEVn."""

_SEVERITY = re.compile(r"\s*sev\s*-?\s*([0-9]{1,3})\s*", re.IGNORECASE)


def severity_rank(severity: str | None) -> int:
    """``SEV1`` -> 1 ... ``SEV4`` -> 4 (lower runs first); None or unknown -> ``LOWEST``."""
    if severity is None:
        return LOWEST
    match = _SEVERITY.fullmatch(severity)
    return int(match.group(1)) if match else LOWEST


def _ms(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


@dataclass(frozen=True)
class Ticket:
    """A guarded step attempt asking for a slot, e.g. ``<namespace>/<execution>/<step>/<n>``."""

    id: str
    severity: str | None = None


@dataclass(frozen=True)
class Entry:
    ticket: Ticket
    enqueued_at: datetime

    @property
    def order(self) -> tuple[int, datetime, str]:
        return severity_rank(self.ticket.severity), self.enqueued_at, self.ticket.id


def _sorted(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: e.order))


@dataclass(frozen=True)
class BulkheadQueue:
    """The running and waiting guarded steps of one policy.

    Invariant after every operation: nobody waits while a slot is free.
    ``running`` may exceed ``max_concurrent`` only when the limit was lowered
    (or observed so) and nothing new starts until it is back under.
    """

    max_concurrent: int
    running: tuple[Entry, ...] = ()
    """Holders of a slot, in queue order."""
    waiting: tuple[Entry, ...] = ()
    """The queue; the head is granted the next free slot."""

    def _fill(self) -> tuple[BulkheadQueue, list[Ticket]]:
        free = self.max_concurrent - len(self.running)
        if free <= 0 or not self.waiting:
            return self, []
        granted = self.waiting[:free]
        queue = replace(self, running=_sorted((*self.running, *granted)),
                        waiting=self.waiting[free:])
        return queue, [e.ticket for e in granted]

    def position(self, ticket: Ticket | str) -> int | None:
        """1-based place in the queue of a waiting ticket, for messages; None otherwise."""
        ticket_id = ticket if isinstance(ticket, str) else ticket.id
        for i, entry in enumerate(self.waiting, start=1):
            if entry.ticket.id == ticket_id:
                return i
        return None

    def is_running(self, ticket: Ticket | str) -> bool:
        ticket_id = ticket if isinstance(ticket, str) else ticket.id
        return any(e.ticket.id == ticket_id for e in self.running)


def rebuild(max_concurrent: int,
            observed: Iterable[tuple[str, Phase, datetime, str | None]]) -> BulkheadQueue:
    """The queue from observed state: ``(ticket id, phase, enqueued_at, severity)`` rows.

    Input order does not matter. A ticket seen as both running and waiting is
    running; a ticket seen twice keeps its earliest enqueue time. Waiting tickets
    fill free slots in queue order, as they would have had the operator not
    restarted (a slot granted but not yet used shows up as waiting and is granted
    again). Returns the same queue whatever order the rows come in.
    """
    running: dict[str, Entry] = {}
    waiting: dict[str, Entry] = {}
    for ticket_id, phase, enqueued_at, severity in observed:
        entry = Entry(Ticket(ticket_id, severity), _ms(enqueued_at))
        target = running if phase == "running" else waiting
        known = target.get(ticket_id)
        if known is None or (entry.enqueued_at, entry.order) < (known.enqueued_at, known.order):
            target[ticket_id] = entry
    for ticket_id in running:
        waiting.pop(ticket_id, None)
    queue = BulkheadQueue(max_concurrent, _sorted(running.values()), _sorted(waiting.values()))
    queue, _ = queue._fill()
    return queue


def rows_of(executions: Iterable[Mapping[str, Any]], namespace: str,
            policies: Iterable[str], exclude: str | None = None
            ) -> dict[str, list[BulkheadRow]]:
    """Bulkhead occupancy, the one place it is read from statuses: by policy, the
    guarded attempts holding a slot (``running``: the step is Running and was
    admitted) or in line (``waiting``: reason BulkheadFull, since circuitAdmittedAt)
    in the unfinished executions of ``namespace`` (``exclude``: one execution's name)."""
    rows: dict[str, list[BulkheadRow]] = {p: [] for p in policies}
    for body in executions:
        meta = body.get("metadata") or {}
        name = str(meta.get("name") or "")
        if meta.get("namespace") != namespace or name == exclude:
            continue
        status = body.get("status") or {}
        if status.get("phase") not in ("Running", "WaitingForApproval"):
            continue
        steps = status.get("steps")
        severity = severity_of(body.get("spec"))
        for step, st in (steps.items() if isinstance(steps, Mapping) else ()):
            if not isinstance(st, Mapping):
                continue
            policy = str(st.get("circuit") or "").split("/", 1)[0]
            since = parse(st.get("circuitAdmittedAt"))
            if policy not in rows or since is None:
                continue
            ticket = f"{namespace}/{name}/{step}"
            if st.get("phase") == "Running":
                rows[policy].append((ticket, "running", since, severity))
            elif st.get("reason") == "BulkheadFull":
                rows[policy].append((ticket, "waiting", since, severity))
    return rows


def in_use(executions: Iterable[Mapping[str, Any]], namespace: str, policy: str) -> int:
    """Slots of ``policy``'s bulkhead held now (the ``running`` rows of :func:`rows_of`)."""
    return sum(1 for row in rows_of(executions, namespace, [policy])[policy]
               if row[1] == "running")
