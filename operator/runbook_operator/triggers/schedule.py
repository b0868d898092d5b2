"""The scheduler: Runbooks' ``spec.schedule`` slots in, RunbookExecutions out.

Run by every operator replica as one asyncio task. It keeps no state that matters:
what is decided lives in the Runbook's ``status.schedule.lastSlotTime``, and what
is started is named after its slot (:func:`engine.schedule.slot_name`). So for each
due slot it

1. creates the slot's execution; 409 AlreadyExists means another replica, or this
   one before a crash, already did: a duplicate, not an error;
2. then writes ``status.schedule`` as a merge patch guarded by the Runbook's
   ``resourceVersion``; a replica that loses the race re-reads and finds the slot
   decided;
3. only after that write succeeded, posts the Event and counts missed slots, so
   two replicas or a restart never report one slot twice.

A crash between 1 and 2 repeats 1 on restart (409) and then 2. It sleeps until the
earliest next slot of all Runbooks (at most a minute), woken early when a Runbook
changes; between slots it makes no API call. What to start is decided by
:mod:`runbook_operator.engine.schedule` with the time passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from runbook_operator.api.common import EXECUTIONS, GROUP, RUNBOOKS, VERSION
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.schedule import (
    CompiledSchedule,
    Decision,
    ScheduleError,
    compile_schedule,
    decide,
    execution_manifest,
    is_slot_execution,
    last_decided,
    slot_name,
)
from runbook_operator.engine.timeutil import fmt, parse
from runbook_operator.k8s.client import Clients, is_transient, read_object, retrying
from runbook_operator.k8s.events import EventPoster
from runbook_operator.k8s.store import Key, Store
from runbook_operator.observability.logs import get_logger
from runbook_operator.observability.metrics import Metrics

log = logging.getLogger("runbook_operator.schedule")
decisions_log = get_logger("runbook_operator.schedule")



@dataclass
class SchedulerSettings:
    """How often the scheduler looks when nothing is due."""

    max_sleep: float = 60.0
    """Longest sleep between passes (a guard against a clock jump; slots wake it)."""
    conflict_retry: float = 0.2
    """Delay before retrying a Runbook whose status write lost a race."""


@dataclass(frozen=True)
class _Compiled:
    generation: Any
    spec: RunbookSpec | None
    schedule: CompiledSchedule | None


class Scheduler:
    """Starts the executions of Runbook schedules; see the module docstring."""

    def __init__(self, clients: Clients, store: Store, metrics: Metrics, events: EventPoster,
                 is_valid: Callable[[RunbookSpec, str], bool],
                 settings: SchedulerSettings | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clients = clients
        self.store = store
        self.metrics = metrics
        self.events = events
        self.is_valid = is_valid
        self.settings = settings or SchedulerSettings()
        self.clock = clock
        self._compiled: dict[Key, _Compiled] = {}
        self._written: dict[Key, dict[str, Any]] = {}
        """The Runbook as our last status write returned it, until the watch catches up."""
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """A Runbook changed: look again now (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Forever: act on due slots, then sleep until the next one."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            try:
                wake_at = await asyncio.to_thread(self.tick, self.clock())
            except Exception:
                log.exception("schedule pass failed; again in 5s")
                wake_at = self.clock() + timedelta(seconds=5)
            delay = self.settings.max_sleep
            if wake_at is not None:
                delay = min(delay, max(0.0, (wake_at - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    # -- one pass (in a thread: the kubernetes client blocks) ------------------------------

    def tick(self, now: datetime) -> datetime | None:
        """Act on every Runbook's due slots; the earliest moment to look again."""
        earliest: datetime | None = None
        for key in list(self.store.runbooks):
            body = self._current(key)
            if body is None:
                continue
            try:
                wake_at = self.reconcile(key, body, now)
            except Exception as exc:
                log.warning("schedule of Runbook %s/%s: %s; again in 5s", *key, exc)
                wake_at = now + timedelta(seconds=5)
            if wake_at is not None and (earliest is None or wake_at < earliest):
                earliest = wake_at
        for key in set(self._compiled) - set(self.store.runbooks):
            self._compiled.pop(key, None)
            self._written.pop(key, None)
        return earliest

    def _current(self, key: Key) -> dict[str, Any] | None:
        body = self.store.runbooks.get(key)
        written = self._written.get(key)
        if body is None:
            return None
        if written is not None and \
                not self.store.runbook_seen(key, _version(written)) and \
                _generation(body) <= _generation(written):
            return written  # the watch has not brought our write yet: it is the newest
        self._written.pop(key, None)
        return body

    def compiled(self, key: Key, body: Mapping[str, Any]) -> CompiledSchedule | None:
        """The Runbook's schedule if it has one and the Runbook is valid (cached per generation)."""
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        cached = self._compiled.get(key)
        if cached is not None and cached.generation == generation and generation is not None:
            return cached.schedule
        raw = body.get("spec")
        schedule: CompiledSchedule | None = None
        spec: RunbookSpec | None = None
        if isinstance(raw, Mapping) and raw.get("schedule"):
            try:
                spec = RunbookSpec.model_validate(raw)
                if spec.schedule is not None and self.is_valid(spec, key[0]):
                    schedule = compile_schedule(spec.schedule)
            except (ValidationError, ScheduleError, ValueError):
                schedule = None  # Ready=False says why
        self._compiled[key] = _Compiled(generation, spec, schedule)
        return schedule

    def reconcile(self, key: Key, body: dict[str, Any], now: datetime) -> datetime | None:
        """Act on one Runbook's due slots; when to look at it again (None: never)."""
        schedule = self.compiled(key, body)
        spec = self._compiled[key].spec
        if schedule is None or spec is None or spec.schedule is None:
            return None
        meta = body["metadata"]
        current = dict((body.get("status") or {}).get("schedule") or {})
        last, baseline = last_decided(schedule, parse(current.get("lastSlotTime")),
                                      parse(meta.get("creationTimestamp")),
                                      meta.get("generation"), now)
        decision = decide(schedule, now, last)
        desired = dict(current)
        if baseline is not None:
            desired["lastSlotTime"] = fmt(baseline)
        desired["nextScheduleTime"] = fmt(decision.next) if decision.next else None
        outcome = None
        if decision.start is not None:
            outcome = self._start(key, spec, decision.start)
            if outcome == "retry":
                return now + timedelta(seconds=5)
            if outcome != "failed":
                desired["lastScheduleTime"] = fmt(decision.start)
                desired["lastExecution"] = slot_name(key[1], decision.start)
        if decision.decided_until is not None:
            desired["lastSlotTime"] = fmt(decision.decided_until)
        if decision.missed:
            desired["missed"] = int(current.get("missed") or 0) + decision.missed
        # None deletes a field in a merge patch; unchanged otherwise means no write.
        if {k: v for k, v in desired.items() if v is not None} != current:
            if not self._write(key, body, desired):
                return now + timedelta(seconds=self.settings.conflict_retry)
            self._report(key, body, decision, outcome)
        return decision.next

    def _start(self, key: Key, spec: RunbookSpec, slot: datetime) -> str:
        """Create the slot's execution: created, duplicate, failed, or retry (API down)."""
        assert spec.schedule is not None
        manifest = execution_manifest(key[0], key[1], spec.schedule, slot)
        name = manifest["metadata"]["name"]
        try:
            existing = self.store.executions.get((key[0], name))
            if existing is not None:
                outcome = "duplicate" if is_slot_execution(existing, key[1]) else "taken"
            else:
                self._create(key[0], manifest)
                outcome = "created"
        except ApiException as exc:
            if exc.status == 409:
                existing = self._read(key[0], name)
                outcome = "taken" if existing is not None and \
                    not is_slot_execution(existing, key[1]) else "duplicate"
            elif is_transient(exc):
                log.warning("could not create %s/%s for its schedule (%s); retrying",
                            key[0], name, exc.status)
                return "retry"
            else:
                # 403, 404 (namespace going), 422: final for this slot.
                outcome = "failed"
                self.events.post(self._ref(key), "ScheduleFailed",
                                 f"could not start {name} for the slot {fmt(slot)}: "
                                 f"{exc.status} {exc.reason}", warning=True)
        except Exception as exc:
            if is_transient(exc):
                return "retry"
            raise
        if outcome == "taken":
            # Final for this slot, and said loudly: an execution named like the slot
            # that this schedule did not start (made by hand, or to silence it).
            outcome = "failed"
            self.events.post(self._ref(key), "ScheduleFailed",
                             f"could not start the slot {fmt(slot)}: the name {name} is "
                             "taken by an execution this schedule did not start",
                             warning=True)
        self.metrics.schedule_run(key[0], key[1], outcome)
        decisions_log.info("schedule decision", namespace=key[0], runbook=key[1],
                           execution=name, slot=fmt(slot), outcome=outcome)
        return outcome

    def _write(self, key: Key, body: Mapping[str, Any], schedule: dict[str, Any]) -> bool:
        """Write status.schedule if the Runbook is still the version decided on."""
        payload = {"metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                   "status": {"schedule": schedule}}
        try:
            result = self._patch(key, payload)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False  # changed or gone meanwhile: decide again on the new version
            raise
        self._written[key] = result
        return True

    def _report(self, key: Key, body: Mapping[str, Any], decision: Decision,
                outcome: str | None) -> None:
        ref = self._ref(key, body)
        if decision.start is not None and outcome == "created":
            self.events.post(ref, "Scheduled", f"started {slot_name(key[1], decision.start)} "
                                               f"for the slot {fmt(decision.start)}")
        if decision.missed:
            self.metrics.schedule_missed_slots(key[0], key[1], decision.missed)
            span = (f"{fmt(decision.first_missed)} .. {fmt(decision.last_missed)}"
                    if decision.first_missed and decision.last_missed and
                    decision.first_missed != decision.last_missed
                    else fmt(decision.first_missed) if decision.first_missed else "")
            count = f"{decision.missed}{'+' if decision.missed_more else ''}"
            why = "past startingDeadline" if decision.start is None else \
                "only the latest slot is caught up"
            self.events.post(ref, "ScheduleMissed",
                             f"missed {count} slot(s) {span} while the operator was not "
                             f"running ({why})", warning=True)
            decisions_log.warning("schedule missed", namespace=key[0], runbook=key[1],
                                  missed=decision.missed, first=fmt(decision.first_missed)
                                  if decision.first_missed else None)

    def _ref(self, key: Key, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        meta = (body or self.store.runbooks.get(key) or {}).get("metadata") or {}
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook",
                "metadata": {"name": key[1], "namespace": key[0], "uid": meta.get("uid")}}

    @retrying
    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return read_object(self.clients, EXECUTIONS, namespace, name)

    @retrying
    def _create(self, namespace: str, manifest: dict[str, Any]) -> None:
        self.clients.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, EXECUTIONS, manifest)

    @retrying
    def _patch(self, key: Key, payload: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.clients.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, key[0], RUNBOOKS, key[1], payload)
        return result


def _version(body: Mapping[str, Any]) -> str:
    """Opaque: compared for equality only (the watch's order says which is newer)."""
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


def _generation(body: Mapping[str, Any]) -> int:
    generation = (body.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else 0
