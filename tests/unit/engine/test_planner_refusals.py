"""Jobs the API refused, and steps the allowances no longer permit, as planner inputs.

Cases:
- a Job create the API refused (``Observation.create_failures``) fails its step with
  JobCreateFailed: no CreateJob for that name, a StepFailed history entry and a
  warning Event naming the step, the execution then Failed(StepFailed) naming it;
- a guarded step whose Job was refused takes no HalfOpen permit and no bulkhead slot;
- a step created in the refused round is adopted by the next round (its Job is
  observed), never created twice, even though the failure stops the DAG;
- a refused message quoting a secret parameter is scrubbed like any other;
- a step whose securityContext the allowances no longer permit fails with
  PrivilegedStep before any Job; with the allowance it runs.
"""

from __future__ import annotations

from dataclasses import replace

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.circuit import CircuitState
from runbook_operator.engine.names import job_name
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import CreateFailure, CreateJob, ObservedJob
from runbook_operator.engine.podsecurity import SecurityPolicy

from .simulator import Simulator, dag_spec


def refused(sim: Simulator, step: str, message: str = "the apiserver refused the Job (422)"
            ) -> dict[str, CreateFailure]:
    return {job_name(sim.name, step, 1): CreateFailure("JobCreateFailed", message)}


def test_a_refused_create_fails_its_step_with_history_and_an_event() -> None:
    sim = Simulator.start(dag_spec([{"name": "a"}, {"name": "b"}]))
    first = plan(sim.observation())
    assert {a.step for a in first.actions if isinstance(a, CreateJob)} == {"a", "b"}
    b_job = job_name(sim.name, "b", 1)
    # The next round observes the refusal and the Job of b that round 1 created.
    jobs = {b_job: ObservedJob(b_job, "b", 1, "Active")}
    again = plan(replace(sim.observation(), create_failures=refused(sim, "a"), jobs=jobs))
    assert not [a for a in again.actions if isinstance(a, CreateJob)]
    st = again.status.steps["a"]
    assert (st.phase, st.reason, st.job) == ("Failed", "JobCreateFailed", None)
    assert "422" in (st.message or "")
    assert any(h.event == "StepFailed" and h.step == "a" for h in again.status.history)
    event = next(e for e in again.events if e.step == "a" and e.warning)
    assert "step a" in event.message
    assert (again.status.steps["b"].phase, again.status.steps["b"].job) == ("Running", b_job)


def test_a_refused_guarded_step_takes_no_permit() -> None:
    policy = CircuitPolicySpec.model_validate({"halfOpen": {"permittedCalls": 1},
                                               "bulkhead": {"maxConcurrent": 1}})
    sim = Simulator.start(dag_spec([{"name": "call", "circuit": {"policy": "ai"}}]))
    half_open = CircuitState(state="HalfOpen")
    obs = replace(sim.observation(), policies={"ai": policy},
                  circuits={("ai", "default"): half_open},
                  create_failures=refused(sim, "call"))
    result = plan(obs)
    assert result.ops == [] and result.slots == []
    assert result.status.steps["call"].reason == "JobCreateFailed"


def test_a_refused_message_is_scrubbed() -> None:
    spec = dag_spec([{"name": "a"}])
    spec["params"] = [{"name": "token", "secret": True}]
    sim = Simulator.start(spec, params={"token": "hunter2-secret"})
    result = plan(replace(sim.observation(),
                          create_failures=refused(sim, "a", "bad env hunter2-secret")))
    text = result.status.steps["a"].message or ""
    assert "hunter2-secret" not in text and "bad env" in text
    assert all("hunter2-secret" not in e.message for e in result.events)


def test_a_step_no_longer_allowed_fails_privileged_before_any_job() -> None:
    sim = Simulator.start(dag_spec([{"name": "root"}]), namespace="ops")
    # The frozen spec as it was accepted while the namespace had the allowance.
    raw = sim.spec.to_k8s()
    raw["steps"][0]["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0}
    obs = replace(sim.observation(), spec=RunbookSpec.model_validate(raw))
    allowed = SecurityPolicy(privileged_namespaces=frozenset({"ops"}))
    ok = plan(replace(obs, security=allowed))
    assert [a.step for a in ok.actions if isinstance(a, CreateJob)] == ["root"]
    withdrawn = plan(replace(obs, security=SecurityPolicy()))
    assert not [a for a in withdrawn.actions if isinstance(a, CreateJob)]
    st = withdrawn.status.steps["root"]
    assert (st.phase, st.reason) == ("Failed", "PrivilegedStep")
    assert "runAsUser" in (st.message or "") or "runAsNonRoot" in (st.message or "")
