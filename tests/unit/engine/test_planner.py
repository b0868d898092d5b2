"""The planner, driven through the simulated cluster, and its pure helpers.

Cases:

- a 3-step chain succeeds: 3 CreateJobs in order, each after its dependency
  finished, progress "3/3", condition Succeeded=True;
- fan-out of 4 and a join with parallelism 2: never more than 2 Jobs active, the
  join waits for all 4;
- decision tree: a continueOnFailure probe fails with outputs {"healthy": false};
  the ``!steps.probe.outputs.healthy`` branch runs, the default-``when`` branch is
  Skipped(UpstreamFailed), the ``steps.probe.outputs.healthy`` branch is
  Skipped(WhenFalse); the execution Succeeds;
- a step failing with exit code 3: execution Failed(StepFailed) naming it,
  downstream Skipped(UpstreamFailed), finally ran, exit code and message recorded;
  a step already running when another fails is allowed to finish;
- retry twice then succeed: attempts 3, Jobs -1, -2, -3, gaps inside the backoff
  bounds, nextAttemptAt persisted while Retrying; retry.on.exitCodes [2] does not
  retry exit code 3 (and does retry 2);
- DeadlineExceeded: Failed with reason DeadlineExceeded; retried only with
  retry.on.timeouts; a Job the controller failed BackoffLimitExceeded after it
  ran out its deadline with no exit code is a timeout too;
- execution timeout: DeleteJob for the running Job, the rest skipped, finally ran,
  Failed(Timeout);
- cancel: DeleteJob, the rest skipped, finally ran, Cancelled;
- approval: approve, reject, timeout (at exactly start + timeout);
- wait step: finishes at start + duration and wake_at says so;
- CEL runtime error (missing key, non-boolean result): the step Fails with
  ExpressionError; the error message must not show a secret parameter's value;
- credentials a step prints (an Authorization header, a URL's password, a
  sensitive output key) are redacted before they reach the status or an Event;
- a step's Events name the step and its attempt (for the audit log's fields);
- termination messages: non-JSON and non-object messages give empty outputs and
  a warning in the step message; a JSON object becomes the outputs;
- adoption: a Job for an attempt the status does not know is adopted, not created
  again (Pending, Retrying, and an already finished Job); a Job that vanished
  must not leave its step Running forever;
- purity: the same Observation twice gives equal plans; the input is not mutated;
- history is capped at MAX_HISTORY and historyDropped counts the rest;
- a 500-step execution's serialised status stays under 256 KB (size printed);
  with ~4 KB outputs per step it stays under etcd's 1.5 MiB (the outputs budget);
- regressions of the bugs this suite found (since fixed in the engine): wake_at
  in the past after the deadline, finally retries after cancel/timeout, the
  outputs budget;
- start_execution: RunbookNotFound, RunbookInvalid, InvalidParams naming each bad
  parameter and never showing a secret value; a valid start;
- backoff: delay bounds, cap, jitter determinism, overflow, should_retry rules;
- names: deterministic, <= 63 characters, distinct per attempt, DNS-label shaped;
- merge: apply(old, diff(old, new)) == new, removed keys become null.

A Job confirmed gone (lost_jobs) fails its attempt as JobDeleted.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import (
    MAX_HISTORY,
    ApprovalDecision,
    RunbookExecutionSpec,
    RunbookExecutionStatus,
)
from runbook_operator.api.runbook import Backoff, Retry, RetryOn
from runbook_operator.engine import backoff, merge
from runbook_operator.engine.names import MAX_NAME, job_name
from runbook_operator.engine.planner import parse_outputs, plan
from runbook_operator.engine.plans import MAX_TOTAL_OUTPUTS, CreateJob, DeleteJob, ObservedJob
from runbook_operator.engine.start import start_execution
from runbook_operator.engine.timeutil import fmt, parse

from .simulator import T0, Outcome, Simulator, dag_spec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MS = timedelta(milliseconds=1)


def sim_of(steps: list[dict[str, Any]], **kwargs: Any) -> Simulator:
    extra = {k: kwargs.pop(k) for k in ("finally", "parallelism", "timeout", "params")
             if k in kwargs}
    params = extra.pop("params", None)
    spec = dag_spec(steps, **extra)
    if params is not None:
        spec["params"] = params
    return Simulator.start(spec, params=kwargs.pop("given", None), **kwargs)


def condition(status: RunbookExecutionStatus) -> tuple[str, str]:
    cond = next(c for c in status.conditions if c.type == "Succeeded")
    return cond.status, cond.reason


def creates(result: Any) -> list[CreateJob]:
    return [a for a in result.actions if isinstance(a, CreateJob)]


def deletes(result: Any) -> list[DeleteJob]:
    return [a for a in result.actions if isinstance(a, DeleteJob)]


# -- DAG basics ---------------------------------------------------------------------------


def test_chain_of_three_succeeds_in_order() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]},
                  {"name": "c", "dependsOn": ["b"]}])
    first = sim.step()
    assert creates(first) == [CreateJob("a", 1, "ex-a-1")]
    assert sim.status.progress == "0/3"
    assert condition(sim.status) == ("Unknown", "Running")
    status = sim.run()
    assert sim.created_names() == ["ex-a-1", "ex-b-1", "ex-c-1"]
    assert [c.at - T0 for c in sim.created] == [timedelta(0), timedelta(seconds=10),
                                                 timedelta(seconds=20)]
    for c in sim.created:
        assert all(p == "Succeeded" for p in c.dep_phases.values())
    assert status.phase == "Succeeded"
    assert status.reason == "Succeeded"
    assert status.progress == "3/3"
    assert condition(status) == ("True", "Succeeded")
    assert status.finished_at == fmt(T0 + timedelta(seconds=30))
    assert all(s.phase == "Succeeded" and s.attempts == 1 and s.exit_code == 0
               for s in status.steps.values())
    assert sim.history_events()[0] == ("ExecutionStarted", None)
    assert sim.history_events()[-1] == ("ExecutionSucceeded", None)


def test_fan_out_and_join_respects_parallelism() -> None:
    steps = [{"name": "root"}]
    steps += [{"name": f"leaf{i}", "dependsOn": ["root"]} for i in range(4)]
    steps.append({"name": "join", "dependsOn": [f"leaf{i}" for i in range(4)]})
    sim = sim_of(steps, parallelism=2)
    for i, seconds in enumerate([5, 30, 7, 12]):
        sim.script(f"leaf{i}", Outcome.ok(after=seconds))
    seen_active: list[int] = []
    status = sim.run(on_pass=lambda s, _: seen_active.append(len(s.active())))
    assert status.phase == "Succeeded"
    assert max(seen_active) == 2
    assert sim.max_active == 2
    assert sorted(sim.created_names()) == sorted(
        ["ex-root-1", "ex-join-1"] + [f"ex-leaf{i}-1" for i in range(4)])
    join = sim.created_for("join")[0]
    leaf_ends = [sim.finished_jobs[f"ex-leaf{i}-1"].finished_at for i in range(4)]
    assert join.at >= max(t for t in leaf_ends if t is not None)
    assert set(join.dep_phases.values()) == {"Succeeded"}
    assert status.progress == "6/6"


def test_decision_tree_branches_on_outputs_of_a_failed_probe() -> None:
    sim = sim_of([
        {"name": "probe", "continueOnFailure": True},
        {"name": "remediate", "dependsOn": ["probe"], "when": "!steps.probe.outputs.healthy"},
        {"name": "healthy-path", "dependsOn": ["probe"], "when": "steps.probe.outputs.healthy"},
        {"name": "report", "dependsOn": ["probe"]},
    ])
    sim.script("probe", Outcome.fail(1, '{"healthy": false}'))
    status = sim.run()
    probe = status.steps["probe"]
    assert probe.phase == "Failed"
    assert probe.outputs == {"healthy": False}
    assert status.steps["remediate"].phase == "Succeeded"
    assert (status.steps["healthy-path"].phase, status.steps["healthy-path"].reason) == \
        ("Skipped", "WhenFalse")
    assert (status.steps["report"].phase, status.steps["report"].reason) == \
        ("Skipped", "UpstreamFailed")
    assert "probe" in (status.steps["report"].message or "")
    assert sorted(sim.created_names()) == ["ex-probe-1", "ex-remediate-1"]
    assert status.phase == "Succeeded"
    assert condition(status) == ("True", "Succeeded")


def test_failing_step_fails_the_execution_and_finally_runs() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]},
                  {"name": "c", "dependsOn": ["b"]}],
                 **{"finally": [{"name": "cleanup"}]})
    sim.script("b", Outcome.fail(3, "disk full on /var"))
    status = sim.run()
    b = status.steps["b"]
    assert (b.phase, b.reason, b.exit_code) == ("Failed", "BackoffLimitExceeded", 3)
    assert "disk full on /var" in (b.message or "")
    assert "exit code 3" in (b.message or "")
    assert (status.steps["c"].phase, status.steps["c"].reason) == ("Skipped", "UpstreamFailed")
    assert status.steps["cleanup"].phase == "Succeeded"
    assert [c.name for c in sim.created] == ["ex-a-1", "ex-b-1", "ex-cleanup-1"]
    assert sim.created_for("cleanup")[0].dag_finished
    assert (status.phase, status.reason) == ("Failed", "StepFailed")
    assert "'b'" in (status.message or "")
    assert condition(status) == ("False", "StepFailed")
    assert status.progress == "4/4"


def test_running_steps_finish_after_another_step_failed() -> None:
    sim = sim_of([{"name": "fast"}, {"name": "slow"},
                  {"name": "after-slow", "dependsOn": ["slow"]}])
    sim.script("fast", Outcome.fail(1, after=5))
    sim.script("slow", Outcome.ok(after=60))
    status = sim.run()
    assert not sim.deleted
    assert status.steps["slow"].phase == "Succeeded"
    assert (status.steps["after-slow"].phase, status.steps["after-slow"].reason) == \
        ("Skipped", "UpstreamFailed")
    assert "fast" in (status.steps["after-slow"].message or "")
    assert (status.phase, status.reason) == ("Failed", "StepFailed")
    assert status.finished_at == fmt(T0 + timedelta(seconds=60))


# -- retries ------------------------------------------------------------------------------

RETRY = {"limit": 2, "backoff": {"initial": "10s", "factor": 2, "max": "1m", "jitter": 0.2}}


def test_retry_twice_then_succeed_within_backoff_bounds() -> None:
    sim = sim_of([{"name": "flaky", "retry": RETRY}])
    sim.script("flaky", Outcome.fail(1, "boom", after=3), Outcome.fail(1, "boom", after=3),
               Outcome.ok('{"ok": true}', after=3))
    retrying: list[tuple[str | None, Any]] = []

    def watch(s: Simulator, _: Any) -> None:
        st_ = s.status.steps["flaky"]
        if st_.phase == "Retrying":
            retrying.append((st_.next_attempt_at, s.wake_at))

    status = sim.run(on_pass=watch)
    flaky = status.steps["flaky"]
    assert (flaky.phase, flaky.attempts, flaky.outputs) == ("Succeeded", 3, {"ok": True})
    assert sim.created_names() == ["ex-flaky-1", "ex-flaky-2", "ex-flaky-3"]
    assert [c.attempt for c in sim.created] == [1, 2, 3]
    assert len(retrying) == 2
    rb = Retry.model_validate(RETRY)
    for n in (1, 2):
        failed_at = sim.finished_jobs[f"ex-flaky-{n}"].finished_at
        assert failed_at is not None
        created_at = sim.created[n].at
        gap = created_at - failed_at
        base = 10 * 2 ** (n - 1)
        assert timedelta(seconds=base * 0.8) - MS <= gap <= timedelta(seconds=base * 1.2)
        expected = failed_at + backoff.delay(rb.backoff, n, f"uid-1/flaky/{n}")
        assert abs(created_at - expected) <= MS
        next_at, wake = retrying[n - 1]
        assert parse(next_at) is not None and abs(parse(next_at) - expected) <= MS
        assert wake is not None and abs(wake - expected) <= MS
    assert status.phase == "Succeeded"


def test_retry_on_exit_codes_does_not_retry_other_codes() -> None:
    retry = {"limit": 3, "on": {"exitCodes": [2]}, "backoff": {"initial": "1s"}}
    sim = sim_of([{"name": "a", "retry": retry}])
    sim.script("a", Outcome.fail(3, "no"))
    status = sim.run()
    assert (status.steps["a"].phase, status.steps["a"].attempts) == ("Failed", 1)
    assert sim.created_names() == ["ex-a-1"]
    assert status.phase == "Failed"

    sim = sim_of([{"name": "a", "retry": retry}])
    sim.script("a", Outcome.fail(2), Outcome.fail(3))
    status = sim.run()
    assert (status.steps["a"].phase, status.steps["a"].attempts) == ("Failed", 2)
    assert status.steps["a"].exit_code == 3


def test_retry_limit_bounds_attempts() -> None:
    sim = sim_of([{"name": "a", "retry": {"limit": 2, "backoff": {"initial": "1s"}}}],
                 default_outcome=Outcome.fail(1))
    status = sim.run()
    assert sim.created_names() == ["ex-a-1", "ex-a-2", "ex-a-3"]
    assert (status.steps["a"].phase, status.steps["a"].attempts) == ("Failed", 3)


def test_deadline_exceeded_step_fails_with_that_reason() -> None:
    sim = sim_of([{"name": "slow", "timeout": "30s"}])
    sim.script("slow", Outcome.deadline(after=30))
    status = sim.run()
    slow = status.steps["slow"]
    assert (slow.phase, slow.reason) == ("Failed", "DeadlineExceeded")
    assert (status.phase, status.reason) == ("Failed", "StepFailed")


@pytest.mark.parametrize(("on", "attempts"), [
    ({"timeouts": True}, 2), ({"exitCodes": [1]}, 1), (None, 2),
])
def test_deadline_exceeded_is_retried_only_when_timeouts_are(on: Any, attempts: int) -> None:
    retry: dict[str, Any] = {"limit": 1, "backoff": {"initial": "1s"}}
    if on is not None:
        retry["on"] = on
    sim = sim_of([{"name": "slow", "timeout": "30s", "retry": retry}],
                 default_outcome=Outcome.deadline(after=30))
    status = sim.run()
    assert status.steps["slow"].attempts == attempts
    assert status.steps["slow"].reason == "DeadlineExceeded"


def test_a_job_killed_at_its_deadline_is_a_timeout_whatever_the_job_reason() -> None:
    sim = sim_of([{"name": "slow", "timeout": "30s"}])
    sim.script("slow", Outcome.hang())
    sim.step()
    job = sim.jobs["ex-slow-1"]
    sim.advance(31)
    sim.jobs[job.name] = replace(
        job, state="Failed", reason="BackoffLimitExceeded", deadline_seconds=30,
        message="Job has reached the specified backoff limit", finished_at=sim.now)
    status = sim.run()
    slow = status.steps["slow"]
    assert (slow.phase, slow.reason) == ("Failed", "DeadlineExceeded")
    assert slow.message is not None and "DeadlineExceeded" in slow.message


# -- timeout and cancel ---------------------------------------------------------------------


def test_execution_timeout_deletes_running_jobs_and_runs_finally() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}], timeout="1m",
                 **{"finally": [{"name": "cleanup"}]})
    sim.script("a", Outcome.hang())
    first = sim.step()
    assert first.wake_at == T0 + timedelta(minutes=1)
    sim.advance_to(first.wake_at)
    result = sim.step()
    assert deletes(result) == [DeleteJob("ex-a-1")]
    assert creates(result) == [CreateJob("cleanup", 1, "ex-cleanup-1")]
    status = sim.status
    assert (status.steps["a"].phase, status.steps["a"].reason) == ("Failed", "Timeout")
    assert (status.steps["b"].phase, status.steps["b"].reason) == ("Skipped", "Timeout")
    assert status.phase == "Running"
    status = sim.run()
    assert status.steps["cleanup"].phase == "Succeeded"
    assert (status.phase, status.reason) == ("Failed", "Timeout")
    assert condition(status) == ("False", "Timeout")
    assert "1m" in (status.message or "")


def test_cancel_deletes_running_jobs_skips_the_rest_and_runs_finally() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}],
                 **{"finally": [{"name": "cleanup"}]})
    sim.script("a", Outcome.hang())
    sim.step()
    sim.advance(5)
    sim.cancel = True
    result = sim.step()
    assert deletes(result) == [DeleteJob("ex-a-1")]
    assert "ex-a-1" not in sim.jobs
    assert (sim.status.steps["a"].phase, sim.status.steps["a"].reason) == ("Failed", "Cancelled")
    assert (sim.status.steps["b"].phase, sim.status.steps["b"].reason) == \
        ("Skipped", "Cancelled")
    assert creates(result) == [CreateJob("cleanup", 1, "ex-cleanup-1")]
    status = sim.run()
    assert status.steps["cleanup"].phase == "Succeeded"
    assert (status.phase, status.reason) == ("Cancelled", "Cancelled")
    assert condition(status) == ("False", "Cancelled")
    assert sim.created_names() == ["ex-a-1", "ex-cleanup-1"]


def test_cancel_of_a_retrying_step_starts_no_new_attempt() -> None:
    sim = sim_of([{"name": "a", "retry": {"limit": 3, "backoff": {"initial": "1m"}}}])
    sim.script("a", Outcome.fail(1, after=1))
    sim.step()
    sim.advance(1)
    sim.step()
    assert sim.status.steps["a"].phase == "Retrying"
    sim.cancel = True
    status = sim.run()
    assert sim.created_names() == ["ex-a-1"]
    assert status.steps["a"].phase == "Failed"
    assert status.steps["a"].next_attempt_at is None
    assert status.phase == "Cancelled"


# -- approval and wait ------------------------------------------------------------------------

APPROVAL_STEPS = [
    {"name": "approve", "type": "approval", "approval": {"timeout": "1h", "message": "ok?"}},
    {"name": "deploy", "dependsOn": ["approve"]},
]


def test_approval_approved() -> None:
    sim = sim_of(APPROVAL_STEPS)
    first = sim.step()
    assert not first.actions
    assert sim.status.phase == "WaitingForApproval"
    assert sim.status.steps["approve"].phase == "WaitingForApproval"
    assert sim.status.steps["approve"].message == "ok?"
    assert first.wake_at == T0 + timedelta(hours=1)
    sim.advance(600)
    sim.approvals.append(ApprovalDecision(step="approve", decision="Approve", by="alice",
                                          comment="lgtm"))
    result = sim.step()
    approve = sim.status.steps["approve"]
    assert (approve.phase, approve.reason) == ("Succeeded", "Approved")
    assert "alice" in (approve.message or "") and "lgtm" in (approve.message or "")
    assert creates(result) == [CreateJob("deploy", 1, "ex-deploy-1")]
    assert sim.run().phase == "Succeeded"


def test_a_new_reason_alone_keeps_the_conditions_transition_time() -> None:
    """Running -> WaitingForApproval -> Running: the Succeeded condition stays Unknown,
    so its lastTransitionTime stays the start's while its reason follows the phase."""
    sim = sim_of([{"name": "first"}, *[dict(s, dependsOn=["first"]) if s["name"] ==
                                       "approve" else s for s in APPROVAL_STEPS]])
    sim.step()
    started = next(c for c in sim.status.conditions if c.type == "Succeeded")
    sim.advance(60)  # the first step's Job ends (after 10 s) meanwhile
    sim.step()
    waiting = next(c for c in sim.status.conditions if c.type == "Succeeded")
    assert (waiting.status, waiting.reason) == ("Unknown", "WaitingForApproval")
    assert waiting.last_transition_time == started.last_transition_time
    sim.advance(60)
    sim.approvals.append(ApprovalDecision(step="approve", decision="Approve", by="alice"))
    assert sim.run().phase == "Succeeded"
    done = next(c for c in sim.status.conditions if c.type == "Succeeded")
    assert done.status == "True" and done.last_transition_time != started.last_transition_time


def test_approval_rejected() -> None:
    sim = sim_of(APPROVAL_STEPS)
    sim.step()
    sim.approvals.append(ApprovalDecision(step="approve", decision="Reject", by="bob"))
    status = sim.run()
    assert (status.steps["approve"].phase, status.steps["approve"].reason) == \
        ("Failed", "Rejected")
    assert (status.steps["deploy"].phase, status.steps["deploy"].reason) == \
        ("Skipped", "UpstreamFailed")
    assert not sim.created
    assert (status.phase, status.reason) == ("Failed", "StepFailed")


def test_approval_times_out() -> None:
    sim = sim_of(APPROVAL_STEPS)
    sim.step()
    sim.advance(3599)
    sim.step()
    assert sim.status.steps["approve"].phase == "WaitingForApproval"
    assert sim.wake_at == T0 + timedelta(hours=1)
    status = sim.run()
    approve = status.steps["approve"]
    assert (approve.phase, approve.reason) == ("Failed", "ApprovalTimeout")
    assert approve.finished_at == fmt(T0 + timedelta(hours=1))
    assert (status.phase, status.reason) == ("Failed", "StepFailed")
    assert not sim.created


def test_wait_step_finishes_at_start_plus_duration() -> None:
    sim = sim_of([{"name": "pause", "type": "wait", "wait": {"duration": "1m30s"}},
                  {"name": "after", "dependsOn": ["pause"]}])
    first = sim.step()
    assert sim.status.steps["pause"].phase == "Running"
    assert not first.actions
    end = T0 + timedelta(seconds=90)
    assert first.wake_at == end
    sim.step(end - timedelta(seconds=1))
    assert sim.status.steps["pause"].phase == "Running"
    assert sim.wake_at == end
    result = sim.step(end)
    assert sim.status.steps["pause"].phase == "Succeeded"
    assert sim.status.steps["pause"].finished_at == fmt(end)
    assert creates(result) == [CreateJob("after", 1, "ex-after-1")]
    assert sim.created[0].at == end
    assert sim.run().phase == "Succeeded"


# -- expressions and outputs ----------------------------------------------------------------


@pytest.mark.parametrize("when", ["steps.a.outputs.count > 1", "steps.a.phase",
                                  "1 / 0 == 1"])
def test_cel_runtime_error_fails_the_step_with_expression_error(when: str) -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"], "when": when},
                  {"name": "c", "dependsOn": ["b"]}])
    sim.script("a", Outcome.ok('{"n": 1}'))
    status = sim.run()
    b = status.steps["b"]
    assert (b.phase, b.reason) == ("Failed", "ExpressionError")
    assert b.message
    assert sim.created_names() == ["ex-a-1"]
    assert status.steps["c"].phase == "Skipped"
    assert (status.phase, status.reason) == ("Failed", "StepFailed")


@pytest.mark.parametrize("message", ["all good, 3 pods restarted", "[1, 2]", "42", "{not json"])
def test_non_object_termination_message_gives_empty_outputs_and_a_warning(message: str) -> None:
    sim = sim_of([{"name": "a"}])
    sim.script("a", Outcome.ok(message))
    status = sim.run()
    a = status.steps["a"]
    assert a.phase == "Succeeded"
    assert not a.outputs
    assert "not a JSON object" in (a.message or "")
    assert status.phase == "Succeeded"


def test_json_object_termination_message_becomes_outputs() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"],
                                  "when": "steps.a.outputs.replicas == 3"}])
    sim.script("a", Outcome.ok('{"replicas": 3, "zone": "eu"}'))
    status = sim.run()
    assert status.steps["a"].outputs == {"replicas": 3, "zone": "eu"}
    assert status.steps["b"].phase == "Succeeded"


def test_parse_outputs() -> None:
    assert parse_outputs(None) == ({}, None)
    assert parse_outputs("  ") == ({}, None)
    assert parse_outputs('{"a": 1}') == ({"a": 1}, None)
    for bad in ("x", "[]", "null", "1"):
        outputs, warning = parse_outputs(bad)
        assert outputs == {} and warning and "JSON object" in warning


# -- adoption, purity ---------------------------------------------------------------------


def test_job_for_unknown_attempt_is_adopted_not_created() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    sim.script("a", Outcome.hang())
    first = sim.step(persist=False)  # the Job exists, the status write was lost
    assert creates(first) == [CreateJob("a", 1, "ex-a-1")]
    assert sim.status.steps["a"].phase == "Pending"
    again = sim.step()
    assert not creates(again)
    a = sim.status.steps["a"]
    assert (a.phase, a.attempts, a.job) == ("Running", 1, "ex-a-1")
    assert "adopted" in (a.message or "")
    assert sim.created_names() == ["ex-a-1"]


def test_adoption_of_a_job_created_outside_the_status() -> None:
    sim = sim_of([{"name": "a"}])
    sim.jobs["ex-a-1"] = ObservedJob(name="ex-a-1", step="a", attempt=1, state="Active",
                                     started_at=T0)
    result = sim.step()
    assert not result.actions
    assert (sim.status.steps["a"].phase, sim.status.steps["a"].attempts) == ("Running", 1)
    assert sim.status.steps["a"].started_at == fmt(T0)


def test_adoption_of_a_finished_job_and_of_a_retry() -> None:
    sim = sim_of([{"name": "a", "retry": {"limit": 2, "backoff": {"initial": "1s"}}}])
    sim.jobs["ex-a-1"] = ObservedJob(name="ex-a-1", step="a", attempt=1, state="Failed",
                                     reason="BackoffLimitExceeded", started_at=T0,
                                     finished_at=T0, exit_code=1, pod_terminated=True)
    sim.jobs["ex-a-2"] = ObservedJob(name="ex-a-2", step="a", attempt=2, state="Succeeded",
                                     started_at=T0, finished_at=T0 + timedelta(seconds=2),
                                     exit_code=0, pod_terminated=True)
    sim.advance(3)
    result = sim.step()
    assert not creates(result)
    assert (sim.status.steps["a"].phase, sim.status.steps["a"].attempts) == ("Succeeded", 2)
    assert sim.status.phase == "Succeeded"


def test_lost_status_during_a_retry_adopts_the_new_attempt() -> None:
    sim = sim_of([{"name": "a", "retry": {"limit": 2, "backoff": {"initial": "1s"}}}])
    sim.script("a", Outcome.fail(1, after=1), Outcome.hang())
    sim.step()
    sim.advance(1)
    sim.step()
    assert sim.status.steps["a"].phase == "Retrying"
    sim.advance_to(sim.wake_at)  # type: ignore[arg-type]
    created = sim.step(persist=False)
    assert creates(created) == [CreateJob("a", 2, "ex-a-2")]
    again = sim.step()
    assert not creates(again)
    assert (sim.status.steps["a"].phase, sim.status.steps["a"].attempts) == ("Running", 2)


def test_plan_is_pure_and_repeatable() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b"}, {"name": "c", "dependsOn": ["a", "b"]}],
                 parallelism=1)
    sim.step()
    sim.advance(10)
    obs = sim.observation()
    before = obs.status.model_copy(deep=True)
    one, two = plan(obs), plan(obs)
    assert one == two
    assert obs.status == before
    assert one.status is not obs.status


def test_finished_execution_is_left_alone() -> None:
    sim = sim_of([{"name": "a"}])
    status = sim.run()
    again = plan(sim.observation())
    assert again.status == status and not again.actions and not again.events
    assert again.wake_at is None


# -- status size ----------------------------------------------------------------------------


def test_history_is_capped_and_counts_what_it_dropped() -> None:
    steps = [{"name": f"s{i:02d}"} for i in range(60)]
    sim = sim_of(steps, parallelism=60)
    status = sim.run()
    assert status.phase == "Succeeded"
    # ExecutionStarted + (Running, Succeeded) per step + ExecutionSucceeded
    total = 1 + 2 * 60 + 1
    assert len(status.history) == MAX_HISTORY
    assert status.history_dropped == total - MAX_HISTORY
    assert status.history[-1].event == "ExecutionSucceeded"
    assert status.history[0].event != "ExecutionStarted"
    # The status stays valid for the API (history has maxItems MAX_HISTORY).
    RunbookExecutionStatus.model_validate(status.to_k8s())


def _five_hundred_step_status(message: str, *, command: bool = False
                              ) -> tuple[RunbookExecutionStatus, int]:
    steps: list[dict[str, Any]] = [{"name": "discover"}]
    steps += [{"name": f"check-{i:03d}-service-health", "dependsOn": ["discover"]}
              for i in range(499)]
    if command:
        for i, step in enumerate(steps):
            step["command"] = ["/bin/check", "--target", f"svc-{i:03d}"]
    sim = sim_of(steps, parallelism=100, default_outcome=Outcome.ok(message))
    status = sim.run(max_passes=200)
    return status, len(json.dumps(status.to_k8s()).encode())


def test_five_hundred_step_status_stays_under_256_kb() -> None:
    status, size = _five_hundred_step_status('{"healthy": true, "latencyMs": 42}')
    spec_size = len(json.dumps(status.runbook_spec).encode())
    _, with_command = _five_hundred_step_status('{"healthy": true, "latencyMs": 42}',
                                                command=True)
    print(f"\n500-step execution status: {size} bytes ({size / 1024:.1f} KiB), of which "
          f"the frozen runbook spec {spec_size} bytes; with a 3-word command per step: "
          f"{with_command} bytes ({with_command / 1024:.1f} KiB)")
    assert status.phase == "Succeeded"
    assert status.progress == "500/500"
    assert size < 256 * 1024
    assert with_command < 1536 * 1024


def test_status_with_maximal_outputs_fits_in_etcd() -> None:
    """Regression: outputs had no total budget (500 x 4 KiB outputs made a ~2.2 MB status)."""
    status, size = _five_hundred_step_status(json.dumps({"report": "x" * 4000}))
    print(f"\n500-step execution status with ~4 KB outputs per step: {size} bytes")
    assert size < 1536 * 1024
    kept = sum(len(json.dumps(s.outputs, separators=(",", ":")))
               for s in status.steps.values() if s.outputs)
    assert 0 < kept <= MAX_TOTAL_OUTPUTS
    dropped = [n for n, s in status.steps.items() if "outputs dropped" in (s.message or "")]
    assert dropped and all(not status.steps[n].outputs for n in dropped)
    assert status.phase == "Succeeded"


def test_outputs_budget_counts_only_the_latest_attempt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One termination message holds 4 KiB at most: a budget of 6,000 bytes, two 3,000s.
    monkeypatch.setattr("runbook_operator.engine.planner.MAX_TOTAL_OUTPUTS", 6000)
    big = json.dumps({"blob": "y" * 3000})
    sim = sim_of([{"name": "a", "retry": {"limit": 1, "backoff": {"initial": "1s"}}},
                  {"name": "b", "dependsOn": ["a"]}])
    sim.script("a", Outcome.fail(1, big), Outcome.ok(big))
    sim.script("b", Outcome.ok('{"small": 1}'))
    status = sim.run()
    assert status.steps["a"].outputs == json.loads(big)
    assert status.steps["b"].outputs == {"small": 1}


# -- regressions of bugs found here -------------------------------------------------------


def test_wake_at_is_not_in_the_past_while_finally_runs_after_the_deadline() -> None:
    """Regression: wake_at stayed at the passed deadline, so the controller spun."""
    sim = sim_of([{"name": "a"}], timeout="1m", **{"finally": [{"name": "report"}]})
    sim.script("a", Outcome.ok(after=30))
    sim.script("report", Outcome.hang())
    sim.step()
    sim.step(T0 + timedelta(seconds=30))
    assert sim.status.steps["report"].phase == "Running"
    sim.step(T0 + timedelta(minutes=2))
    assert sim.status.phase == "Running"
    assert sim.wake_at is None or sim.wake_at > sim.now


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_finally_step_is_retried_after_cancel_or_timeout(stop: str) -> None:
    """Regression: a finally step's retry policy was ignored after a cancel or timeout."""
    sim = sim_of([{"name": "a"}], timeout="1m",
                 **{"finally": [{"name": "cleanup",
                                 "retry": {"limit": 2, "backoff": {"initial": "1s"}}}]})
    sim.script("a", Outcome.hang())
    sim.script("cleanup", Outcome.fail(1, "api busy", after=1), Outcome.ok(after=1))
    sim.step()
    if stop == "cancel":
        sim.cancel = True
    else:
        sim.advance(60)
    status = sim.run()
    assert status.steps["cleanup"].attempts == 2
    assert status.steps["cleanup"].phase == "Succeeded"
    assert status.phase == ("Cancelled" if stop == "cancel" else "Failed")


@pytest.mark.parametrize("when", ["params.token",
                                  "duration(params.token) > duration('1s')"])
def test_expression_error_never_shows_a_secret_param(when: str) -> None:
    secret = "tok-SuperSecretValue"
    spec = dag_spec([{"name": "a", "when": when}])
    spec["params"] = [{"name": "token", "type": "string", "secret": True}]
    sim = Simulator.start(spec, params={"token": secret})
    status = sim.run()
    assert status.steps["a"].reason == "ExpressionError"
    leaked = [e.message for p in sim.plans for e in p.events if secret in e.message]
    assert not leaked, leaked[0]
    assert secret not in json.dumps(status.to_k8s())


def test_credentials_a_step_prints_never_reach_status_or_events() -> None:
    printed = ("curl: (22) 401 for https://ops:Pa55-c4n4ry@api.example/v1 "
               "with 'Authorization: Bearer tok-C4n4ry.123'")
    sim = sim_of([{"name": "fails"}, {"name": "prints", "continueOnFailure": True}])
    sim.script("fails", Outcome.fail(22, printed))
    sim.script("prints", Outcome.ok(json.dumps({"api_token": "out-C4n4ry", "rows": 3})))
    status = sim.run()
    text = json.dumps(status.to_k8s()) + " ".join(
        e.message for p in sim.plans for e in p.events)
    for canary in ("Pa55-c4n4ry", "tok-C4n4ry.123", "out-C4n4ry"):
        assert canary not in text
    assert status.steps["prints"].outputs == {"api_token": "[REDACTED]", "rows": 3}
    assert "https://ops:[REDACTED]@api.example" in (status.steps["fails"].message or "")


def test_step_events_name_the_step_and_attempt() -> None:
    sim = sim_of([{"name": "a", "retry": {"limit": 1, "backoff": {"initial": "1s"}}},
                  {"name": "b", "dependsOn": ["a"], "when": "false"}])
    sim.script("a", Outcome.fail(1, "no"), Outcome.ok())
    sim.run()
    events = [(e.reason, e.step, e.attempt) for p in sim.plans for e in p.events]
    assert ("StepRetrying", "a", 1) in events
    assert ("StepSucceeded", "a", 2) in events
    assert ("StepSkipped", "b", None) in events  # never attempted
    assert ("ExecutionSucceeded", None, None) in events


def test_step_whose_job_vanished_does_not_run_forever() -> None:
    # The shell confirms with a GET that a Job is gone (never trusting cache lag alone)
    # and reports it in Observation.lost_jobs; the attempt then fails as JobDeleted.
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    sim.script("a", Outcome.hang())
    sim.step()
    sim.advance(10)
    del sim.jobs["ex-a-1"]  # deleted behind the operator's back
    sim.step()
    assert sim.status.steps["a"].phase == "Running", "a missing Job alone proves nothing"
    result = plan(replace(sim.observation(), lost_jobs=frozenset({"ex-a-1"})))
    st = result.status.steps["a"]
    assert (st.phase, st.reason) == ("Failed", "JobDeleted")
    assert result.status.steps["b"].phase == "Skipped"


# -- start_execution ------------------------------------------------------------------------

PARAMS = [
    {"name": "env", "type": "string", "required": True, "enum": ["staging", "prod"]},
    {"name": "replicas", "type": "integer", "default": 2},
    {"name": "token", "type": "string", "secret": True, "pattern": "^tok-[a-z]+$"},
    {"name": "dryRun", "type": "boolean"},
]


def _start(runbook: dict[str, Any] | None, params: dict[str, Any]) -> RunbookExecutionStatus:
    spec = RunbookExecutionSpec.model_validate({"runbookRef": {"name": "restart"},
                                                "params": params})
    return start_execution(spec, runbook, "ops", T0)


def _runbook(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "restart", "generation": 7},
            "spec": {"params": PARAMS, "steps": [{"name": "a", "image": "busybox"}], **spec}}


def test_start_missing_runbook() -> None:
    status = _start(None, {})
    assert (status.phase, status.reason) == ("Failed", "RunbookNotFound")
    assert "restart" in (status.message or "") and "ops" in (status.message or "")
    assert condition(status) == ("False", "RunbookNotFound")
    assert status.finished_at == fmt(T0)


@pytest.mark.parametrize("steps", [
    [{"name": "a", "image": "x", "dependsOn": ["b"]}, {"name": "b", "image": "x",
                                                         "dependsOn": ["a"]}],
    [{"name": "a", "image": "x", "dependsOn": ["ghost"]}],
    [{"name": "a"}],
    [{"name": "a", "image": "x", "when": "steps.a.phase =="}],
])
def test_start_invalid_runbook(steps: list[dict[str, Any]]) -> None:
    status = _start(_runbook(steps=steps), {"env": "prod"})
    assert (status.phase, status.reason) == ("Failed", "RunbookInvalid")
    assert "restart" in (status.message or "")
    assert status.runbook is not None and status.runbook.generation == 7
    assert not status.steps


def test_start_bad_params_names_each_and_hides_secrets() -> None:
    secret = "SuperSecretValue123"
    status = _start(_runbook(), {"env": "dev", "replicas": "three", "token": secret,
                                 "colour": "blue"})
    assert (status.phase, status.reason) == ("Failed", "InvalidParams")
    message = status.message or ""
    for name in ("env", "replicas", "token", "colour"):
        assert f"'{name}'" in message, name
    assert "'dev'" in message
    assert secret not in json.dumps(status.to_k8s())
    assert not status.steps


def test_start_missing_required_param_and_secret_of_wrong_type() -> None:
    status = _start(_runbook(), {"token": 123456789})
    message = status.message or ""
    assert status.reason == "InvalidParams"
    assert "'env'" in message and "required" in message
    assert "'token'" in message and "123456789" not in message


def test_start_valid_execution() -> None:
    status = _start(_runbook(), {"env": "prod", "token": "tok-abc"})
    assert (status.phase, status.reason) == ("Running", "Running")
    assert status.progress == "0/1"
    assert status.steps["a"].phase == "Pending"
    assert status.runbook_spec is not None and status.runbook_spec["steps"][0]["name"] == "a"
    assert status.runbook is not None and status.runbook.spec_hash
    assert status.started_at == fmt(T0)
    assert "tok-abc" not in json.dumps(status.to_k8s())


# -- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(1, 9))
@pytest.mark.parametrize("jitter", [0.0, 0.2, 0.5, 1.0])
def test_backoff_delay_bounds(attempt: int, jitter: float) -> None:
    b = Backoff(initial="5s", factor=2.0, max="5m", jitter=jitter)
    base = min(5 * 2 ** (attempt - 1), 300)
    for seed in ("x", "y", "uid/step/1", f"s{attempt}"):
        seconds = backoff.delay(b, attempt, seed).total_seconds()
        assert base * (1 - jitter) - 1e-6 <= seconds <= base * (1 + jitter) + 1e-6
        if jitter == 0:
            assert seconds == pytest.approx(base)


def test_backoff_cap_and_overflow() -> None:
    b = Backoff(initial="1s", factor=10.0, max="1m", jitter=0.0)
    assert backoff.delay(b, 3, "s") == timedelta(seconds=60)
    assert backoff.delay(b, 51, "s") == timedelta(seconds=60)
    assert backoff.delay(b, 10_000, "s") == timedelta(seconds=60)
    assert backoff.delay(b, 0, "s") == timedelta(seconds=1)


def test_backoff_jitter_is_deterministic_and_spread() -> None:
    b = Backoff(initial="10s", factor=1.0, max="10s", jitter=0.5)
    assert backoff.delay(b, 1, "uid/a/1") == backoff.delay(b, 1, "uid/a/1")
    values = [backoff.unit_jitter(f"seed-{i}") for i in range(500)]
    assert all(-1.0 <= v <= 1.0 for v in values)
    assert min(values) < -0.8 and max(values) > 0.8
    assert len(set(values)) == 500
    delays = {backoff.delay(b, 1, f"uid/{s}/1") for s in "abcdef"}
    assert len(delays) > 1
    failed = T0
    assert backoff.next_attempt_at(Retry(limit=1, backoff=b), 1, failed, "k") == \
        failed + backoff.delay(b, 1, "k")


def test_should_retry_rules() -> None:
    assert not backoff.should_retry(None, 1, 1, False)
    two = Retry(limit=2)
    assert backoff.should_retry(two, 1, 1, False)
    assert backoff.should_retry(two, 2, None, True)
    assert not backoff.should_retry(two, 3, 1, False)
    assert not backoff.should_retry(Retry(limit=0), 1, 1, False)
    codes = Retry(limit=2, on=RetryOn(exit_codes=[2, 4]))
    assert backoff.should_retry(codes, 1, 2, False)
    assert not backoff.should_retry(codes, 1, 3, False)
    assert not backoff.should_retry(codes, 1, None, False)
    assert not backoff.should_retry(codes, 1, None, True)
    timeouts = Retry(limit=2, on=RetryOn(timeouts=True))
    assert backoff.should_retry(timeouts, 1, None, True)
    assert not backoff.should_retry(timeouts, 1, 1, False)


# -- names --------------------------------------------------------------------------------


def test_job_name_short_is_readable() -> None:
    assert job_name("ex", "step", 1) == "ex-step-1"
    assert job_name("ex", "step", 12) == "ex-step-12"


def test_job_name_long_is_bounded_deterministic_and_distinct() -> None:
    execution = "incident-" + "x" * 240 + "-run"
    step = "s" * 62 + "z"
    names = [job_name(execution, step, n) for n in range(1, 52)]
    assert all(len(n) <= MAX_NAME and DNS_LABEL.match(n) for n in names)
    assert len(set(names)) == len(names)
    assert names == [job_name(execution, step, n) for n in range(1, 52)]
    other = job_name(execution, "s" * 62 + "y", 1)
    assert other != names[0]
    # A head that would end in "-" is trimmed to stay a DNS label.
    dashy = job_name("a" * 40 + "-" * 30 + "b", "c", 1)
    assert DNS_LABEL.match(dashy) and len(dashy) <= MAX_NAME


_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@settings(max_examples=200, deadline=None)
@given(execution=st.lists(_label, min_size=1, max_size=4).map("-".join).filter(
    lambda s: len(s) <= 253), step=_label, attempt=st.integers(1, 51))
def test_job_name_is_a_dns_label(execution: str, step: str, attempt: int) -> None:
    name = job_name(execution, step, attempt)
    assert len(name) <= MAX_NAME
    assert DNS_LABEL.match(name), name
    assert name == job_name(execution, step, attempt)
    assert name != job_name(execution, step, attempt + 1)
    assert name.endswith(f"-{attempt}")


# -- merge --------------------------------------------------------------------------------


def test_merge_diff_and_apply_examples() -> None:
    old = {"phase": "Running", "steps": {"a": {"phase": "Running", "job": "j"}, "b": {}},
           "gone": 1, "list": [1, 2]}
    new = {"phase": "Succeeded", "steps": {"a": {"phase": "Succeeded"}, "b": {}},
           "list": [1, 2, 3], "added": {"x": True}}
    patch = merge.diff(old, new)
    assert patch == {"phase": "Succeeded", "steps": {"a": {"phase": "Succeeded", "job": None}},
                     "gone": None, "list": [1, 2, 3], "added": {"x": True}}
    assert merge.apply(old, patch) == new
    assert merge.diff(new, new) == {}
    assert merge.diff({"n": 1}, {"n": True}) == {"n": True}
    assert merge.diff({"n": {"a": 1}}, {"n": 5}) == {"n": 5}
    assert merge.apply({"n": 5}, {"n": {"a": 1}}) == {"n": {"a": 1}}
    snapshot = json.dumps(old, sort_keys=True)
    merge.apply(old, patch)
    assert json.dumps(old, sort_keys=True) == snapshot


def test_merge_round_trip_of_real_statuses() -> None:
    sim = sim_of([{"name": "a"}, {"name": "b", "dependsOn": ["a"]}])
    previous = sim.status.to_k8s()
    while not sim.finished:
        sim.step()
        current = sim.status.to_k8s()
        assert merge.apply(previous, merge.diff(previous, current)) == current
        previous = current
        if sim.next_event():
            sim.advance_to(sim.next_event())  # type: ignore[arg-type]


_json_leaf = st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=3),
                       st.floats(allow_nan=False, allow_infinity=False, width=16))
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from("abcd"), inner, max_size=4)),
    max_leaves=12,
)
_objects = st.dictionaries(st.sampled_from("abcdef"), _json, max_size=5)


@settings(max_examples=300, deadline=None)
@given(old=_objects, new=_objects)
def test_merge_apply_of_diff_gives_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = merge.diff(old, new)
    assert merge.apply(old, patch) == new
    assert merge.diff(new, new) == {}
    for key in old.keys() - new.keys():
        assert patch[key] is None
