"""Pre-staged Jobs (engine.staging), driven through the simulated cluster with staging on.

Cases:

- a chain a -> b -> c: b's Job is created gated once a's Job has started, its gate lifted in
  the pass a's end is seen, with a's outputs as the annotation the container
  reads; c is staged once b runs; one Job per step, no plain create;
- a step whose ``when`` is false, or whose dependency failed: its staged Job is
  deleted and the step Skipped; a cancel deletes the staged Jobs at once;
- retries: attempt 2 of a staged step is a plain Job (never staged, never lifted);
- timeouts: a staged step's timeout is counted from the lift, not from its Job
  (gated for longer than the timeout, it still runs its full timeout), then its
  Job is deleted and the attempt fails DeadlineExceeded;
- crash safety: the status write after a lift lost (the step is adopted, never
  created or lifted for another attempt), the lift lost after the status write
  (lifted again by the next pass); a gated staged Job is never adopted;
- parallelism: staged plus running Jobs never exceed it; a retry starting when
  staged Jobs fill it deletes one (the property test's runs, and one case here);
- steps with no dependency, guarded steps, finally steps are never staged;
- property (hypothesis, the planner-properties scenarios): staging changes no
  outcome (every step's phase, attempts, reason and outputs are those of the same
  run without staging), a gate is lifted only for a step whose dependencies all
  finished, once, for attempt 1, and no staged Job outlives its execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import FINISHED_STEP_PHASES, ApprovalDecision
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import (
    CreateJob,
    DeleteJob,
    LiftGate,
    Observation,
    ObservedJob,
    Plan,
)
from runbook_operator.engine.staging import (
    GATE,
    output_annotations,
    outputs_annotation,
    outputs_field_path,
)

from .simulator import T0, Outcome, Simulator, dag_spec
from .test_planner_properties import Scenario, scenarios


@dataclass
class Lifted:
    step: str
    name: str
    at: Any
    dep_phases: dict[str, str]
    annotations: dict[str, str]


@dataclass
class StagingSimulator(Simulator):
    """The simulator with staging on: staged Jobs wait gated until a LiftGate."""

    prestage: bool = True
    staged: list[str] = field(default_factory=list)
    lifted: list[Lifted] = field(default_factory=list)
    max_existing: int = 0
    drop_lifts: bool = False
    """Lose the lift PATCHes of the next pass (the operator died before them)."""
    kick: bool = False
    """A Job was created or lifted: its start is an event that plans again (the
    operator's Job and pod watches)."""

    def next_event(self) -> Any:
        if self.kick:
            self.kick = False
            return self.now
        return super().next_event()

    def observation(self, status: Any = None, jobs: Any = None) -> Observation:
        return replace(super().observation(status, jobs), prestage=self.prestage)

    def apply(self, result: Plan) -> None:
        plain = [a for a in result.actions if not (isinstance(a, CreateJob) and a.staged)
                 and not isinstance(a, LiftGate)]
        super().apply(replace(result, actions=plain))
        steps = {s.name: s for s in self.spec.all_steps()}
        for action in result.actions:
            if isinstance(action, CreateJob) and action.staged:
                assert action.attempt == 1
                assert action.name not in self.jobs and action.name not in self.finished_jobs
                self.staged.append(action.name)
                self.jobs[action.name] = ObservedJob(action.name, action.step, 1, "Active",
                                                     staged=True, gated=True)
            elif isinstance(action, LiftGate) and not self.drop_lifts:
                job = self.jobs[action.name]
                self.lifted.append(Lifted(action.step, action.name, self.now, {
                    d: result.status.steps[d].phase for d in steps[action.step].depends_on},
                    dict(action.annotations)))
                if not job.gated:
                    continue  # lifted already: the PATCH's test fails, nothing changes
                self.jobs[action.name] = replace(job, gated=False, started_at=self.now)
                outcome = self.outcome(action.step, 1)
                if outcome.after is not None and outcome.kind != "hang":
                    self.finish_at[action.name] = self.now + outcome.after
        self.drop_lifts = False
        self.kick = any(isinstance(a, CreateJob | LiftGate) for a in result.actions)
        self.max_existing = max(self.max_existing, len(self.active()))

    def gated(self) -> list[str]:
        return [j.name for j in self.jobs.values() if j.gated and j.state == "Active"]


def begin(sim: StagingSimulator) -> None:
    """The first two passes: the first creates the first Jobs, the second sees them
    started (the Job controller made their pods) and stages what follows."""
    sim.step()
    sim.step()


def chain(**extra: Any) -> dict[str, Any]:
    return dag_spec([{"name": "a"}, {"name": "b", "dependsOn": ["a"]},
                     {"name": "c", "dependsOn": ["b"]}], **extra)


def test_a_chain_stages_each_step_while_its_dependency_runs() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.ok('{"n": 1}'))
    begin(sim)
    assert sim.created_names() == ["ex-a-1"] and sim.staged == ["ex-b-1"]
    assert sim.phases()["b"] == "Pending"  # staged is not started
    sim.step()  # nothing ended: nothing lifted, nothing created again
    assert sim.lifted == [] and sim.staged == ["ex-b-1"]
    status = sim.run()
    assert status.phase == "Succeeded"
    assert sim.created_names() == ["ex-a-1"]  # b and c ran on their staged Jobs
    assert sim.staged == ["ex-b-1", "ex-c-1"]
    assert [(lift.step, lift.dep_phases) for lift in sim.lifted] == [
        ("b", {"a": "Succeeded"}), ("c", {"b": "Succeeded"})]
    assert sim.lifted[0].annotations == {"outputs.runbooks.dev/a": '{"n":1}'}
    assert sim.lifted[1].annotations == {"outputs.runbooks.dev/b": "{}"}
    assert sim.gated() == [] and sim.deleted == []


def test_the_annotations_are_what_the_container_reads() -> None:
    spec = Simulator.start(chain()).spec
    b = spec.steps[1]
    assert output_annotations(b, {"a": {"x": [1, "é"]}}) == {
        outputs_annotation("a"): '{"x":[1,"\\u00e9"]}'}
    assert outputs_field_path("a") == "metadata.annotations['outputs.runbooks.dev/a']"
    assert GATE == "runbooks.dev/dependencies"


def test_a_step_skipped_by_when_has_its_staged_job_deleted() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "b", "dependsOn": ["a"],
                                     "when": "steps.a.outputs.go == true"}])
    sim = StagingSimulator.start(spec).script("a", Outcome.ok('{"go": false}'))
    begin(sim)
    assert sim.staged == ["ex-b-1"]
    status = sim.run()
    assert status.steps["b"].phase == "Skipped" and status.steps["b"].reason == "WhenFalse"
    assert [name for name, _ in sim.deleted] == ["ex-b-1"]
    assert sim.lifted == [] and sim.gated() == []


def test_a_failed_dependency_deletes_the_staged_job() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.fail(3))
    status = sim.run()
    assert status.phase == "Failed"
    assert status.steps["b"].phase == "Skipped" and status.steps["c"].phase == "Skipped"
    assert [name for name, _ in sim.deleted] == ["ex-b-1"]
    assert sim.lifted == [] and sim.gated() == []


def test_a_failing_sibling_deletes_staged_jobs_before_their_dependencies_end() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "x"}, {"name": "b", "dependsOn": ["a"]}])
    sim = StagingSimulator.start(spec).script("a", Outcome.hang()).script(
        "x", Outcome.fail(1, after=5))
    begin(sim)
    assert sim.staged == ["ex-b-1"]
    sim.advance(5)
    sim.step()
    assert ("ex-b-1", sim.now) in sim.deleted  # the run fails: b will not run
    assert sim.phases()["a"] == "Running"


def test_cancel_deletes_staged_jobs() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.hang())
    begin(sim)
    sim.cancel = True
    result = sim.step()
    assert DeleteJob("ex-b-1") in result.actions and DeleteJob("ex-a-1") in result.actions
    status = sim.run()
    assert status.phase == "Cancelled" and sim.lifted == [] and sim.gated() == []


def test_retries_are_plain_jobs() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "b", "dependsOn": ["a"], "retry": {
        "limit": 2, "backoff": {"initial": "1s", "factor": 1.0, "jitter": 0.0}}}])
    sim = StagingSimulator.start(spec).script("b", Outcome.fail(1), Outcome.ok())
    status = sim.run()
    assert status.phase == "Succeeded" and status.steps["b"].attempts == 2
    assert sim.staged == ["ex-b-1"] and [lift.name for lift in sim.lifted] == ["ex-b-1"]
    assert [c.name for c in sim.created_for("b")] == ["ex-b-2"]


def test_the_timeout_counts_from_the_lift() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "b", "dependsOn": ["a"], "timeout": "30s"}])
    sim = StagingSimulator.start(spec).script("a", Outcome.ok(after=100)).script(
        "b", Outcome.hang())
    begin(sim)
    sim.advance(100)
    sim.step()  # a ended after 100 s, longer than b's timeout: b starts now
    lift_at = sim.now
    assert sim.phases()["b"] == "Running" and sim.lifted[0].at == lift_at
    assert sim.wake_at == lift_at + timedelta(seconds=30)
    sim.advance(29)
    sim.step()
    assert sim.phases()["b"] == "Running"
    sim.advance_to(lift_at + timedelta(seconds=30))
    result = sim.step()
    assert DeleteJob("ex-b-1") in result.actions
    b = sim.status.steps["b"]
    assert b.phase == "Failed" and b.reason == "DeadlineExceeded", b


def test_a_lost_status_write_after_the_lift_adopts_the_job() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.ok(after=10))
    begin(sim)
    sim.advance(10)
    sim.step(persist=False)  # lifted, then the operator died before the status write
    assert [lift.name for lift in sim.lifted] == ["ex-b-1"]
    sim.step()
    assert sim.phases()["b"] == "Running" and sim.status.steps["b"].attempts == 1
    assert sim.status.steps["b"].job == "ex-b-1"
    status = sim.run()
    assert status.phase == "Succeeded"
    assert sim.created_names() == ["ex-a-1"]
    assert len({lift.name for lift in sim.lifted}) == 2  # b and c, each one Job


def test_a_lost_lift_is_done_by_the_next_pass() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.ok(after=10))
    begin(sim)
    sim.advance(10)
    sim.drop_lifts = True
    sim.step()  # status written (b Running), the PATCH lost
    assert sim.phases()["b"] == "Running" and "ex-b-1" in sim.gated()
    result = sim.step()
    assert any(isinstance(a, LiftGate) and a.name == "ex-b-1" for a in result.actions)
    assert "ex-b-1" not in sim.gated()
    assert sim.run().phase == "Succeeded"


def test_a_gated_job_is_never_adopted() -> None:
    sim = StagingSimulator.start(chain()).script("a", Outcome.hang())
    begin(sim)
    for _ in range(3):
        sim.step()
        sim.step(persist=False)
    assert sim.phases()["b"] == "Pending" and sim.status.steps["b"].attempts == 0
    assert sim.lifted == []


def test_staged_and_running_jobs_stay_within_parallelism() -> None:
    spec = dag_spec([{"name": "s"}, *({"name": f"b{i}", "dependsOn": ["s"]} for i in range(4)),
                     {"name": "j", "dependsOn": [f"b{i}" for i in range(4)]}],
                    parallelism=3)
    sim = StagingSimulator.start(spec)
    begin(sim)
    assert sim.staged == ["ex-b0-1", "ex-b1-1"]
    status = sim.run()
    assert status.phase == "Succeeded" and sim.max_existing <= 3


def test_a_retry_makes_room_by_deleting_a_staged_job() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "x", "retry": {"limit": 1, "backoff": {
        "initial": "1s", "factor": 1.0, "jitter": 0.0}}}, {"name": "b", "dependsOn": ["a"]}],
        parallelism=2)
    sim = StagingSimulator.start(spec).script("a", Outcome.hang()).script(
        "x", Outcome.fail(1, after=5), Outcome.ok())
    begin(sim)
    sim.advance(5)
    sim.step()  # x failed: a place frees, b is staged into it
    assert sim.staged == ["ex-b-1"] and sim.phases()["x"] == "Retrying"
    sim.advance(1)
    result = sim.step()  # x's retry needs the place back
    assert DeleteJob("ex-b-1") in result.actions
    assert [c.name for c in sim.created_for("x")] == ["ex-x-1", "ex-x-2"]
    assert sim.max_existing <= 2
    sim.finish("ex-a-1")
    assert sim.run().phase == "Succeeded" and sim.status.steps["b"].attempts == 1


def test_what_is_never_staged() -> None:
    spec = dag_spec([{"name": "a"}, {"name": "b"}, {"name": "w", "type": "wait",
                                                  "wait": {"duration": "1m"}},
                     {"name": "c", "dependsOn": ["w"]}],
                    **{"finally": [{"name": "f"}]})
    sim = StagingSimulator.start(spec)
    begin(sim)
    assert sim.created_names() == ["ex-a-1", "ex-b-1"] and sim.staged == []
    sim.advance(60)
    sim.step()
    assert sim.created_names()[-1] == "ex-c-1"  # after a wait: created when it ends
    assert sim.run().phase == "Succeeded" and sim.staged == []


def test_staging_off_plans_as_before() -> None:
    sim = StagingSimulator.start(chain(), prestage=False)
    assert sim.run().phase == "Succeeded"
    assert sim.created_names() == ["ex-a-1", "ex-b-1", "ex-c-1"] and sim.staged == []


# -- properties ---------------------------------------------------------------------------

def _timed(outcome: Outcome) -> Outcome:
    return replace(outcome, after=timedelta(seconds=7))


def _run(sc: Scenario, prestage: bool, cancel_at: int | None
         ) -> tuple[StagingSimulator, list[Plan]]:
    sim = StagingSimulator.start(sc.spec, uid="uid-prop", prestage=prestage,
                                 default_outcome=lambda s, a: _timed(sc.outcomes[(s, a)]))
    plans: list[Plan] = []
    for _ in range(400):
        # The cancel arrives at a moment, the same in both runs (staging plans more
        # passes, at the same moments: the starts it waits for).
        if cancel_at is not None and sim.now >= T0 + timedelta(seconds=3 * cancel_at):
            sim.cancel = True
        before = sim.observation()
        result = sim.step()
        assert plan(before) == result
        plans.append(result)
        existing = [j for j in sim.jobs.values() if j.state == "Active"]
        assert len(existing) <= sim.spec.parallelism, existing
        if sim.finished:
            return sim, plans
        waiting = [n for n, p in sim.phases().items() if p == "WaitingForApproval"]
        if waiting:  # the same decisions in both runs: approve at the next tick
            sim.approvals += [ApprovalDecision(step=n, decision="Approve") for n in waiting]
            sim.advance(1)
            continue
        nxt = sim.next_event()
        assert nxt is not None, sim.phases()
        sim.advance_to(nxt)
    raise AssertionError(f"not finished: {sim.phases()}")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.one_of(st.none(), st.integers(0, 12)))
def test_staging_changes_no_outcome(sc: Scenario, cancel_at: int | None) -> None:
    on, plans = _run(sc, True, cancel_at)
    off, _ = _run(sc, False, cancel_at)
    view = {n: (s.phase, s.attempts, s.reason, s.outputs, s.exit_code)
            for n, s in off.status.steps.items()}
    assert {n: (s.phase, s.attempts, s.reason, s.outputs, s.exit_code)
            for n, s in on.status.steps.items()} == view
    assert on.status.phase == off.status.phase
    assert on.gated() == [], "a staged Job outlived its execution"
    steps = {s.name: s for s in on.spec.all_steps()}
    names = [lift.name for lift in on.lifted]
    assert len(names) == len(set(names)) or all(
        on.jobs.get(n) is None or not on.jobs[n].gated for n in names)
    for lift in on.lifted:
        assert lift.name.endswith("-1"), "a gate lifted for a later attempt"
        assert all(p in FINISHED_STEP_PHASES for p in lift.dep_phases.values()), lift
        if steps[lift.step].when is None:
            assert set(lift.dep_phases.values()) == {"Succeeded"}, lift
    for result in plans:
        for action in result.actions:
            if isinstance(action, LiftGate):
                st_ = result.status.steps[action.step]
                assert st_.phase in ("Running", *FINISHED_STEP_PHASES)
                assert st_.attempts == 1
