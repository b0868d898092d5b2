"""The planner with circuit breakers (pure; the simulator plays the cluster).

Cases: failed calls open the circuit at the threshold and the next attempt of a
guarded step creates no Job and fails with CircuitOpen; onOpen Skip skips;
onOpen Fallback skips the step and runs its fallback, which is otherwise
FallbackNotNeeded; onOpen Wait waits and wakes when the circuit half-opens, then
runs as its trial call; a missing policy fails the step with CircuitPolicyNotFound,
an invalid one with CircuitPolicyInvalid naming why;
a cancelled trial gives its HalfOpen permit back; the key is CEL over params;
every settled call is counted once by outcome (success, failure, slow, rejected),
a step waiting on an open circuit counting as one rejection however often it asks;
a guarded Job adopted after its pass's status was lost (a write conflict) is still
one call of its circuit (the demo's circuit opened one attempt late without it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.engine.plans import CreateJob

from .simulator import Outcome, Simulator, dag_spec

POLICY = CircuitPolicySpec.model_validate({
    "slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 2,
    "failureRateThreshold": 50, "openDuration": "60s"})


def guarded(name: str, on_open: str = "Fail", **extra: Any) -> dict[str, Any]:
    return {"name": name, "circuit": {"policy": "ai", "onOpen": on_open, **extra}}


def sim(steps: list[dict[str, Any]], circuits: Any = None, policies: Any = None,
        **kw: Any) -> Simulator:
    spec = dag_spec(steps)
    spec.update(kw)
    s = Simulator.start(spec)
    s.policies = {"ai": POLICY} if policies is None else policies
    s.circuits = dict(circuits or {})
    return s


def two_failures() -> tuple[Simulator, Simulator]:
    """Two executions whose guarded call fails; the second one opens the circuit."""
    s = sim([guarded("call")])
    s.script("call", Outcome.fail(1, ""))
    s.run()
    t = sim([guarded("call")], circuits=s.circuits)
    t.script("call", Outcome.fail(1, ""))
    t.run()
    return s, t


def open_circuit() -> Any:
    return two_failures()[1].circuits


def test_failures_open_the_circuit_and_the_next_call_fails_fast() -> None:
    circuits = open_circuit()
    assert circuits[("ai", "default")].state == "Open"
    s = sim([guarded("call")], circuits=circuits)
    status = s.run()
    st = status.steps["call"]
    assert (st.phase, st.reason) == ("Failed", "CircuitOpen")
    assert (st.circuit, st.circuit_admitted_at) == ("ai/default", None)  # refused by it
    assert not [a for p in s.plans for a in p.actions if isinstance(a, CreateJob)]
    assert status.phase == "Failed"


def test_skip_and_fallback() -> None:
    circuits = open_circuit()
    status = sim([guarded("call", "Skip"), {"name": "after"}], circuits=circuits).run()
    assert (status.steps["call"].phase, status.steps["call"].reason) == ("Skipped",
                                                                         "CircuitOpen")
    s = sim([guarded("primary", "Fallback", fallback="backup"), {"name": "backup"}],
            circuits=circuits)
    status = s.run()
    assert status.phase == "Succeeded"
    assert status.steps["primary"].reason == "CircuitOpen"
    assert status.steps["backup"].phase == "Succeeded"
    status = sim([guarded("primary", "Fallback", fallback="backup"), {"name": "backup"}]).run()
    assert status.steps["primary"].phase == "Succeeded"
    assert (status.steps["backup"].phase, status.steps["backup"].reason) == (
        "Skipped", "FallbackNotNeeded")


def test_wait_runs_as_the_trial_call_when_the_circuit_half_opens() -> None:
    circuits = open_circuit()
    s = sim([guarded("call", "Wait")], circuits=circuits)
    s.script("call", Outcome.ok(""))
    first = s.step()
    assert not first.actions and s.status.steps["call"].phase == "Pending"
    assert first.wake_at is not None
    assert first.wake_at == circuits[("ai", "default")].next_attempt_at
    status = s.run()
    assert status.phase == "Succeeded"
    assert s.circuits[("ai", "default")].state == "Closed"


def test_missing_policy_fails_the_step() -> None:
    status = sim([guarded("call")], policies={}).run()
    assert (status.steps["call"].phase, status.steps["call"].reason) == (
        "Failed", "CircuitPolicyNotFound")


def test_invalid_policy_fails_the_step_naming_why() -> None:
    s = sim([guarded("call")], policies={})
    s.invalid_policies = {"ai": "ContradictorySettings: maxOpenDuration 1m is shorter ..."}
    status = s.run()
    st = status.steps["call"]
    assert (st.phase, st.reason) == ("Failed", "CircuitPolicyInvalid")
    assert "maxOpenDuration 1m" in (st.message or "")
    assert not [a for p in s.plans for a in p.actions if isinstance(a, CreateJob)]


def test_key_is_cel_over_params() -> None:
    spec = dag_spec([{"name": "call", "circuit": {"policy": "ai", "key": "params.provider"}}])
    spec["params"] = [{"name": "provider", "default": "openai"}]
    s = Simulator.start(spec, params={"provider": "anthropic"})
    s.policies, s.circuits = {"ai": POLICY}, {}
    s.run()
    assert set(s.circuits) == {("ai", "anthropic")}
    assert s.status.steps["call"].circuit == "ai/anthropic"


def test_cancelled_trial_gives_its_permit_back() -> None:
    circuits = open_circuit()
    s = sim([guarded("call")], circuits=circuits)
    s.script("call", Outcome.hang())
    s.advance(120)  # past openDuration: HalfOpen, the call takes the one permit
    s.step()
    assert s.circuits[("ai", "default")].half_open_in_flight == 1
    s.cancel = True
    s.run()
    assert s.circuits[("ai", "default")].half_open_in_flight == 0


def test_opening_is_an_event() -> None:
    s, t = two_failures()
    reasons = [e.reason for p in t.plans for e in p.events]
    assert "CircuitOpen" in reasons
    transitions = [tr for p in t.plans for tr in p.transitions]
    assert [(tr[2].from_, tr[2].to) for tr in transitions] == [("Closed", "Open")]
    assert t.now - s.now < timedelta(hours=1)


def test_policy_retry_is_the_default_and_the_step_wins() -> None:
    lenient = POLICY.model_copy(update={
        "retry": CircuitPolicySpec.model_validate(
            {"retry": {"limit": 1, "backoff": {"initial": "1s", "jitter": 0}}}).retry,
        "minimum_calls": 100})
    s = sim([guarded("call")], policies={"ai": lenient})
    s.script("call", Outcome.fail(1, ""), Outcome.ok(""))
    status = s.run()
    assert status.steps["call"].attempts == 2 and status.phase == "Succeeded"
    own = sim([{**guarded("call"), "retry": {"limit": 0}}], policies={"ai": lenient})
    own.script("call", Outcome.fail(1, ""), Outcome.ok(""))
    status = own.run()
    assert status.steps["call"].attempts == 1 and status.phase == "Failed"


def calls(s: Simulator) -> list[tuple[str, str, str]]:
    return [c for p in s.plans for c in p.calls]


def test_calls_are_counted_once_by_outcome() -> None:
    slow_policy = POLICY.model_copy(update={"slow_call_duration_threshold": "30s"})
    s = sim([guarded("ok"), guarded("bad"), guarded("slow"),
             guarded("slow-bad")], policies={"ai": slow_policy})
    s.script("ok", Outcome.ok(""))
    s.script("bad", Outcome.fail(1, ""))
    s.script("slow", Outcome.ok("", after=60))
    s.script("slow-bad", Outcome.fail(1, "", after=60))
    s.run()
    assert sorted(calls(s)) == sorted([("ai", "default", "success"),
                                       ("ai", "default", "failure"),
                                       ("ai", "default", "slow"),
                                       ("ai", "default", "failure")])


def test_rejections_are_counted_once_per_step() -> None:
    circuits = open_circuit()
    s = sim([guarded("call")], circuits=circuits)
    s.run()
    assert calls(s) == [("ai", "default", "rejected")]
    w = sim([guarded("call", "Wait")], circuits=circuits)
    w.script("call", Outcome.ok(""))
    w.step()
    w.step()  # asks again while still Open: no second rejection
    w.run()
    assert calls(w) == [("ai", "default", "rejected"), ("ai", "default", "success")]


def test_an_adopted_guarded_job_is_still_a_call() -> None:
    s = sim([guarded("call")])
    s.script("call", Outcome.fail(1, ""))
    s.step(persist=False)  # the Job is created, the status naming it is lost (409)
    assert list(s.jobs) == ["ex-call-1"]
    status = s.run()
    st = status.steps["call"]
    assert "adopted" in " ".join(h.message or "" for h in status.history)
    assert st.circuit == "ai/default" and st.circuit_admitted_at is not None
    assert calls(s) == [("ai", "default", "failure")]
