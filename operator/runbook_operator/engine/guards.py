"""The guard half of a planning pass: circuit breakers and bulkheads.

Why it exists: the planner decides a whole pass; what a guarded step needs before
its Job (a bulkhead slot, the circuit's permission, ``onOpen`` when refused) and
what a finished guarded attempt changes (a call recorded, a trial permit given
back) is one concern with its own state, kept here. Like the planner it is pure:
it reads the observation's circuits and bulkhead lines and writes the plan's
circuit operations (``Plan.ops``), slots, calls and transitions, which the shell
commits (``engine/reservations.py``). ``Guards`` is a mixin of the planner's pass.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runbook_operator.api.circuitpolicy import CircuitPolicySpec
from runbook_operator.api.common import parse_duration
from runbook_operator.api.execution import StepPhase, StepStatus
from runbook_operator.api.runbook import Retry, Step
from runbook_operator.engine import circuit
from runbook_operator.engine.bulkhead import BulkheadRow, Ticket, rebuild
from runbook_operator.engine.cel import CelError, evaluate
from runbook_operator.engine.circuit import CallOutcome, CircuitState, Transition
from runbook_operator.engine.plans import _clip
from runbook_operator.engine.reservations import Admitted, Recorded, Released
from runbook_operator.engine.timeutil import fmt, parse

if TYPE_CHECKING:
    from runbook_operator.engine.plans import Observation, ObservedJob, Plan

class Guards:
    """Circuit and bulkhead decisions of one pass (a mixin of ``planner._Pass``)."""

    if TYPE_CHECKING:
        obs: Observation
        plan: Plan
        now: datetime
        bulkhead_rows: dict[str, list[BulkheadRow]]

        def st(self, name: str) -> StepStatus: ...

        def transition(self, step: str, phase: StepPhase, reason: str | None, message: str,
                       warning: bool = False) -> None: ...

        def record(self, event: str, step: str | None, message: str) -> None: ...

        def event(self, reason: str, message: str, warning: bool = False,
                  step: str | None = None, attempt: int | None = None) -> None: ...

        def wake(self, at: datetime) -> None: ...

        def variables(self) -> dict[str, Any]: ...

    def circuit_of(self, step: Step) -> tuple[str, str] | None:
        """(policy, key) of a guarded step; None after failing the step on a bad key."""
        assert step.circuit is not None
        key = "default"
        if step.circuit.key:
            try:
                key = str(evaluate(step.circuit.key, self.variables()))
            except CelError as exc:
                self.st(step.name).finished_at = fmt(self.now)
                self.transition(step.name, "Failed", "ExpressionError",
                                _clip(f"circuit.key: {exc}"), warning=True)
                return None
        return step.circuit.policy, key

    def admit(self, step: Step, st: StepStatus) -> bool:
        """Ask the step's circuit; on a rejection, act as ``onOpen`` says. True: run it."""
        assert step.circuit is not None
        ident = self.circuit_of(step)
        if ident is None:
            return False
        policy = self.obs.policies.get(ident[0])
        if policy is None:
            st.finished_at = fmt(self.now)
            why = self.obs.invalid_policies.get(ident[0])
            if why is not None:
                self.transition(step.name, "Failed", "CircuitPolicyInvalid",
                                _clip(f"CircuitPolicy {ident[0]!r} is not valid: {why}; fix "
                                      "the policy (its Ready condition says the same)"),
                                warning=True)
            else:
                self.transition(step.name, "Failed", "CircuitPolicyNotFound",
                                f"CircuitPolicy {ident[0]!r} does not exist", warning=True)
            return False
        if policy.bulkhead is not None and not self.bulkhead_slot(step, st, ident, policy):
            return False
        state = self.circuit_state(ident)
        state, decision = circuit.admit(state, policy, self.now, key=ident[1])
        self.set_circuit(ident, state, list(decision.transitions))
        if decision.allowed:
            self.plan.ops.append(Admitted(ident, decision.trial, self.now))
            st.circuit = f"{ident[0]}/{ident[1]}"
            st.circuit_trial = decision.trial or None
            st.circuit_admitted_at = fmt(self.now)
            return True
        reason = f"{ident[0]}: {decision.reason}"
        st.circuit = f"{ident[0]}/{ident[1]}"  # which circuit said no (not admitted)
        on_open = step.circuit.on_open
        if on_open != "Wait" or st.reason != "CircuitOpen":  # a waiting step counts once
            self.plan.calls.append((ident[0], ident[1], "rejected"))
        if on_open == "Wait":
            wake = circuit.next_wakeup(state, policy)
            self.wake(wake or self.now + timedelta(seconds=5))
            if st.reason != "CircuitOpen":
                st.reason, st.message = "CircuitOpen", _clip(f"waiting: {reason}")
                self.record("StepWaiting", step.name, st.message)
            return False
        st.finished_at = fmt(self.now)
        if on_open == "Fail":
            self.transition(step.name, "Failed", "CircuitOpen", reason, warning=True)
        elif on_open == "Skip":
            self.transition(step.name, "Skipped", "CircuitOpen", reason)
        else:
            self.transition(step.name, "Skipped", "CircuitOpen",
                            f"{reason}; fallback {step.circuit.fallback} runs instead")
        return False

    def bulkhead_slot(self, step: Step, st: StepStatus, ident: tuple[str, str],
                      policy: CircuitPolicySpec) -> bool:
        """A slot of the policy's bulkhead, or wait in line (and time out after maxWait)."""
        assert policy.bulkhead is not None
        name = ident[0]
        ticket = f"{self.obs.namespace}/{self.obs.name}/{step.name}"
        since = (parse(st.circuit_admitted_at) if st.reason == "BulkheadFull" else None) \
            or self.now
        rows = self.bulkhead_rows.setdefault(name, [])
        queue = rebuild(policy.bulkhead.max_concurrent,
                        [*rows, (ticket, "waiting", since, self.obs.severity)])
        if queue.is_running(Ticket(ticket, self.obs.severity)):
            row: BulkheadRow = (ticket, "running", since, self.obs.severity)
            rows.append(row)
            self.plan.slots.append((name, row))
            return True
        max_wait = parse_duration(policy.bulkhead.max_wait) if policy.bulkhead.max_wait \
            else None
        if max_wait is not None and self.now - since >= max_wait:
            st.finished_at = fmt(self.now)
            self.plan.calls.append((ident[0], ident[1], "rejected"))
            self.transition(step.name, "Failed", "BulkheadTimeout",
                            f"no slot of {name}'s bulkhead within {policy.bulkhead.max_wait}",
                            warning=True)
            return False
        if max_wait is not None:
            self.wake(since + max_wait)
        position = queue.position(ticket)
        message = (f"waiting for a slot of {name}'s bulkhead "
                   f"(max {policy.bulkhead.max_concurrent}; position {position})")
        if st.reason != "BulkheadFull":
            st.circuit_admitted_at = fmt(since)
            phase: StepPhase = "Retrying" if st.phase == "Retrying" else "Waiting"
            self.transition(step.name, phase, "BulkheadFull", message)
        return False

    def retry_of(self, step: Step) -> Retry | None:
        """The step's retry, else its CircuitPolicy's default for the steps it guards."""
        if step.retry is not None or step.circuit is None:
            return step.retry
        policy = self.obs.policies.get(step.circuit.policy)
        return policy.retry if policy is not None else None

    def release_permit(self, st: StepStatus) -> None:
        """A stopped attempt gives back its HalfOpen trial permit: it proved nothing."""
        if st.circuit_trial and st.circuit and "/" in st.circuit:
            policy, key = st.circuit.split("/", 1)
            state = circuit.release(self.circuit_state((policy, key)),
                                    parse(st.circuit_admitted_at))
            self.plan.circuits[(policy, key)] = state
            self.plan.ops.append(Released((policy, key), parse(st.circuit_admitted_at)))
            st.circuit_trial = None

    def circuit_state(self, ident: tuple[str, str]) -> CircuitState:
        return self.plan.circuits.get(ident) or self.obs.circuits.get(ident) or CircuitState()

    def set_circuit(self, ident: tuple[str, str], state: CircuitState,
                    transitions: list[Transition]) -> None:
        self.plan.circuits[ident] = state
        for t in transitions:
            self.plan.transitions.append((ident[0], ident[1], t))
            self.event("Circuit" + t.to, f"circuit {ident[0]}/{ident[1]}: {t.from_} -> "
                       f"{t.to}: {t.reason}", warning=t.to == "Open")

    def record_call(self, step: Step, st: StepStatus, job: ObservedJob, failed: bool) -> None:
        """A guarded attempt finished: one call for its circuit."""
        if step.circuit is None or not st.circuit or "/" not in st.circuit:
            return
        policy_name, key = st.circuit.split("/", 1)
        policy = self.obs.policies.get(policy_name)
        if policy is None:
            return
        ident = (policy_name, key)
        started = job.started_at or parse(st.circuit_admitted_at) or self.now
        ended = job.finished_at or self.now
        call = circuit.classify(policy, at=ended, failed=failed, exit_code=job.exit_code,
                                timed_out=job.timed_out,
                                duration=ended - started, trial=bool(st.circuit_trial),
                                admitted_at=parse(st.circuit_admitted_at))
        state, transitions = circuit.record(self.circuit_state(ident), policy, call, self.now)
        self.set_circuit(ident, state, transitions)
        self.plan.ops.append(Recorded(ident, call))
        # A slow failure is a failure here; the slow-call rate still counts it as slow.
        outcome: CallOutcome = "failure" if call.failure else "slow" if call.slow \
            else "success"
        self.plan.calls.append((ident[0], ident[1], outcome))

