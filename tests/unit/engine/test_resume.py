"""Resuming a finished execution (``spec.resumeFrom``): engine/resume.py and start_execution.

Cases:

- a 5-step chain whose step 4 failed, resumed by default: s1-s3 are reused (phase,
  outputs, exit code, times copied; reason Reused naming the source), the planner
  creates Jobs only for s4 and s5, s3's outputs are what s4 sees, the run Succeeds;
  status.resumedFrom and an ExecutionResumed history entry record the origin;
- ``step`` given: that step and its descendants run again, the rest that succeeded
  is reused; a sibling branch that succeeded is reused;
- a step Skipped by its ``when`` is reused as Skipped, one Skipped UpstreamFailed
  runs again; finally steps always run again; a fallback is not reused when the
  step it stands in for (Skipped by an open circuit) runs again, nor is a step
  after that one;
- the new run freezes the source's spec even when the Runbook changed since (or is
  gone);
- refusals, each before any Job (phase Failed, no steps): the source does not
  exist, is not finished, ran another runbook, never started, the step is unknown
  or a finally step, the params differ;
- property (random DAGs, random source outcomes, optional from-step): a reused step
  is never downstream of the from-step or of a failed step; a step is reused exactly
  when it and all its upstream steps were reusable and none is the from-step;
  finally steps are never reused; reused outputs equal the source's;
- property, end to end in the simulator (random DAGs with random failures and
  outputs run as the source, then resumed and run to the end): no Job is created
  for a reused step, reused steps end with the source's phase and outputs, and a
  step downstream of the from-step is never reused and gets a Job;
- fuzz: any shape of source body (it is read from the API) gives a Running start
  or a Resume* refusal, never an exception.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import RunbookExecutionSpec, StepStatus
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.resume import reused_steps
from runbook_operator.engine.start import start_execution

from .simulator import T0, Outcome, Simulator, dag_spec

CHAIN = dag_spec([
    {"name": "s1"},
    {"name": "s2", "dependsOn": ["s1"]},
    {"name": "s3", "dependsOn": ["s2"]},
    {"name": "s4", "dependsOn": ["s3"]},
    {"name": "s5", "dependsOn": ["s4"]},
], params=[{"name": "target", "type": "string"}], **{"finally": [{"name": "tidy"}]})
PARAMS = {"target": "api"}


def source_run(spec: dict[str, Any], outcomes: dict[str, Outcome],
               params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``spec`` to its end in the simulator; the execution as the API holds it."""
    sim = Simulator.start(spec, params=params if params is not None else PARAMS, name="first")
    for step, outcome in outcomes.items():
        sim.script(step, outcome)
    sim.run()
    return {"metadata": {"name": "first", "namespace": "default"},
            "spec": {"runbookRef": {"name": "rb"},
                     "params": params if params is not None else PARAMS},
            "status": sim.status.to_k8s()}


def resume_spec(step: str | None = None, runbook: str = "rb",
                params: dict[str, Any] | None = None) -> RunbookExecutionSpec:
    resume: dict[str, Any] = {"execution": "first"}
    if step is not None:
        resume["step"] = step
    return RunbookExecutionSpec.model_validate({
        "runbookRef": {"name": runbook}, "params": PARAMS if params is None else params,
        "resumeFrom": resume})


def resumed(source: dict[str, Any] | None, step: str | None = None,
            runbook: dict[str, Any] | None = None, **kw: Any) -> Any:
    return start_execution(resume_spec(step, **kw), runbook, "default", T0, source=source)


def run_resumed(status: Any) -> Simulator:
    spec = RunbookSpec.model_validate(status.runbook_spec)
    sim = Simulator(spec=spec, status=status, name="second", params=PARAMS, now=T0)
    sim.run()
    return sim


FAIL_S4 = {"s3": Outcome.ok('{"x": "from-s3"}'), "s4": Outcome.fail(3)}


def test_default_resume_reuses_what_succeeded_before_the_failed_step() -> None:
    source = source_run(CHAIN, FAIL_S4)
    assert source["status"]["phase"] == "Failed"
    status = resumed(source)
    assert status.phase == "Running", status.message
    src = source["status"]["steps"]
    for name in ("s1", "s2", "s3"):
        st = status.steps[name]
        assert (st.phase, st.reason) == ("Succeeded", "Reused")
        assert "first" in (st.message or "")
        assert st.job is None
        for field in ("outputs", "exitCode", "startedAt", "finishedAt", "attempts"):
            assert st.to_k8s().get(field) == src[name].get(field), field
    assert status.steps["s3"].outputs == {"x": "from-s3"}
    assert {n: s.phase for n, s in status.steps.items() if n in ("s4", "s5", "tidy")} == \
        {"s4": "Pending", "s5": "Pending", "tidy": "Pending"}
    assert status.resumed_from is not None
    assert (status.resumed_from.execution, status.resumed_from.reused) == \
        ("first", ["s1", "s2", "s3"])
    assert status.progress == "3/6"
    assert [h.event for h in status.history] == ["ExecutionStarted", "ExecutionResumed"]
    assert "first" in (status.history[1].message or "")
    sim = run_resumed(status)
    assert sim.status.phase == "Succeeded"
    assert sorted({c.step for c in sim.created}) == ["s4", "s5", "tidy"]
    assert sim.status.steps["s3"].outputs == {"x": "from-s3"}
    assert sim.status.steps["s1"].reason == "Reused"


def test_from_step_reruns_it_and_its_descendants() -> None:
    spec = dag_spec([
        {"name": "a"},
        {"name": "b", "dependsOn": ["a"]},
        {"name": "c", "dependsOn": ["a"]},
        {"name": "d", "dependsOn": ["b", "c"]},
    ], params=[{"name": "target", "type": "string"}])
    source = source_run(spec, {})
    assert source["status"]["phase"] == "Succeeded"
    status = resumed(source, step="b")
    assert status.resumed_from is not None and status.resumed_from.reused == ["a", "c"]
    assert status.steps["b"].phase == status.steps["d"].phase == "Pending"
    sim = run_resumed(status)
    assert sim.status.phase == "Succeeded"
    assert sorted(c.step for c in sim.created) == ["b", "d"]


def test_when_skipped_is_reused_upstream_failed_and_finally_run_again() -> None:
    spec = dag_spec([
        {"name": "probe"},
        {"name": "never", "dependsOn": ["probe"], "when": "false"},
        {"name": "bad", "dependsOn": ["probe"]},
        {"name": "after", "dependsOn": ["bad"]},
    ], params=[{"name": "target", "type": "string"}], **{"finally": [{"name": "tidy"}]})
    source = source_run(spec, {"bad": Outcome.fail()})
    src = source["status"]["steps"]
    assert (src["never"]["phase"], src["never"]["reason"]) == ("Skipped", "WhenFalse")
    assert (src["after"]["phase"], src["after"]["reason"]) == ("Skipped", "UpstreamFailed")
    assert src["tidy"]["phase"] == "Succeeded"
    status = resumed(source)
    assert status.resumed_from is not None
    assert status.resumed_from.reused == ["probe", "never"]
    assert status.steps["never"].phase == "Skipped"
    assert status.steps["tidy"].phase == "Pending"
    sim = run_resumed(status)
    assert sorted(c.step for c in sim.created) == ["after", "bad", "tidy"]


def test_fallback_of_a_step_that_runs_again_runs_again() -> None:
    spec = RunbookSpec.model_validate(dag_spec([
        {"name": "probe", "circuit": {"policy": "p", "onOpen": "Fallback",
                                      "fallback": "backup"}},
        {"name": "backup"},
        {"name": "after", "dependsOn": ["probe"], "when": "true"},
        {"name": "alone"},
    ]))
    src = {"probe": StepStatus(phase="Skipped", reason="CircuitOpen"),
           "backup": StepStatus(phase="Succeeded", reason="Completed"),
           "after": StepStatus(phase="Succeeded", reason="Completed"),
           "alone": StepStatus(phase="Succeeded", reason="Completed")}
    assert reused_steps(spec, src, None) == ["alone"]


def test_resume_freezes_the_source_spec_not_the_runbook_now() -> None:
    source = source_run(CHAIN, FAIL_S4)
    changed = {"metadata": {"name": "rb", "generation": 7},
               "spec": dag_spec([{"name": "other"}])}
    for runbook in (changed, None):
        status = resumed(source, runbook=runbook)
        assert status.phase == "Running"
        assert status.runbook_spec == source["status"]["runbookSpec"]
        assert status.runbook is not None and status.runbook.generation == 1


def refusal(status: Any) -> str:
    assert status.phase == "Failed" and not status.steps and status.runbook_spec is None
    return str(status.reason)


def test_refusals_fail_before_any_job() -> None:
    source = source_run(CHAIN, FAIL_S4)
    assert refusal(resumed(None)) == "ResumeSourceNotFound"
    running = {**source, "status": {**source["status"], "phase": "Running"}}
    assert refusal(resumed(running)) == "ResumeSourceNotFinished"
    other = {**source, "spec": {**source["spec"], "runbookRef": {"name": "other"}}}
    assert refusal(resumed(other)) == "ResumeSourceMismatch"
    status = resumed(source, step="nope")
    assert refusal(status) == "ResumeStepUnknown" and "nope" in (status.message or "")
    status = resumed(source, step="tidy")
    assert refusal(status) == "ResumeStepUnknown" and "finally" in (status.message or "")
    assert refusal(resumed(source, params={"target": "db"})) == "ResumeParamsDiffer"
    never = {**source, "status": {"phase": "Failed", "reason": "InvalidParams"}}
    assert refusal(resumed(never)) == "ResumeSourceNotStarted"


# -- property ---------------------------------------------------------------------------

SOURCE_PHASES = [("Succeeded", "Completed"), ("Failed", "StepFailed"),
                 ("Skipped", "WhenFalse"), ("Skipped", "UpstreamFailed"), ("Pending", None)]


@st.composite
def dags(draw: Any) -> tuple[RunbookSpec, dict[str, StepStatus], str | None]:
    n = draw(st.integers(1, 12))
    steps = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        steps.append({"name": f"s{i}", "dependsOn": [f"s{d}" for d in deps]})
    spec = RunbookSpec.model_validate(dag_spec(steps, **{"finally": [{"name": "fin"}]}))
    statuses = {}
    for step in spec.all_steps():
        phase, reason = draw(st.sampled_from(SOURCE_PHASES))
        outputs = draw(st.none() | st.dictionaries(st.text(max_size=3), st.integers(),
                                                   max_size=2))
        statuses[step.name] = StepStatus.model_validate(
            {"phase": phase, "reason": reason, "outputs": outputs})
    from_step = draw(st.none() | st.sampled_from([s.name for s in spec.steps]))
    return spec, statuses, from_step


def ancestors(spec: RunbookSpec, name: str) -> set[str]:
    """Every step ``name`` depends on, directly or not (computed upward, unlike the engine)."""
    by_name = {s.name: s for s in spec.all_steps()}
    out: set[str] = set()
    todo = list(by_name[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(by_name[dep].depends_on)
    return out


@settings(max_examples=300, deadline=None)
@given(dags())
def test_reuse_never_crosses_a_rerun_root(case: tuple[RunbookSpec, dict[str, StepStatus],
                                                      str | None]) -> None:
    spec, statuses, from_step = case
    reused = reused_steps(spec, statuses, from_step)

    def reusable(name: str) -> bool:
        src = statuses[name]
        return src.phase == "Succeeded" or (src.phase, src.reason) == ("Skipped", "WhenFalse")

    failed = {s.name for s in spec.steps if statuses[s.name].phase == "Failed"}
    for step in spec.steps:
        upstream = ancestors(spec, step.name) | {step.name}
        if from_step in upstream or upstream & failed:
            assert step.name not in reused, step.name
        # reused exactly when it and everything it depends on finished well
        assert (step.name in reused) == (from_step not in upstream
                                         and all(reusable(n) for n in upstream)), step.name
    assert "fin" not in reused
    raw_spec = spec.to_k8s()
    source = {"spec": {"runbookRef": {"name": "rb"}},
              "status": {"phase": "Failed", "runbookSpec": raw_spec,
                         "runbook": {"name": "rb", "generation": 1},
                         "steps": {k: v.to_k8s() for k, v in statuses.items()}}}
    exec_spec = RunbookExecutionSpec.model_validate(
        {"runbookRef": {"name": "rb"},
         "resumeFrom": {"execution": "first", **({"step": from_step} if from_step else {})}})
    status = start_execution(exec_spec, None, "default", T0, source=source)
    assert status.phase == "Running", status.message
    for name, st_ in status.steps.items():
        if name in reused:
            assert st_.reason == "Reused" and st_.phase == statuses[name].phase
            assert st_.outputs == statuses[name].outputs
        else:
            assert st_.phase == "Pending" and st_.outputs is None


@st.composite
def runs(draw: Any) -> tuple[dict[str, Any], dict[str, Outcome], str | None]:
    n = draw(st.integers(1, 8))
    steps = []
    outcomes = {}
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=2)) if i else []
        steps.append({"name": f"s{i}", "dependsOn": [f"s{d}" for d in deps]})
        outcomes[f"s{i}"] = draw(st.sampled_from([
            Outcome.ok(f'{{"i": {i}}}'), Outcome.ok(), Outcome.fail(2)]))
    spec = dag_spec(steps, params=[{"name": "target", "type": "string"}],
                    **{"finally": [{"name": "fin"}]})
    from_step = draw(st.none() | st.sampled_from([s["name"] for s in steps]))
    return spec, outcomes, from_step


@settings(max_examples=100, deadline=None)
@given(runs())
def test_resumed_runs_create_no_job_for_reused_steps(
        case: tuple[dict[str, Any], dict[str, Outcome], str | None]) -> None:
    spec, outcomes, from_step = case
    source = source_run(spec, outcomes)
    status = resumed(source, step=from_step)
    assert status.phase == "Running", status.message
    assert status.resumed_from is not None
    reused = set(status.resumed_from.reused)
    sim = run_resumed(status)
    assert not reused & {c.step for c in sim.created}
    src = source["status"]["steps"]
    for name in reused:
        st_ = sim.status.steps[name]
        assert (st_.phase, st_.outputs) == (src[name]["phase"], src[name].get("outputs"))
    if from_step is not None:
        rb = RunbookSpec.model_validate(spec)
        for step in rb.steps:
            if step.name == from_step or from_step in ancestors(rb, step.name):
                assert step.name not in reused
                assert sim.status.steps[step.name].reason != "Reused"
                assert step.name in {c.step for c in sim.created}  # every re-run succeeds


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "spec": JSON | st.fixed_dictionaries({"runbookRef": st.just({"name": "rb"})},
                                         optional={"params": JSON}),
    "status": JSON | st.fixed_dictionaries(
        {"phase": st.sampled_from(["Failed", "Succeeded", "Running"]) | JSON},
        optional={"runbookSpec": JSON | st.just(CHAIN), "steps": JSON,
                  "runbook": JSON})}))
def test_any_source_body_is_a_start_or_a_refusal(source: dict[str, Any]) -> None:
    """The source is read from the API: whatever shape it has, no exception escapes."""
    spec = RunbookExecutionSpec.model_validate(
        {"runbookRef": {"name": "rb"}, "resumeFrom": {"execution": "first"}})
    status = start_execution(spec, None, "default", T0, source=source)
    assert status.phase in ("Running", "Failed")
    if status.phase == "Failed":
        assert str(status.reason).startswith("Resume")


def test_resumed_run_carries_its_sources_incident_down_the_chain() -> None:
    """PagerDuty: a retry's success must resolve what its (alert-started) source opened,
    and a retry of that retry still the same incident."""
    from runbook_operator.engine.notify import incident_key_of
    source = source_run(CHAIN, FAIL_S4)
    source["metadata"]["uid"] = "uid-first"
    source["spec"]["triggeredBy"] = {"kind": "Alert", "alert": {
        "name": "HighMemory", "fingerprint": "f00d"}}
    status = resumed(source)
    assert status.resumed_from is not None
    assert status.resumed_from.incident_key == incident_key_of(source)
    second = {"metadata": {"name": "second", "namespace": "default", "uid": "uid-second"},
              "spec": {"runbookRef": {"name": "rb"}, "params": PARAMS,
                       "triggeredBy": {"kind": "Manual"}},
              "status": {**source["status"], "resumedFrom": status.to_k8s()["resumedFrom"]}}
    assert incident_key_of(second) == incident_key_of(source)
