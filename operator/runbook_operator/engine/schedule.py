"""Schedules: which cron slots are due, missed or next, with time passed in.

A Runbook's ``spec.schedule`` starts executions like a CronJob. Everything the
scheduler decides is decided here, without I/O or clock reads, so that it can be
fuzzed across DST changes, month ends and leap years:

- :func:`compile_schedule` checks the cron expression and the time zone and names
  the field that is wrong (the Runbook's ``Ready=False`` message);
- :func:`next_slot` is the first slot strictly after a moment;
- :func:`decide` takes the last slot already decided (the Runbook's
  ``status.schedule.lastSlotTime``, else its creation) and ``now``, and says which
  slot to start (at most the latest, only within ``startingDeadline``) and how many
  were missed.

Slots are instants (UTC). The cron fields are the wall time of ``timeZone``;
cronsim mimics Debian cron at DST changes: a fixed-time job whose time falls into
the spring-forward gap runs once right after it, and once (not twice) in the
autumn overlap; wildcard-hour jobs run on every wall-clock match, both folds. The
same holds with a seconds field (cronsim alone would not apply the rules there).

Exactly one execution per slot needs no memory: :func:`slot_name` derives the
execution's name from (runbook, slot) alone, so a restart, a second replica or a
retried create gets 409 AlreadyExists from the API server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from runbook_operator.api.common import API_VERSION, parse_duration
from runbook_operator.api.execution import ScheduleRef, TriggeredBy
from runbook_operator.api.runbook import Schedule
from runbook_operator.engine.timeutil import fmt

MAX_NAME = 63
MAX_SCAN = 10_000
"""Slots counted one by one after downtime; beyond, the count is a lower bound."""
_ONE_US = timedelta(microseconds=1)
MIN_DEADLINE = timedelta(seconds=1)
"""The shortest ``startingDeadline``: below it no slot could ever start in time."""

MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

LABEL_TRIGGER = "runbooks.dev/trigger"
ANNOTATION_SCHEDULED_TIME = "runbooks.dev/scheduled-time"


class ScheduleError(ValueError):
    """A schedule that cannot run; the message starts with the field, e.g. ``schedule.cron``."""


@dataclass(frozen=True)
class CompiledSchedule:
    """A checked schedule, ready to compute slots."""

    cron: str
    """The expression as cronsim reads it (macros expanded)."""
    zone: ZoneInfo
    starting_deadline: timedelta | None
    suspend: bool

    def _iter(self, moment: datetime, reverse: bool = False) -> CronSim:
        fields = self.cron.split()
        local = moment.astimezone(self.zone)
        if len(fields) == 6 and not fields[1].startswith("*") and \
                not fields[2].startswith("*"):
            # cronsim keeps Debian cron's DST rules to five-field expressions: with a
            # seconds field a fixed-time job would not run at all on the spring-forward
            # day and twice in the autumn overlap. Iterate the five fields, which get
            # the rules, with the seconds put back.
            seconds = CronSim(self.cron, local).seconds
            it = CronSim(" ".join(fields[1:]), local, reverse=reverse)
            it.seconds = seconds
            it.parts[0] = fields[0].upper()
            return it
        return CronSim(self.cron, local, reverse=reverse)


def compile_schedule(schedule: Schedule) -> CompiledSchedule:
    """Check a schedule; raise :class:`ScheduleError` naming the field at fault."""
    text = " ".join(schedule.cron.split())
    cron = MACROS.get(text.lower(), text)
    if cron.startswith("@"):
        raise ScheduleError(f"schedule.cron: unknown macro {text[:40]!r} (use one of "
                            f"{', '.join(sorted(MACROS))})")
    if len(cron.split()) not in (5, 6):
        raise ScheduleError(f"schedule.cron: {text[:80]!r} has {len(cron.split())} fields, "
                            "expected 5 (minute hour day-of-month month day-of-week) "
                            "or 6 (seconds first)")
    try:
        zone = ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f"schedule.timeZone: unknown time zone "
                            f"{schedule.time_zone[:64]!r} (use an IANA name such as "
                            "Europe/Berlin)") from None
    try:
        probe = CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))
        next(probe)
    except CronSimError as exc:
        raise ScheduleError(f"schedule.cron: {text[:80]!r}: {exc}") from None
    except StopIteration:  # pragma: no cover - cronsim iterates forever
        raise ScheduleError(f"schedule.cron: {text[:80]!r} never fires") from None
    deadline = None
    if schedule.starting_deadline is not None:
        try:
            deadline = parse_duration(schedule.starting_deadline)
        except ValueError as exc:
            raise ScheduleError(f"schedule.startingDeadline: {exc}") from None
        if deadline < MIN_DEADLINE:
            # The scheduler wakes a little after each slot: with no time to start,
            # every slot would be missed and nothing would ever run.
            raise ScheduleError(f"schedule.startingDeadline: {schedule.starting_deadline!r} "
                                "is shorter than 1s; every slot would be missed")
    return CompiledSchedule(cron, zone, deadline, schedule.suspend)


_DST_MARGIN = timedelta(hours=3)
"""Longer than any DST shift (at most 2 h) with room: see :func:`_start`."""


def _start(schedule: CompiledSchedule, after: datetime) -> datetime:
    """Where forward iteration starts to find the slots after ``after``.

    cronsim's Debian rules move a slot of a skipped local time (spring forward) to
    the end of the gap, but only when the iteration starts before the gap by some
    margin: started just before it, the moved slot is passed over. So near a change of
    the zone's offset the iteration starts ``_DST_MARGIN`` earlier and the slots up to
    ``after`` are skipped; elsewhere it starts at ``after`` (no cost for dense crons).
    """
    zone = schedule.zone
    before, later = after - _DST_MARGIN, after + _DST_MARGIN
    if before.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
        return before
    return after


def next_slot(schedule: CompiledSchedule, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (UTC)."""
    it = schedule._iter(_start(schedule, after))
    while True:
        slot = next(it).astimezone(UTC)
        if slot > after:
            return slot


def slots_between(schedule: CompiledSchedule, after: datetime, until: datetime,
                  limit: int = MAX_SCAN) -> tuple[list[datetime], bool]:
    """Slots in ``(after, until]``, at most ``limit``; and whether more were left out."""
    slots: list[datetime] = []
    it = schedule._iter(_start(schedule, after))
    while True:
        slot = next(it).astimezone(UTC)
        if slot <= after or (slots and slot <= slots[-1]):
            continue  # cronsim's DST fix-ups may repeat an instant; never go back
        if slot > until:
            return slots, False
        if len(slots) == limit:
            return slots, True
        slots.append(slot)


def latest_slot(schedule: CompiledSchedule, at: datetime) -> datetime | None:
    """The last slot at or before ``at``, as forward iteration would give it."""
    # Walk back a few slots (cheap, whatever the downtime), then forward from there:
    # forward iteration is the one definition of the slots.
    it = schedule._iter(at + _ONE_US, reverse=True)
    anchor = at
    for _ in range(3):
        try:
            anchor = min(anchor, next(it).astimezone(UTC))
        except StopIteration:  # pragma: no cover - cronsim iterates forever
            break
    # Two hours cover where reverse and forward may disagree (DST shifts are <= 2h).
    slots, _ = slots_between(schedule, anchor - timedelta(hours=2), at, limit=MAX_SCAN)
    return slots[-1] if slots else None


@dataclass(frozen=True)
class Decision:
    """What the scheduler should do now about one Runbook's schedule."""

    start: datetime | None
    """The slot to start an execution for (its name comes from :func:`slot_name`)."""
    missed: int
    """Slots passed over since the last decision (the operator was down), not started."""
    missed_more: bool
    """``missed`` is a lower bound: more slots passed than were counted."""
    first_missed: datetime | None
    last_missed: datetime | None
    skipped: int
    """Slots that passed while suspended (neither started nor missed)."""
    decided_until: datetime | None
    """The new ``lastSlotTime``: the latest slot at or before now, or None if unchanged."""
    next: datetime | None
    """The next slot after now; None while suspended."""


def decide(schedule: CompiledSchedule, now: datetime, last_slot: datetime) -> Decision:
    """Which slot to start at ``now``, the slots up to ``last_slot`` being decided.

    Like a CronJob: of the slots since ``last_slot``, only the latest may start, and
    only if ``startingDeadline`` has not passed since its time; the others are
    missed. While suspended every passing slot is skipped.
    """
    upcoming = next_slot(schedule, now)
    slots, more = slots_between(schedule, last_slot, now)
    if not slots:
        return Decision(None, 0, False, None, None, 0, None,
                        None if schedule.suspend else upcoming)
    latest = latest_slot(schedule, now) if more else slots[-1]
    assert latest is not None
    if schedule.suspend:
        return Decision(None, 0, False, None, None, len(slots), latest, None)
    late = schedule.starting_deadline is not None and now - latest > schedule.starting_deadline
    # Without ``more`` the counted slots end with the latest; with it they all precede it.
    passed = slots if more else slots[:-1]
    missed = [*passed, latest] if late else passed
    last_missed = missed[-1] if missed and (late or not more) else None
    return Decision(None if late else latest, len(missed), more,
                    missed[0] if missed else None, last_missed, 0, latest, upcoming)


def slot_name(runbook: str, slot: datetime) -> str:
    """The execution name of one slot of one runbook: ``<runbook>-<unix seconds>``.

    A runbook name too long to fit 63 characters is shortened and a hash of the
    whole name keeps two such runbooks apart.
    """
    suffix = str(int(slot.astimezone(UTC).timestamp()))
    name = f"{runbook}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(runbook.encode()).hexdigest()[:8]
    head = runbook[: MAX_NAME - len(suffix) - len(digest) - 2].rstrip("-.")
    return f"{head}-{digest}-{suffix}"


def is_slot_execution(body: Mapping[str, Any], runbook: str) -> bool:
    """Whether an execution holding a slot's name is that slot's (a schedule of this
    runbook started it), not one somebody else named so: that one must not stand in
    for the slot, or creating executions could silence a schedule unnoticed."""
    spec = body.get("spec") or {}
    return ((spec.get("runbookRef") or {}).get("name") == runbook
            and (spec.get("triggeredBy") or {}).get("kind") == "Schedule")


def execution_manifest(namespace: str, runbook: str, schedule: Schedule,
                       slot: datetime) -> dict[str, Any]:
    """The RunbookExecution one slot starts (``metadata.name`` is the slot's).

    No severity: a scheduled run has a manual run's priority.
    """
    scheduled = fmt(slot)
    triggered_by = TriggeredBy(kind="Schedule", schedule=ScheduleRef(
        scheduled_time=scheduled, cron=schedule.cron, time_zone=schedule.time_zone))
    return {
        "apiVersion": API_VERSION,
        "kind": "RunbookExecution",
        "metadata": {
            "name": slot_name(runbook, slot),
            "namespace": namespace,
            "labels": {LABEL_TRIGGER: "schedule"},
            "annotations": {ANNOTATION_SCHEDULED_TIME: scheduled},
        },
        "spec": {"runbookRef": {"name": runbook}, "params": dict(schedule.params),
                 "triggeredBy": triggered_by.to_k8s()},
    }


def last_decided(schedule: CompiledSchedule, last_slot: datetime | None,
                 created: datetime | None, generation: Any, now: datetime
                 ) -> tuple[datetime, datetime | None]:
    """Up to when the slots are decided, and a baseline to write when none is.

    ``lastSlotTime`` (``last_slot``) once written. Before that, a Runbook never edited
    had its schedule since its creation (a CronJob's rule: slots since then were due).
    One edited since may have got the schedule in that edit, at a time nobody
    recorded: its slots before now were never due, so none is started late and none
    reported missed; now is written as decided, so the next pass (or a restart) does
    not move the baseline past a slot that came due meanwhile.
    """
    if last_slot is not None:
        return last_slot, None
    if created is not None and (not isinstance(generation, int) or generation <= 1):
        return created, None
    baseline = latest_slot(schedule, now) or now
    return baseline, baseline
