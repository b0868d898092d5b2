"""The planner's typed attempt records (``Plan.attempts``), read by spans and metrics.

Cases: a retried step yields AttemptStarted for attempts 1 and 2 (at the pass's
time, naming the Job) and AttemptEnded for each with its Job's observed start and
finish; a cancelled running attempt ends at the cancel, with its Job's start; a
Job adopted from a lost pass starts a record too. Over every pass of a run, each
attempt starts once and ends once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta

from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import AttemptEnded, AttemptStarted, ObservedJob

from .simulator import Outcome, Simulator, dag_spec


def records(sim: Simulator) -> list[AttemptStarted | AttemptEnded]:
    return [r for p in sim.plans for r in p.attempts]


def test_a_retried_step_starts_and_ends_each_attempt_once() -> None:
    retry = {"limit": 1, "backoff": {"initial": "5s", "jitter": 0}}
    sim = Simulator.start(dag_spec([{"name": "a", "retry": retry}]))
    sim.script("a", Outcome.fail(1, after=10), Outcome.ok(after=10))
    sim.run()
    started = [r for r in records(sim) if isinstance(r, AttemptStarted)]
    ended = [r for r in records(sim) if isinstance(r, AttemptEnded)]
    assert [(r.step, r.attempt) for r in started] == [("a", 1), ("a", 2)]
    assert [(r.step, r.attempt) for r in ended] == [("a", 1), ("a", 2)]
    for s, e in zip(started, ended, strict=True):
        assert s.job == e.job
        assert e.finished_at - s.at == timedelta(seconds=10)
    assert Counter((r.step, r.attempt, type(r)) for r in records(sim)).most_common(1)[0][1] == 1


def test_a_cancelled_attempt_ends_at_the_cancel() -> None:
    sim = Simulator.start(dag_spec([{"name": "a"}]))
    sim.script("a", Outcome.hang())
    sim.step()
    sim.advance(30)
    sim.cancel = True
    result = sim.step()
    (ended,) = [r for r in result.attempts if isinstance(r, AttemptEnded)]
    assert (ended.step, ended.attempt, ended.finished_at) == ("a", 1, sim.now)


def test_an_adopted_job_starts_a_record() -> None:
    sim = Simulator.start(dag_spec([{"name": "a"}]))
    name = plan(sim.observation()).status.steps["a"].job or ""
    job = ObservedJob(name, "a", 1, "Active", started_at=sim.now)
    result = plan(replace(sim.observation(), jobs={name: job}))
    assert [(r.step, r.attempt, r.job) for r in result.attempts] == [("a", 1, name)]
