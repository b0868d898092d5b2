"""Properties of the planner over random runbooks, outcomes and interleavings.

Hypothesis draws a DAG (1..15 steps, step i may depend on steps before it),
continueOnFailure, retry limits 0..2, parallelism 1..4, an optional execution
timeout, 0..2 finally steps, a ``when`` now and then (some of which fail at
runtime), wait and approval steps now and then, a scripted outcome for every
(step, attempt), and a random schedule: which active Jobs finish when (observed
at once or late), approvals and rejections, how far time jumps, duplicate
passes, lost status writes (the operator dying between creating Jobs and
patching status), and optionally a cancel at a random tick. The simulator is driven until the
execution finishes; not finishing within the bound fails the test.

Invariants checked on every pass:

- replaying the same Observation gives an identical Plan;
- feeding the new status back with the Jobs after the actions, or the *old*
  status (the write was lost), creates no Job for an already created
  (step, attempt);
- no Job for a step before all its dependencies finished (finally steps: before
  the whole DAG finished); never more than ``parallelism`` Jobs active;
- attempts of a step are created once each, consecutively from 1, never more than
  ``retry.limit + 1``, and a retry never starts before its backoff elapsed;
- a running execution always has something to wait for (an active Job, an
  approval, or a wake_at), and a wake_at already passed (a Job observed late)
  does not come back on the next pass (no hot loop).

And at the end: the execution terminated; every step, finally ones included,
finished; a cancelled execution is Cancelled (Failed(Timeout) if the timeout came
first) and its finally steps ran; otherwise it Succeeded iff no DAG step without
continueOnFailure failed and no finally step without continueOnFailure failed (or
it is Failed(Timeout)).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import FINISHED_STEP_PHASES, ApprovalDecision
from runbook_operator.api.runbook import Retry
from runbook_operator.engine import backoff
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import MAX_TOTAL_OUTPUTS, CreateJob

from .simulator import Outcome, Simulator, dag_spec

MAX_TICKS = 600
MS = timedelta(milliseconds=1)

OUTCOMES = [
    Outcome.ok(after=None),
    Outcome.ok('{"ok": true}', after=None),
    Outcome.ok('{"ok": false, "n": 3}', after=None),
    Outcome.ok("plain text", after=None),
    Outcome.fail(1, after=None),
    Outcome.fail(2, '{"ok": false}', after=None),
    Outcome.fail(3, "oops", after=None),
    Outcome.deadline(after=None),
]


@dataclass
class Scenario:
    spec: dict[str, Any]
    outcomes: dict[tuple[str, int], Outcome]
    cancel_tick: int | None
    lose_writes: bool
    rng: random.Random

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return (f"Scenario(spec={self.spec!r}, outcomes={self.outcomes!r}, "
                f"cancel_tick={self.cancel_tick}, lose_writes={self.lose_writes})")


def _when(draw: Any, deps: list[str]) -> str | None:
    if not deps or draw(st.integers(0, 2)) > 0:
        return None
    dep = draw(st.sampled_from(deps))
    return draw(st.sampled_from([
        "true", "false", "!execution.failed",
        f"steps.{dep}.phase == 'Succeeded'",
        f"steps.{dep}.phase != 'Succeeded'",
        f"steps.{dep}.attempts >= 1",
        f"steps.{dep}.outputs.ok",  # a runtime error when the outputs have no "ok"
    ]))


def _retry(draw: Any) -> dict[str, Any] | None:
    limit = draw(st.integers(0, 2))
    if limit == 0 and draw(st.booleans()):
        return None
    retry: dict[str, Any] = {"limit": limit, "backoff": {
        "initial": draw(st.sampled_from(["1s", "5s", "30s"])),
        "factor": draw(st.sampled_from([1.0, 2.0, 3.0])),
        "max": draw(st.sampled_from(["10s", "1m"])),
        "jitter": draw(st.sampled_from([0.0, 0.2, 0.5])),
    }}
    on = draw(st.sampled_from([None, None, {"exitCodes": [2]}, {"timeouts": True},
                               {"exitCodes": [1, 3], "timeouts": True}]))
    if on is not None:
        retry["on"] = on
    return retry


@st.composite
def scenarios(draw: Any) -> Scenario:
    n = draw(st.integers(1, 15))
    steps: list[dict[str, Any]] = []
    for i in range(n):
        earlier = [f"s{j}" for j in range(i)]
        deps = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) \
            if earlier else []
        step: dict[str, Any] = {"name": f"s{i}", "dependsOn": deps,
                                "continueOnFailure": draw(st.booleans())}
        kind = draw(st.integers(0, 11))
        if kind == 0:
            step.update(type="wait", wait={"duration": draw(st.sampled_from(["0s", "5s", "1m"]))})
        elif kind == 1:
            timeout = draw(st.sampled_from([None, "30s", "5m"]))
            step.update(type="approval", approval={"timeout": timeout} if timeout else {})
        else:
            retry = _retry(draw)
            if retry is not None:
                step["retry"] = retry
        when = _when(draw, deps)
        if when is not None:
            step["when"] = when
        steps.append(step)
    finally_: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 2))):
        f: dict[str, Any] = {"name": f"f{i}", "continueOnFailure": draw(st.booleans())}
        if i and draw(st.booleans()):
            f["dependsOn"] = ["f0"]
        retry = _retry(draw)
        if retry is not None:
            f["retry"] = retry
        finally_.append(f)
    spec = dag_spec(steps, parallelism=draw(st.integers(1, 4)),
                    **({"finally": finally_} if finally_ else {}))
    timeout = draw(st.sampled_from([None, None, None, "2m", "10m"]))
    if timeout:
        spec["timeout"] = timeout
    outcomes = {}
    for step in [*steps, *finally_]:
        for attempt in (1, 2, 3):
            outcomes[(step["name"], attempt)] = draw(st.sampled_from(OUTCOMES))
    cancel_tick = draw(st.one_of(st.none(), st.none(), st.integers(0, 30)))
    return Scenario(spec, outcomes, cancel_tick, draw(st.booleans()),
                    draw(st.randoms(use_true_random=False)))


def _check_pass(sim: Simulator, before: Any, old_status: Any, result: Any,
                first_created: int, retries: dict[str, Retry]) -> None:
    """Invariants of one pass; ``before`` is the Observation the pass planned from."""
    assert plan(before) == result, "replaying an Observation gave a different Plan"
    spec = sim.spec
    dag = {s.name for s in spec.steps}
    by_name = {s.name: s for s in spec.all_steps()}
    created_before = {(c.step, c.attempt) for c in sim.created[:first_created]}
    for c in sim.created[first_created:]:
        assert not c.duplicate, f"Job {c.name} created twice"
        assert (c.step, c.attempt) not in created_before
        assert all(p in FINISHED_STEP_PHASES for p in c.dep_phases.values()), \
            f"{c.name} created before its dependencies finished: {c.dep_phases}"
        if c.step not in dag:
            assert c.dag_finished, f"finally Job {c.name} created before the DAG finished"
        earlier = sorted(a for s, a in created_before if s == c.step)
        assert c.attempt == len(earlier) + 1, f"{c.step}: attempt {c.attempt} after {earlier}"
        created_before.add((c.step, c.attempt))
        step = by_name[c.step]
        assert c.attempt <= 1 + (step.retry.limit if step.retry else 0)
        if c.attempt > 1:
            prev = sim.finished_jobs[f"{sim.name}-{c.step}-{c.attempt - 1}"]
            assert prev.finished_at is not None
            wait = backoff.delay(retries[c.step].backoff, c.attempt - 1,
                                 f"{sim.uid}/{c.step}/{c.attempt - 1}")
            assert c.at >= prev.finished_at + wait - MS, f"retry of {c.step} too early"
    assert len(sim.active()) <= spec.parallelism, f"{len(sim.active())} Jobs active"
    # Duplicate events: the new status, or the old one (write lost), with the Jobs
    # as they are now must not create an already created (step, attempt) again.
    all_created = {(c.step, c.attempt) for c in sim.created}
    for status in (result.status, old_status):
        again = plan(sim.observation(status=status))
        for action in again.actions:
            if isinstance(action, CreateJob):
                assert (action.step, action.attempt) not in all_created, \
                    f"{action.name} would be created again"


def drive(sc: Scenario) -> tuple[Simulator, str | None]:
    """Run a scenario; also returns the status reason when the cancel arrived (or None)."""
    sim = Simulator.start(sc.spec, uid="uid-prop",
                          default_outcome=lambda s, a: sc.outcomes[(s, a)])
    retries = {s.name: s.retry for s in sim.spec.all_steps() if s.retry is not None}
    rng = sc.rng
    cancelled: str | None = None
    redo = False  # at most one lost write or duplicate pass in a row: progress is made
    for tick in range(MAX_TICKS):
        if tick == sc.cancel_tick:
            sim.cancel = True
            cancelled = sim.status.reason or "Running"
        before = sim.observation()
        old_status = sim.status
        first_created = len(sim.created)
        persist = redo or not (sc.lose_writes and rng.random() < 0.15)
        result = sim.step(persist=persist)
        _check_pass(sim, before, old_status, result, first_created, retries)
        if sim.finished:
            return sim, cancelled
        if not persist:
            redo = True
            continue  # the lost write's pass is redone at once, as after a 409
        active = sim.active()
        waiting = [n for n, s in sim.status.steps.items() if s.phase == "WaitingForApproval"]
        assert active or waiting or sim.wake_at is not None, \
            f"stuck: nothing active, nothing to wake for; {sim.phases()}"
        if sim.wake_at is not None and sim.wake_at <= sim.now:
            # A wake_at that has passed (a late observation) asks for one more pass at
            # once; that pass must not ask again, or the controller spins.
            again = plan(sim.observation())
            assert again.wake_at is None or again.wake_at > sim.now, \
                f"hot loop: wake_at {again.wake_at} stays at or before {sim.now}"
        roll = rng.random()
        if roll < 0.1 and not redo:
            redo = True
            continue  # a duplicate event: the same pass again
        redo = False
        if waiting and (roll < 0.3 or not (active or sim.wake_at)):
            name = rng.choice(waiting)
            sim.approvals.append(ApprovalDecision(
                step=name, decision="Approve" if rng.random() < 0.7 else "Reject", by="sre"))
        elif active and (sim.wake_at is None or sim.wake_at <= sim.now or roll < 0.65):
            sim.advance(rng.choice([0, 0, 1, 3, 10, 45]))
            for job in rng.sample(active, rng.randint(1, len(active))):
                if job.name in sim.jobs and sim.jobs[job.name].state == "Active":
                    # Observed late at times: the Job finished a while before this pass.
                    late = timedelta(seconds=rng.choice([0, 0, 0, 2, 30]))
                    started = job.started_at or sim.now
                    sim.finish(job.name, at=max(started, sim.now - late))
        else:
            assert sim.wake_at is not None
            sim.advance_to(sim.wake_at)
    raise AssertionError(f"not finished after {MAX_TICKS} ticks: {sim.phases()}")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_executions_keep_the_invariants(sc: Scenario) -> None:
    sim, cancelled = drive(sc)
    status = sim.status
    spec = sim.spec
    event(f"{status.phase}/{status.reason}")
    event(f"passes {sim.passes // 10 * 10}+")
    if any(c.attempt > 1 for c in sim.created):
        event("retried")
    if any(s.reason == "ExpressionError" for s in status.steps.values()):
        event("ExpressionError")
    if sim.max_active == spec.parallelism and spec.parallelism > 1:
        event("parallelism reached")
    assert status.phase in ("Succeeded", "Failed", "Cancelled")
    assert all(s.phase in FINISHED_STEP_PHASES for s in status.steps.values()), sim.phases()
    n = len(spec.all_steps())
    assert status.progress == f"{n}/{n}"
    assert status.finished_at is not None
    kept = sum(len(json.dumps(s.outputs, separators=(",", ":")))
               for s in status.steps.values() if s.outputs)
    assert kept <= MAX_TOTAL_OUTPUTS
    cond = next(c for c in status.conditions if c.type == "Succeeded")
    assert cond.status == ("True" if status.phase == "Succeeded" else "False")
    for step in spec.all_steps():
        st_ = status.steps[step.name]
        attempts = [c.attempt for c in sim.created_for(step.name)]
        assert attempts == list(range(1, len(attempts) + 1))
        if step.type == "run":
            assert st_.attempts == len(attempts), (step.name, st_.attempts, attempts)
        if st_.phase == "Skipped":
            assert not attempts
    for step in spec.finally_:
        if not step.depends_on and step.when is None:
            assert sim.created_for(step.name), f"finally step {step.name} never ran"
    if cancelled == "Timeout":  # the timeout stopped it first: cancel changes nothing
        assert (status.phase, status.reason) == ("Failed", "Timeout")
        return
    if cancelled:
        assert (status.phase, status.reason) == ("Cancelled", "Cancelled")
        return
    if status.reason == "Timeout":
        assert status.phase == "Failed" and spec.timeout is not None
        return
    failed_dag = [s.name for s in spec.steps
                  if status.steps[s.name].phase == "Failed" and not s.continue_on_failure]
    failed_finally = [s.name for s in spec.finally_
                      if status.steps[s.name].phase == "Failed" and not s.continue_on_failure]
    assert (status.phase == "Succeeded") == (not failed_dag and not failed_finally), \
        (status.phase, status.reason, failed_dag, failed_finally)
    if failed_dag:
        assert status.reason == "StepFailed"
        assert repr(failed_dag[0]) in (status.message or "")
    elif failed_finally:
        assert status.reason == "FinallyFailed"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 20))
def test_cancel_at_any_tick_ends_cancelled_with_finally_run(sc: Scenario, tick: int) -> None:
    sc = replace(sc, cancel_tick=tick)
    sim, cancelled = drive(sc)
    if not cancelled:  # finished before the cancel arrived
        assert sim.status.phase in ("Succeeded", "Failed")
        return
    if cancelled == "Timeout":
        assert (sim.status.phase, sim.status.reason) == ("Failed", "Timeout")
    else:
        assert sim.status.phase == "Cancelled"
    for step in sim.spec.all_steps():
        assert sim.status.steps[step.name].phase in FINISHED_STEP_PHASES
    for step in sim.spec.finally_:
        if not step.depends_on:
            assert sim.created_for(step.name), f"finally step {step.name} never ran"
    dag_jobs = {c.name for c in sim.created if c.step in {s.name for s in sim.spec.steps}}
    still_active = [j.name for j in sim.active() if j.name in dag_jobs]
    assert not still_active, f"DAG Jobs left running after cancel: {still_active}"
