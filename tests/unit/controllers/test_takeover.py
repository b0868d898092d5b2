"""What a replica that takes the lead knows of the circuits and may write (in memory).

Cases:
- a standby follows the CircuitPolicy status the leader writes (follow_status): the
  circuit it read first is replaced by every later status, so an Open circuit the
  leader opened after the standby started is Open on the standby (the failover bug:
  the standby kept the picture it read at start);
- the leader itself never goes back to a status it wrote earlier (its memory is newer);
- reload from a fresh listing replaces every circuit (state, window counts, openUntil,
  HalfOpen trials in flight) and drops the policies the listing no longer has, in the
  namespaces it covers only;
- a malformed circuit in a status is skipped, never a crash;
- the write fence: fence_writes refuses POST/PUT/PATCH/DELETE when may_act() is false
  and lets reads through, and the LeaderElector's may_act turns false once its last
  renewal is older than renew_deadline by the monotonic clock (a freeze), even while
  ``leading`` is still set;
- a replica learns a running execution's secret values from its watch event (started:
  the frozen spec; not yet: the Runbook), from any body without raising;
- a Lease edited by hand with any value in any field (hypothesis) reads as a record
  and gives a verdict, never an exception.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.controllers.circuits import CircuitRegistry, status_of
from runbook_operator.controllers.leader import LeaderElector, _record
from runbook_operator.engine import circuit
from runbook_operator.engine.circuit import Call, CircuitState
from runbook_operator.engine.lease import LeaseTimings, decide
from runbook_operator.k8s.client import NotLeading, fence_writes

NS = "ns"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SPEC: dict[str, Any] = {"slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 3,
                        "failureRateThreshold": 50, "openDuration": "10m",
                        "halfOpen": {"permittedCalls": 2}}
POLICY = CircuitPolicySpec.model_validate(SPEC)


def policy(states: dict[str, CircuitState], name: str = "sp",
           namespace: str = NS) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"namespace": namespace, "name": name,
                                         "generation": 1},
                            "spec": SPEC}
    body["status"] = status_of(body, states)
    return body


def opened(failures: int = 3) -> CircuitState:
    state = CircuitState()
    for i in range(failures):
        at = T0 + timedelta(seconds=i)
        state, _ = circuit.record(state, POLICY, Call(at=at, failure=True), at)
    assert state.state == "Open"
    return state


def held(reg: CircuitRegistry, key: str, name: str = "sp") -> CircuitState:
    return reg.circuits(NS, [name])[(name, key)]


def test_a_standby_follows_the_status_the_leader_writes() -> None:
    standby = CircuitRegistry()
    standby.observe_policy(policy({}), follow_status=True)  # what it read at start
    standby.observe_policy(policy({"x": opened()}), follow_status=True)
    state = held(standby, "x")
    assert state.state == "Open" and state.calls == 3 and state.window.failures == 3
    assert state.next_attempt_at == opened().next_attempt_at


def test_the_leader_keeps_its_own_newer_picture() -> None:
    leader = CircuitRegistry()
    leader.observe_policy(policy({}))
    leader.update(NS, {("sp", "x"): opened()})
    leader.observe_policy(policy({}))  # its own older write comes back through the watch
    assert held(leader, "x").state == "Open"


def test_reload_replaces_everything_and_drops_what_is_gone() -> None:
    trial = CircuitState(state="HalfOpen", last_transition_time=T0, consecutive_opens=1,
                         opened_at=T0 - timedelta(minutes=10), half_open_in_flight=1)
    reg = CircuitRegistry()
    reg.observe_policy(policy({"x": CircuitState()}), follow_status=True)
    reg.observe_policy(policy({}, name="gone"), follow_status=True)
    reg.observe_policy(policy({}, name="elsewhere", namespace="other"), follow_status=True)
    reg.reload([NS], [policy({"x": opened(), "y": trial})])
    x, y = held(reg, "x"), held(reg, "y")
    assert x.state == "Open" and x.window.failures == 3
    assert x.next_attempt_at == opened().next_attempt_at
    assert y.state == "HalfOpen" and y.half_open_in_flight == 1
    assert not reg.known(NS, "gone")
    assert reg.known("other", "elsewhere")  # not in the listing's namespaces


def test_a_malformed_circuit_is_skipped() -> None:
    body = policy({"x": opened()})
    body["status"]["circuits"].append({"key": 12, "state": "Sideways"})
    body["status"]["circuits"].append("not a circuit")
    reg = CircuitRegistry()
    reg.observe_policy(body, follow_status=True)
    assert held(reg, "x").state == "Open"
    assert set(reg.circuits(NS, ["sp"])) == {("sp", "x")}


class Rest:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> str:
        self.sent.append(method)
        return "ok"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "patch"])
def test_the_fence_refuses_writes_and_lets_reads_through(method: str) -> None:
    rest = Rest()
    api_client: Any = SimpleNamespace(rest_client=rest)
    allowed = [False]
    fence_writes(api_client, lambda: allowed[0])
    assert api_client.rest_client.request("GET", "https://x/apis") == "ok"
    with pytest.raises(NotLeading):
        api_client.rest_client.request(method, "https://x/apis/runbooks.dev/v1alpha1/x")
    assert rest.sent == ["GET"]
    allowed[0] = True
    assert api_client.rest_client.request(method, "https://x/y") == "ok"


def test_a_leader_frozen_past_its_renew_deadline_may_not_act() -> None:
    now = [1000.0]
    elector = LeaderElector(SimpleNamespace(), "ns", "lease", "a",  # type: ignore[arg-type]
                            monotonic=lambda: now[0])

    async def lead() -> None:
        elector.leading.set()

    asyncio.run(lead())
    elector.last_renewed = 1000.0
    assert elector.may_act()
    now[0] = 1009.9
    assert elector.may_act()
    now[0] = 1010.0  # woke from a 10 s freeze: still "leading", but may not write
    assert elector.leading.is_set() and not elector.may_act()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["holderIdentity", "renewTime", "acquireTime",
                                        "leaseDurationSeconds", "leaseTransitions"]),
                       json_values),
       json_values)
def test_a_hand_edited_lease_never_crashes_the_election(spec: dict[str, Any],
                                                        version: Any) -> None:
    """Any value in any field of a Lease (wrong types, huge numbers, nesting) reads as a
    record, and deciding on it gives a verdict, never an exception."""
    record = _record({"metadata": {"resourceVersion": version}, "spec": spec})
    for me in ("a", str(spec.get("holderIdentity"))):
        d = decide(record, None, me, 0.0, T0, LeaseTimings(), was_leading=True)
        assert d.verdict in ("renew", "lost", "acquire")
        d = decide(record, None, me, 0.0, T0, LeaseTimings())
        assert d.verdict in ("renew", "standby", "acquire")
        if d.verdict == "standby":
            assert d.retry_in <= LeaseTimings().retry_period


def test_a_replica_learns_a_running_executions_secrets_from_its_watch_event() -> None:
    """Before any pass of its own: a standby, or a new leader, redacts them at once."""
    from runbook_operator.controllers.main import Operator
    from runbook_operator.k8s.store import Store
    from runbook_operator.observability.secrets import SECRETS

    op = Operator.__new__(Operator)
    op.store = Store()
    op._secrets_learned = {}
    key = ("ns", "run-1")
    body = {"metadata": {"namespace": "ns", "name": "run-1", "uid": "u", "generation": 1},
            "spec": {"runbookRef": {"name": "rb"}, "params": {"token": "s3cr3t-canary-77"}},
            "status": {"phase": "Running", "runbookSpec": {"params": [
                {"name": "token", "secret": True}, {"name": "plain"}]}}}
    try:
        op.learn_secrets(key, body)
        assert "s3cr3t-canary-77" not in SECRETS.text("token is s3cr3t-canary-77")
        # Not started yet: the secret flags come from the Runbook it will freeze.
        pending = {"metadata": {"namespace": "ns", "name": "run-2", "uid": "v"},
                   "spec": {"runbookRef": {"name": "rb"}, "params": {"token": "other-secret-9"}}}
        op.store.put_runbook({"metadata": {"namespace": "ns", "name": "rb"},
                              "spec": {"params": [{"name": "token", "secret": True}]}})
        op.learn_secrets(("ns", "run-2"), pending)
        assert "other-secret-9" not in SECRETS.text("x other-secret-9 y")
    finally:
        SECRETS.forget(key)
        SECRETS.forget(("ns", "run-2"))


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_learning_secrets_from_any_body_never_raises(spec: Any, status: Any) -> None:
    from runbook_operator.controllers.main import Operator
    from runbook_operator.k8s.store import Store
    from runbook_operator.observability.secrets import SECRETS

    op = Operator.__new__(Operator)
    op.store = Store()
    op._secrets_learned = {}
    bodies: list[Any] = [
        {"metadata": {"namespace": "ns", "name": "x"}, "spec": spec, "status": status},
        {"metadata": spec, "spec": {"params": spec, "runbookRef": status},
         "status": {"phase": status, "runbookSpec": {"params": spec}}},
        {"metadata": {}, "spec": {"params": status},
         "status": {"phase": "Running", "runbookSpec": {"params": [spec, status]}}}]
    try:
        for body in bodies:
            op.learn_secrets(("ns", "x"), body)
    finally:
        SECRETS.forget(("ns", "x"))
