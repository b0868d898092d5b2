"""Schedules (engine/schedule.py): cron slots, missed slots, names, with the clock passed in.

Cases:
- compile: five and six fields, macros; a wrong field count, a bad field, an unknown
  macro, an unknown time zone and a bad startingDeadline are refused naming the field;
  hostile crons (step 0, Feb 30 and 31 April that never fire, huge ranges, @every,
  @reboot, Jenkins' H, Quartz's ?, a year field) and zones (paths, NUL, offsets) are
  refused at once, never iterated; a startingDeadline under 1s (every slot would be
  missed) is refused;
- validation: a Runbook with a bad cron or time zone, an undeclared or mistyped
  schedule parameter is InvalidSchedule naming ``schedule.<field>``;
- DST (Europe/Berlin): a daily 02:30 job runs once at 03:00 on the spring-forward day
  and once on the autumn day; an every-30-minutes job runs in both folds of the
  autumn overlap and not in the spring gap; America/New_York likewise;
- month ends and leap years: day 31 skips short months, 29 February only in leap
  years, ``L``-less month-end days in a time zone;
- decide: nothing due; the slot at now starts; after downtime only the latest starts
  and the others are missed; past startingDeadline all are missed; without a deadline
  the latest starts however late; suspended slots are skipped and no next time; an
  every-second schedule down for 10 s; a downtime longer than the scan bound gives a
  lower bound and still the right latest slot;
- names: deterministic per (runbook, slot), at most 63 characters, long runbook names
  with one prefix kept apart, never a trailing '-';
- manifest: triggeredBy Schedule with the slot, label and annotation, the params;
- properties (hypothesis, generated crons in zones with DST, 2000..2040): next(t) > t;
  no slot between t and next(t) (next of any moment in between is the same slot);
  latest_slot agrees with next; iterating from two starting points gives the same
  slots; decide starts exactly the latest slot within the deadline and counts every
  other slot since the last decided one as missed;
- DST in several zones: gaps at midnight (Santiago), 30-minute shifts (Lord Howe),
  02:45 gaps (Chatham), New York; fixed-time jobs run once right after a gap and
  once in an overlap, also with the seconds field (six fields); wildcard jobs follow
  the wall clock (24.5-, 23.5-, 25- and 23-hour days); hypothesis: a fixed-time
  daily job, five or six fields, runs exactly once on every local day 2000..2040
  in zones with DST.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSimError
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runbook_operator.api.runbook import RunbookSpec, Schedule
from runbook_operator.engine.schedule import (
    ANNOTATION_SCHEDULED_TIME,
    MAX_SCAN,
    CompiledSchedule,
    ScheduleError,
    compile_schedule,
    decide,
    execution_manifest,
    last_decided,
    latest_slot,
    next_slot,
    slot_name,
    slots_between,
)
from runbook_operator.engine.validation import validate_spec

BERLIN = ZoneInfo("Europe/Berlin")


def sched(cron: str, zone: str = "UTC", deadline: str | None = None,
          suspend: bool = False) -> CompiledSchedule:
    return compile_schedule(Schedule(cron=cron, time_zone=zone, starting_deadline=deadline,
                                     suspend=suspend))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


# -- compile and validate --------------------------------------------------------------


@pytest.mark.parametrize("cron", ["0 8 * * *", "*/2 * * * * *", "@daily", "@HOURLY",
                                  "0 0 L * *", "0 9 * * MON-FRI", "  0  8 * * * "])
def test_compiles(cron: str) -> None:
    compiled = compile_schedule(Schedule(cron=cron, time_zone="Europe/Berlin"))
    after = datetime(2027, 1, 1, tzinfo=UTC)
    first = next_slot(compiled, after)
    assert after < first <= after + timedelta(days=31)  # each fires within a month
    assert next_slot(compiled, first) > first


@pytest.mark.parametrize(("cron", "zone", "deadline", "field"), [
    ("0 8 * *", "UTC", None, "schedule.cron"),
    ("0 8 * * * * *", "UTC", None, "schedule.cron"),
    ("61 8 * * *", "UTC", None, "schedule.cron"),
    ("0 8 31 2 *", "UTC", None, "schedule.cron"),
    ("@fortnightly", "UTC", None, "schedule.cron"),
    ("0 8 * * *", "Europe/Berln", None, "schedule.timeZone"),
    ("0 8 * * *", "../etc/passwd", None, "schedule.timeZone"),
    ("0 8 * * *", "UTC", "99999999999999999999h", "schedule.startingDeadline"),
    ("0 8 * * *", "UTC", "0s", "schedule.startingDeadline"),
    ("0 8 * * *", "UTC", "500ms", "schedule.startingDeadline"),
    ("*/0 * * * *", "UTC", None, "schedule.cron"),
    ("0/0 * * * * *", "UTC", None, "schedule.cron"),
    ("0 0 30 2 *", "UTC", None, "schedule.cron"),
    ("0 0 0 31 4,6,9,11 *", "UTC", None, "schedule.cron"),
    ("0-99999 * * * *", "UTC", None, "schedule.cron"),
    ("1-1000000000/1 * * * *", "UTC", None, "schedule.cron"),
    ("@every 5m", "UTC", None, "schedule.cron"),
    ("@reboot", "UTC", None, "schedule.cron"),
    ("H * * * *", "UTC", None, "schedule.cron"),
    ("? ? ? ? ?", "UTC", None, "schedule.cron"),
    ("0 0 * * 8", "UTC", None, "schedule.cron"),
    ("0 0 1 1 * 2099", "UTC", None, "schedule.cron"),
    ("0 8 * * *", "/etc/localtime", None, "schedule.timeZone"),
    ("0 8 * * *", "UTC\x00", None, "schedule.timeZone"),
    ("0 8 * * *", "+01:00", None, "schedule.timeZone"),
    ("0 8 * * *", "Etc/GMT+25", None, "schedule.timeZone"),
])
def test_refused_naming_the_field(cron: str, zone: str, deadline: str | None,
                                  field: str) -> None:
    with pytest.raises(ScheduleError) as info:
        sched(cron, zone, deadline)
    assert str(info.value).startswith(field + ":")


def runbook(schedule: dict[str, object], params: list[dict[str, object]] | None = None
            ) -> RunbookSpec:
    return RunbookSpec.model_validate({
        "params": params or [], "schedule": schedule,
        "steps": [{"name": "a", "image": "busybox"}]})


def test_validation_names_the_field() -> None:
    problems = validate_spec(runbook({"cron": "0 25 * * *"}))
    assert [p.reason for p in problems] == ["InvalidSchedule"]
    assert "schedule.cron" in str(problems[0])
    problems = validate_spec(runbook({"cron": "0 8 * * *", "timeZone": "Mars/Olympus"}))
    assert "schedule.timeZone" in str(problems[0])
    problems = validate_spec(runbook({"cron": "0 8 * * *", "params": {"x": 1}}))
    assert "schedule.params.x" in str(problems[0])
    problems = validate_spec(runbook({"cron": "0 8 * * *", "params": {"n": "many"}},
                                     [{"name": "n", "type": "integer"}]))
    assert problems and "schedule.params.n" in str(problems[0])
    assert validate_spec(runbook({"cron": "0 8 * * *", "params": {"n": 3}},
                                 [{"name": "n", "type": "integer"}])) == []


# -- DST, month ends, leap years ---------------------------------------------------------


def day_slots(s: CompiledSchedule, zone: ZoneInfo, *day: int) -> list[datetime]:
    start = local(zone, *day, 0, 0) - timedelta(microseconds=1)
    end = local(zone, *day, 23, 59, 59)
    slots, more = slots_between(s, start, end)
    assert not more
    return slots


def test_spring_forward_fixed_time_runs_once_after_the_gap() -> None:
    s = sched("30 2 * * *", "Europe/Berlin")
    assert day_slots(s, BERLIN, 2026, 3, 29) == [local(BERLIN, 2026, 3, 29, 3, 0)]
    assert day_slots(s, BERLIN, 2026, 3, 30) == [local(BERLIN, 2026, 3, 30, 2, 30)]


def test_fall_back_fixed_time_runs_once() -> None:
    s = sched("30 2 * * *", "Europe/Berlin")
    assert day_slots(s, BERLIN, 2026, 10, 25) == [local(BERLIN, 2026, 10, 25, 2, 30)]


def test_wildcard_hours_run_in_both_folds_and_not_in_the_gap() -> None:
    s = sched("*/30 * * * *", "Europe/Berlin")
    autumn = day_slots(s, BERLIN, 2026, 10, 25)
    assert len(autumn) == 50  # a 25-hour day
    assert local(BERLIN, 2026, 10, 25, 2, 30, fold=1) in autumn
    assert local(BERLIN, 2026, 10, 25, 2, 30, fold=0) in autumn
    spring = day_slots(s, BERLIN, 2026, 3, 29)
    assert len(spring) == 46  # a 23-hour day
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(spring))


def test_new_york_daily_keeps_wall_time_across_dst() -> None:
    zone = ZoneInfo("America/New_York")
    s = sched("0 8 * * *", "America/New_York")
    before = next_slot(s, local(zone, 2026, 3, 6, 9, 0))  # DST begins 8 March
    after = next_slot(s, before)
    assert before.astimezone(zone).hour == after.astimezone(zone).hour == 8
    assert after - before == timedelta(hours=23)


def test_month_ends_and_leap_years() -> None:
    s = sched("0 0 31 * *")
    slots, _ = slots_between(s, utc(2026, 1, 1), utc(2026, 12, 31, 23))
    assert [d.month for d in slots] == [1, 3, 5, 7, 8, 10, 12]
    leap = sched("0 12 29 2 *", "Europe/Berlin")
    assert next_slot(leap, utc(2024, 3, 1)) == local(BERLIN, 2028, 2, 29, 12, 0)
    last = sched("0 0 L * *", "Europe/Berlin")
    assert next_slot(last, utc(2028, 2, 1)).astimezone(BERLIN).day == 29


# -- decide ----------------------------------------------------------------------------------


def test_nothing_due() -> None:
    s = sched("0 8 * * *")
    d = decide(s, utc(2026, 5, 1, 7), utc(2026, 4, 30, 8))
    assert (d.start, d.missed, d.decided_until) == (None, 0, None)
    assert d.next == utc(2026, 5, 1, 8)


def test_slot_at_now_starts() -> None:
    s = sched("0 8 * * *", deadline="10m")
    d = decide(s, utc(2026, 5, 1, 8), utc(2026, 4, 30, 8))
    assert (d.start, d.missed, d.decided_until) == (utc(2026, 5, 1, 8), 0, utc(2026, 5, 1, 8))
    assert d.next == utc(2026, 5, 2, 8)


def test_downtime_starts_only_the_latest_within_the_deadline() -> None:
    s = sched("0 8 * * *", deadline="10m")
    d = decide(s, utc(2026, 5, 4, 8, 9), utc(2026, 4, 30, 8))
    assert d.start == utc(2026, 5, 4, 8)
    assert (d.missed, d.first_missed, d.last_missed) == (3, utc(2026, 5, 1, 8),
                                                         utc(2026, 5, 3, 8))


def test_past_the_deadline_all_are_missed() -> None:
    s = sched("0 8 * * *", deadline="10m")
    d = decide(s, utc(2026, 5, 4, 8, 11), utc(2026, 4, 30, 8))
    assert d.start is None
    assert (d.missed, d.last_missed, d.decided_until) == (4, utc(2026, 5, 4, 8),
                                                          utc(2026, 5, 4, 8))


def test_without_deadline_the_latest_starts_however_late() -> None:
    s = sched("0 8 * * *")
    d = decide(s, utc(2026, 5, 4, 23), utc(2026, 4, 30, 8))
    assert (d.start, d.missed) == (utc(2026, 5, 4, 8), 3)


def test_suspended_skips() -> None:
    s = sched("0 8 * * *", suspend=True)
    d = decide(s, utc(2026, 5, 4, 9), utc(2026, 4, 30, 8))
    assert (d.start, d.missed, d.skipped, d.next) == (None, 0, 4, None)
    assert d.decided_until == utc(2026, 5, 4, 8)


def test_every_second_down_for_ten_seconds() -> None:
    s = sched("* * * * * *", deadline="5s")
    d = decide(s, utc(2026, 5, 4, 9, 0, 10, 300_000), utc(2026, 5, 4, 9, 0, 0))
    assert d.start == utc(2026, 5, 4, 9, 0, 10)
    assert d.missed == 9


def test_downtime_beyond_the_scan_bound() -> None:
    s = sched("* * * * * *")
    now = utc(2026, 5, 4, 12, 0, 0, 500)
    d = decide(s, now, utc(2026, 5, 1))
    assert d.missed_more and d.missed == MAX_SCAN
    assert d.start == utc(2026, 5, 4, 12) and d.last_missed is None


# -- names and manifest ----------------------------------------------------------------------


def test_names() -> None:
    slot = utc(2026, 5, 4, 8)
    assert slot_name("daily", slot) == f"daily-{int(slot.timestamp())}"
    assert slot_name("daily", slot) == slot_name("daily", slot.astimezone(BERLIN))
    assert slot_name("daily", slot) != slot_name("daily", slot + timedelta(seconds=1))
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    assert slot_name(long_a, slot) != slot_name(long_b, slot)
    for name in (long_a, "b" * 253, "c" * 50 + "-" * 3 + "d"):
        result = slot_name(name, slot)
        assert len(result) <= 63 and not result.startswith("-")
        assert "--" not in result.replace("-" * 3, "")


def test_manifest() -> None:
    schedule = Schedule(cron="0 8 * * *", time_zone="Europe/Berlin", params={"n": 2})
    slot = utc(2026, 5, 4, 6)
    body = execution_manifest("ops", "daily", schedule, slot)
    assert body["metadata"]["name"] == slot_name("daily", slot)
    assert body["metadata"]["labels"] == {"runbooks.dev/trigger": "schedule"}
    assert body["metadata"]["annotations"][ANNOTATION_SCHEDULED_TIME] == \
        "2026-05-04T06:00:00.000Z"
    assert body["spec"] == {
        "runbookRef": {"name": "daily"}, "params": {"n": 2},
        "triggeredBy": {"kind": "Schedule", "schedule": {
            "scheduledTime": "2026-05-04T06:00:00.000Z", "cron": "0 8 * * *",
            "timeZone": "Europe/Berlin"}}}
    assert "severity" not in body["spec"]


# -- properties ------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Chatham", "America/Santiago"]


@st.composite
def crons(draw: st.DrawFn) -> str:
    def field(values: range, step_max: int) -> str:
        kind = draw(st.sampled_from(["*", "n", "list", "step", "range"]))
        if kind == "*":
            return "*"
        if kind == "n":
            return str(draw(st.sampled_from(values)))
        if kind == "list":
            picks = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True))
            return ",".join(map(str, sorted(picks)))
        if kind == "step":
            return f"*/{draw(st.integers(1, step_max))}"
        a = draw(st.sampled_from(values))
        b = draw(st.sampled_from(values))
        return f"{min(a, b)}-{max(a, b)}"
    seconds = draw(st.booleans())
    parts = [field(range(0, 60), 30), field(range(0, 24), 12), field(range(1, 32), 15),
             field(range(1, 13), 6), field(range(0, 7), 3)]
    if seconds:
        parts.insert(0, field(range(0, 60), 30))
    return " ".join(parts)


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1),
                       timezones=st.just(UTC))


def compiled(cron: str, zone: str, deadline: str | None = None) -> CompiledSchedule:
    try:
        return sched(cron, zone, deadline)
    except ScheduleError:
        assume(False)
        raise


@settings(max_examples=400, deadline=None)
@given(crons(), st.sampled_from(ZONES), moments, st.floats(0.0, 1.0))
def test_next_is_later_and_skips_nothing(cron: str, zone: str, t: datetime,
                                         frac: float) -> None:
    s = compiled(cron, zone)
    try:
        first = next_slot(s, t)
        second = next_slot(s, first)
    except (CronSimError, StopIteration):  # pragma: no cover - compile refused those
        raise
    assert t < first < second
    between = t + (first - t) * frac
    if between < first:
        assert next_slot(s, between) == first
    assert next_slot(s, first - timedelta(microseconds=1)) == first
    assert latest_slot(s, first) == first
    assert latest_slot(s, second - timedelta(microseconds=1)) == first


@settings(max_examples=200, deadline=None)
@given(crons(), st.sampled_from(ZONES), moments, st.integers(1, 400_000))
def test_iteration_agrees_from_any_start(cron: str, zone: str, t: datetime,
                                         offset_s: int) -> None:
    s = compiled(cron, zone)
    later = t + timedelta(seconds=offset_s)
    until = later + timedelta(days=3)
    from_t, more_t = slots_between(s, t, until, limit=2_000)
    from_later, more_later = slots_between(s, later, until, limit=2_000)
    assume(not more_t and not more_later)
    assert [x for x in from_t if x > later] == from_later
    assert from_t == sorted(set(from_t))


@settings(max_examples=300, deadline=None)
@given(crons(), st.sampled_from(ZONES), moments, st.integers(0, 3 * 86_400),
       st.sampled_from([None, "1s", "10m", "2h"]))
def test_decide_starts_the_latest_within_deadline(cron: str, zone: str, last: datetime,
                                                  downtime_s: int,
                                                  deadline: str | None) -> None:
    s = compiled(cron, zone, deadline)
    now = last + timedelta(seconds=downtime_s, microseconds=7)
    slots, more = slots_between(s, last, now)
    d = decide(s, now, last)
    assert d.next is not None and d.next > now
    if not slots:
        assert (d.start, d.missed, d.decided_until) == (None, 0, None)
        return
    latest = latest_slot(s, now)
    assert d.decided_until == latest
    within = s.starting_deadline is None or now - latest <= s.starting_deadline  # type: ignore[operator]
    assert d.start == (latest if within else None)
    if not more:
        assert d.missed + (1 if d.start else 0) == len(slots)
        assert d.missed_more is False


# -- DST in several zones, and the seconds field ---------------------------------------------


@pytest.mark.parametrize(("cron", "zone", "day", "expected"), [
    # Spring-forward gaps: a fixed-time job in the gap runs once, right after it.
    ("0 0 * * *", "America/Santiago", (2026, 9, 6), ["01:00:00-0300"]),  # gap at midnight
    ("15 2 * * *", "Australia/Lord_Howe", (2026, 10, 4), ["02:30:00+1100"]),  # 30-min shift
    ("0 3 * * *", "Pacific/Chatham", (2026, 9, 27), ["03:45:00+1345"]),  # gap 02:45-03:45
    ("30 2 * * *", "America/New_York", (2026, 3, 8), ["03:00:00-0400"]),
    # Autumn overlaps: once, in the first fold.
    ("45 1 * * *", "Australia/Lord_Howe", (2026, 4, 5), ["01:45:00+1100"]),
    ("0 3 * * *", "Pacific/Chatham", (2026, 4, 5), ["03:00:00+1345"]),
    ("30 1 * * *", "America/New_York", (2026, 11, 1), ["01:30:00-0400"]),
    # The same with the seconds field (six fields): the same rules.
    ("0 30 2 * * *", "Europe/Berlin", (2026, 3, 29), ["03:00:00+0200"]),
    ("15 30 2 * * *", "Europe/Berlin", (2026, 3, 29), ["03:00:15+0200"]),
    ("0 30 2 * * *", "Europe/Berlin", (2026, 10, 25), ["02:30:00+0200"]),
    ("0 0 0 * * *", "America/Santiago", (2026, 9, 6), ["01:00:00-0300"]),
    ("0 30 2 * * *", "America/New_York", (2026, 3, 8), ["03:00:00-0400"]),
    ("0 30 1 * * *", "America/New_York", (2026, 11, 1), ["01:30:00-0400"]),
])
def test_dst_fixed_time_in_several_zones(cron: str, zone: str, day: tuple[int, int, int],
                                         expected: list[str]) -> None:
    z = ZoneInfo(zone)
    found = [s.astimezone(z).strftime("%H:%M:%S%z")
             for s in day_slots(sched(cron, zone), z, *day)]
    assert found == expected


@pytest.mark.parametrize(("cron", "zone", "day", "count"), [
    ("*/15 * * * *", "Australia/Lord_Howe", (2026, 4, 5), 98),   # a 24.5-hour day
    ("*/15 * * * *", "Australia/Lord_Howe", (2026, 10, 4), 94),  # a 23.5-hour day
    ("0 */30 * * * *", "Europe/Berlin", (2026, 10, 25), 50),
    ("0 */30 * * * *", "Europe/Berlin", (2026, 3, 29), 46),
    ("0 * * * *", "America/New_York", (2026, 11, 1), 25),
])
def test_dst_wildcard_hours_follow_the_wall_clock(cron: str, zone: str,
                                                  day: tuple[int, int, int],
                                                  count: int) -> None:
    z = ZoneInfo(zone)
    start = local(z, *day, 0, 0) - timedelta(microseconds=1)
    next_day = datetime(*day, tzinfo=z) + timedelta(days=1)  # type: ignore[misc]
    end = next_day.replace(hour=0).astimezone(UTC) - timedelta(microseconds=1)
    slots, _ = slots_between(sched(cron, zone), start, end)
    assert len(slots) == count


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ZONES[1:]), st.integers(0, 59), st.integers(0, 59), st.integers(0, 23),
       st.booleans(), st.dates(min_value=datetime(2000, 1, 2).date(),
                               max_value=datetime(2039, 12, 30).date()))
def test_a_daily_job_runs_once_every_day(zone: str, second: int, minute: int, hour: int,
                                         with_seconds: bool, day: object) -> None:
    """A fixed-time daily job runs exactly once on every local day, DST or not."""
    z = ZoneInfo(zone)
    cron = f"{minute} {hour} * * *"
    if with_seconds:
        cron = f"{second} {cron}"
    s = sched(cron, zone)
    start = datetime.combine(day, datetime.min.time(), tzinfo=z)  # type: ignore[call-overload]
    begin = start.astimezone(UTC) - timedelta(microseconds=1)
    end = (start + timedelta(days=1)).astimezone(UTC) - timedelta(microseconds=1)
    slots, _ = slots_between(s, begin, end)
    assert len(slots) == 1, (cron, zone, day, slots)


def test_a_slot_moved_out_of_a_midnight_gap_is_found_from_just_before_it() -> None:
    """Sao Paulo sprang forward at midnight (2003-10-19 00:00 -> 01:00): a slot of the
    skipped hour runs at 01:00 local (03:00 UTC) whether the search starts hours before
    the gap or a microsecond before (found by hypothesis: cronsim passed it over when
    its iteration started just before the gap)."""
    s = sched("*/1 */2 */2 * */2", "America/Sao_Paulo")
    moved = datetime(2003, 10, 19, 3, 0, tzinfo=UTC)
    for start in (datetime(2003, 10, 18, 20, 0, tzinfo=UTC),
                  moved - timedelta(minutes=30), moved - timedelta(microseconds=1)):
        assert next_slot(s, start) == moved, start
    assert latest_slot(s, moved) == moved


def test_the_baseline_of_a_schedule_never_decided() -> None:
    """lastSlotTime once written; else a Runbook never edited counts from its creation;
    one edited since (the schedule may be new) starts from now, written as decided."""
    s = sched("0 * * * *", "UTC")
    now = datetime(2026, 12, 8, 10, 30, tzinfo=UTC)
    written = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    created = datetime(2026, 12, 1, tzinfo=UTC)
    assert last_decided(s, written, created, 5, now) == (written, None)
    assert last_decided(s, None, created, 1, now) == (created, None)
    assert last_decided(s, None, created, None, now) == (created, None)
    edited = last_decided(s, None, created, 2, now)
    assert edited == (datetime(2026, 12, 8, 10, 0, tzinfo=UTC),) * 2
