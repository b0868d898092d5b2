"""The scheduler's shell (triggers/schedule.py) against a stand-in for the API server.

The stand-in keeps executions and Runbooks with resourceVersions and answers as the
API server does: 409 for a create of an existing name, 409 for a status patch
carrying a stale resourceVersion.

Cases:
- a due slot: its execution created with the slot's name, then status.schedule
  written (lastScheduleTime, lastExecution, lastSlotTime, nextScheduleTime), one
  ``Scheduled`` Event; the next wake-up is the next slot;
- between slots: no API call at all;
- a crash between the create and the status write: a new scheduler gets 409
  (duplicate), writes the status, one execution in all;
- two replicas deciding on the same Runbook version: one execution, one status
  write wins, the loser decides nothing more; missed slots are counted and reported
  once across both;
- after downtime within startingDeadline: the latest slot starts, the others are
  missed (Event, metric, status.missed); past it: none starts;
- suspended: nothing created, nextScheduleTime removed, slots skipped not missed;
- an invalid schedule (bad cron, unknown zone) or an invalid Runbook starts nothing;
- the API down (503) at create: no status write, looked at again in 5 s;
- a 403 at create: final for that slot, ``ScheduleFailed`` Event, the slot decided;
- an execution not started by the schedule holding a slot's name (in the store, or
  known only from a 409): ScheduleFailed Event, outcome failed, not lastExecution;
- a schedule added in an edit (generation 2) to a Runbook created a month before:
  no late start of the slot before the edit, nothing missed (no Event, no metric),
  the baseline written, so a restart still runs the next slot; a Runbook never
  edited catches up from its creation as a CronJob does.
"""

from __future__ import annotations

import contextlib
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.schedule import slot_name
from runbook_operator.k8s.store import Store
from runbook_operator.observability.metrics import Metrics
from runbook_operator.triggers.schedule import Scheduler


class FakeCustom:
    def __init__(self) -> None:
        self.executions: dict[tuple[str, str], dict[str, Any]] = {}
        self.runbooks: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.rv = 100
        self.fail_create: ApiException | None = None

    def create_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                        plural: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        if self.fail_create is not None:
            raise self.fail_create
        key = (namespace, body["metadata"]["name"])
        if key in self.executions:
            raise ApiException(status=409, reason="AlreadyExists")
        self.executions[key] = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                     plural: str, name: str) -> dict[str, Any]:
        self.calls.append("get")
        if (namespace, name) not in self.executions:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.executions[(namespace, name)])

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str,
                                              plural: str, name: str,
                                              body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("patch")
        current = self.runbooks[(namespace, name)]
        rv = body.get("metadata", {}).get("resourceVersion")
        if rv is not None and rv != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        status = current.setdefault("status", {})
        for field, value in body["status"].items():
            merged = dict(status.get(field) or {})
            for k, v in value.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            status[field] = merged
        self.rv += 1
        current["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(current)


class FakeClients:
    def __init__(self) -> None:
        self.custom = FakeCustom()


class FakeEvents:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    def post(self, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
        self.posted.append((reason, message))


CREATED = "2026-05-01T00:00:00Z"


def make_runbook(api: FakeCustom, schedule: dict[str, Any], name: str = "daily",
                 params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = {"apiVersion": "runbooks.dev/v1alpha1", "kind": "Runbook",
            "metadata": {"name": name, "namespace": "ops", "uid": "u1", "generation": 1,
                         "resourceVersion": "1", "creationTimestamp": CREATED},
            "spec": {"params": params or [], "schedule": schedule,
                     "steps": [{"name": "a", "image": "busybox"}]}}
    api.runbooks[("ops", name)] = body
    return body


def scheduler(clients: FakeClients, metrics: Metrics | None = None,
              events: FakeEvents | None = None) -> Scheduler:
    store = Store()
    for body in clients.custom.runbooks.values():
        store.put_runbook(copy.deepcopy(body))
    return Scheduler(clients, store, metrics or Metrics(), events or FakeEvents(),  # type: ignore[arg-type]
                     is_valid=lambda spec, ns: True)


def t(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def missed_metric(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value(
        "runbook_schedule_missed_total", {"namespace": "ops", "runbook": "daily"}) or 0.0


def test_due_slot_creates_then_writes_status() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *", "timeZone": "Europe/Berlin",
                                  "params": {"n": 1}}, params=[{"name": "n", "type": "integer"}])
    events = FakeEvents()
    s = scheduler(clients, events=events)
    slot = t(2026, 5, 1, 6)  # 08:00 in Berlin (CEST)
    wake = s.tick(slot + timedelta(seconds=1))
    assert clients.custom.calls == ["create", "patch"]
    execution = clients.custom.executions[("ops", slot_name("daily", slot))]
    assert execution["spec"]["triggeredBy"]["schedule"]["scheduledTime"] == \
        "2026-05-01T06:00:00.000Z"
    assert execution["spec"]["params"] == {"n": 1}
    status = clients.custom.runbooks[("ops", "daily")]["status"]["schedule"]
    assert status == {"lastScheduleTime": "2026-05-01T06:00:00.000Z",
                      "lastExecution": slot_name("daily", slot),
                      "lastSlotTime": "2026-05-01T06:00:00.000Z",
                      "nextScheduleTime": "2026-05-02T06:00:00.000Z"}
    assert [r for r, _ in events.posted] == ["Scheduled"]
    assert wake == t(2026, 5, 2, 6)
    # Between slots, nothing is asked of the API server.
    clients.custom.calls.clear()
    assert s.tick(slot + timedelta(hours=3)) == t(2026, 5, 2, 6)
    assert clients.custom.calls == []


def test_first_pass_only_writes_next_time() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *"})
    s = scheduler(clients)
    s.tick(t(2026, 5, 1, 7))
    assert clients.custom.calls == ["patch"]
    assert clients.custom.runbooks[("ops", "daily")]["status"]["schedule"] == {
        "nextScheduleTime": "2026-05-01T08:00:00.000Z"}


def test_crash_between_create_and_status_write() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *"})
    first = scheduler(clients)
    clients.custom.patch_namespaced_custom_object_status = (  # type: ignore[method-assign]
        _crash)
    with contextlib.suppress(RuntimeError):
        first.tick(t(2026, 5, 1, 8, 0, 2))
    del clients.custom.patch_namespaced_custom_object_status
    metrics = Metrics()
    again = scheduler(clients, metrics)
    again.tick(t(2026, 5, 1, 8, 0, 5))
    assert len(clients.custom.executions) == 1
    assert metrics.registry.get_sample_value(
        "runbook_schedule_runs_total",
        {"namespace": "ops", "runbook": "daily", "outcome": "duplicate"}) == 1.0
    assert clients.custom.runbooks[("ops", "daily")]["status"]["schedule"][
        "lastSlotTime"] == "2026-05-01T08:00:00.000Z"


def _crash(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("killed")


def test_two_replicas_one_execution_one_report() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *", "startingDeadline": "1h"})
    m1, m2, e1, e2 = Metrics(), Metrics(), FakeEvents(), FakeEvents()
    a, b = scheduler(clients, m1, e1), scheduler(clients, m2, e2)
    now = t(2026, 5, 4, 8, 30)  # slots of 1, 2, 3 May missed, 4 May within the deadline
    a.tick(now)
    b.tick(now)  # same stale Runbook version: 409 on create and on the status write
    assert list(clients.custom.executions) == [("ops", slot_name("daily", t(2026, 5, 4, 8)))]
    assert missed_metric(m1) + missed_metric(m2) == 3
    reported = [r for r, _ in e1.posted + e2.posted]
    assert reported.count("ScheduleMissed") == 1 and reported.count("Scheduled") == 1
    assert clients.custom.runbooks[("ops", "daily")]["status"]["schedule"]["missed"] == 3
    # b's watch catches up: nothing left to decide.
    b.store.put_runbook(copy.deepcopy(clients.custom.runbooks[("ops", "daily")]))
    clients.custom.calls.clear()
    b.tick(now + timedelta(seconds=1))
    assert clients.custom.calls == []


def test_past_deadline_nothing_starts() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *", "startingDeadline": "10m"})
    metrics, events = Metrics(), FakeEvents()
    scheduler(clients, metrics, events).tick(t(2026, 5, 4, 8, 11))
    assert clients.custom.executions == {}
    assert missed_metric(metrics) == 4
    assert [r for r, _ in events.posted] == ["ScheduleMissed"]
    assert "past startingDeadline" in events.posted[0][1]


def test_suspended() -> None:
    clients = FakeClients()
    body = make_runbook(clients.custom, {"cron": "0 8 * * *", "suspend": True})
    body["status"] = {"schedule": {"nextScheduleTime": "2026-05-01T08:00:00.000Z"}}
    metrics = Metrics()
    assert scheduler(clients, metrics).tick(t(2026, 5, 4, 8, 1)) is None
    assert clients.custom.executions == {}
    assert missed_metric(metrics) == 0
    assert clients.custom.runbooks[("ops", "daily")]["status"]["schedule"] == {
        "lastSlotTime": "2026-05-04T08:00:00.000Z"}


def test_invalid_schedules_start_nothing() -> None:
    for schedule in ({"cron": "0 25 * * *"}, {"cron": "0 8 * * *", "timeZone": "Nowhere/X"}):
        clients = FakeClients()
        make_runbook(clients.custom, schedule)
        assert scheduler(clients).tick(t(2026, 5, 4, 8)) is None
        assert clients.custom.calls == []
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *"})
    s = scheduler(clients)
    s.is_valid = lambda spec, ns: False
    assert s.tick(t(2026, 5, 4, 8)) is None
    assert clients.custom.calls == []


def test_api_down_retries_later_without_status() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *"})
    clients.custom.fail_create = ApiException(status=503, reason="Unavailable")
    now = t(2026, 5, 1, 8, 0, 1)
    assert scheduler(clients).tick(now) == now + timedelta(seconds=5)
    assert "patch" not in clients.custom.calls


def test_forbidden_is_final_for_the_slot() -> None:
    clients = FakeClients()
    make_runbook(clients.custom, {"cron": "0 8 * * *"})
    clients.custom.fail_create = ApiException(status=403, reason="Forbidden")
    events = FakeEvents()
    scheduler(clients, events=events).tick(t(2026, 5, 1, 8, 0, 1))
    status = clients.custom.runbooks[("ops", "daily")]["status"]["schedule"]
    assert status["lastSlotTime"] == "2026-05-01T08:00:00.000Z"
    assert "lastExecution" not in status
    assert [r for r, _ in events.posted] == ["ScheduleFailed"]


def test_schedule_added_to_an_old_runbook_starts_nothing_late_and_misses_nothing() -> None:
    """A Runbook created in April gets a schedule in an edit on 1 May at 09:00: the
    08:00 slot was never due (no late start), and April's slots were not missed
    (no ScheduleMissed Event or metric); the next slot runs as usual."""
    clients = FakeClients()
    body = make_runbook(clients.custom, {"cron": "0 8 * * *"})
    body["metadata"].update(creationTimestamp="2026-04-01T00:00:00Z", generation=2)
    metrics, events = Metrics(), FakeEvents()
    s = scheduler(clients, metrics, events)
    s.tick(t(2026, 5, 1, 9))
    assert clients.custom.executions == {} and events.posted == []
    assert missed_metric(metrics) == 0.0
    status = clients.custom.runbooks[("ops", "daily")]["status"]["schedule"]
    assert status == {"lastSlotTime": "2026-05-01T08:00:00.000Z",
                      "nextScheduleTime": "2026-05-02T08:00:00.000Z"}
    # A new process (a restart) keeps that baseline, and the next slot starts.
    again = scheduler(clients, metrics, events)
    again.tick(t(2026, 5, 2, 8, 0, 1))
    assert list(clients.custom.executions) == [("ops", slot_name("daily", t(2026, 5, 2, 8)))]
    assert [r for r, _ in events.posted] == ["Scheduled"]


def test_runbook_created_with_its_schedule_catches_up_as_a_cronjob() -> None:
    """Never edited (generation 1): the schedule is as old as the Runbook, so slots since
    its creation were due; only the latest starts, the others are missed."""
    clients = FakeClients()
    body = make_runbook(clients.custom, {"cron": "0 8 * * *"})
    body["metadata"]["creationTimestamp"] = "2026-04-28T00:00:00Z"
    events = FakeEvents()
    s = scheduler(clients, events=events)
    s.tick(t(2026, 5, 1, 9))
    assert list(clients.custom.executions) == [("ops", slot_name("daily", t(2026, 5, 1, 8)))]
    assert [r for r, _ in events.posted] == ["Scheduled", "ScheduleMissed"]



def test_a_slot_name_taken_by_another_execution_is_reported_not_counted_as_run() -> None:
    """Somebody created an execution with the 08:00 slot's name (by hand, or to silence
    the schedule): the slot is not run, and not passed off as run either: a
    ScheduleFailed Event and the failed outcome, whether the store has seen it or
    only the API server's 409 says so."""
    for seen in (True, False):
        clients = FakeClients()
        make_runbook(clients.custom, {"cron": "0 8 * * *"})
        name = slot_name("daily", t(2026, 5, 1, 8))
        squatter = {"metadata": {"name": name, "namespace": "ops"},
                    "spec": {"runbookRef": {"name": "daily"},
                             "triggeredBy": {"kind": "Manual"}}}
        clients.custom.executions[("ops", name)] = squatter
        metrics, events = Metrics(), FakeEvents()
        s = scheduler(clients, metrics, events)
        if seen:
            s.store.put_execution(copy.deepcopy(squatter))
        s.tick(t(2026, 5, 1, 8, 0, 1))
        assert [r for r, _ in events.posted] == ["ScheduleFailed"], seen
        assert "taken" in events.posted[0][1]
        assert metrics.registry.get_sample_value("runbook_schedule_runs_total", {
            "namespace": "ops", "runbook": "daily", "outcome": "failed"}) == 1.0
        status = clients.custom.runbooks[("ops", "daily")]["status"]["schedule"]
        assert "lastExecution" not in status  # not passed off as this slot's run
        assert status["lastSlotTime"] == "2026-05-01T08:00:00.000Z"
