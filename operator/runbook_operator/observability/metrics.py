"""Prometheus metrics of the operator: what runs, how fast, which circuits are open.

One :class:`Metrics` object per process owns its own ``CollectorRegistry`` (not the
global one), so tests build fresh ones and nothing a library registers globally
leaks into ``/metrics``. Counters and histograms are fed at the moment something
happens (an execution or step finishes, a circuit changes state); the gauges that
describe *current* state (active and queued executions, circuit states) are set
from the cluster's objects by :meth:`Metrics.rebuild_from`, so they are right after
a restart and cannot drift the way increments and decrements do.

Names follow Prometheus conventions: base units (seconds, ratios), ``_total`` on
counters. The dashboard and alerts in ``deploy/monitoring/`` use exactly these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from runbook_operator.engine import bulkhead

__all__ = ["CIRCUIT_STATES", "Buckets", "Metrics", "bulkhead_in_use", "metrics_handler"]

CIRCUIT_STATES = ("Closed", "Open", "HalfOpen")
"""The states of a circuit; ``runbook_circuit_state`` has one series per state."""

ACTIVE_PHASES = frozenset({"Pending", "Running", "WaitingForApproval"})
"""Execution phases counted in ``runbook_executions_active``."""

QUEUED_PHASES = frozenset({"Queued"})
"""Execution phases counted in ``runbook_executions_queued``."""

ALERT_OUTCOMES = frozenset({"created", "duplicate", "unmatched", "cooldown", "rejected",
                            "invalid", "unauthorized", "cancelled", "resolved"})
"""Values of the ``outcome`` label of ``runbook_alerts_received_total``: one count per
alert and runbook decided (``unmatched``: per alert), or per request refused as a
whole (``unauthorized``; ``rejected`` also counts alerts the API server refused)."""

CIRCUIT_OUTCOMES = frozenset({"success", "failure", "slow", "rejected"})
"""Values of the ``outcome`` label of ``runbook_circuit_calls_total``."""


@dataclass(frozen=True)
class Buckets:
    """Histogram bucket bounds, in seconds."""

    execution: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
    """Whole executions: seconds to hours."""
    step: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
    """One step, from its first Job to its end (all attempts)."""
    transition: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    """From a step becoming runnable to its Job being created: the operator's own lag."""
    reconcile: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    """One reconcile pass of one object."""
    alert_request: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1, 2.5, 5)
    """One Alertmanager webhook request, from its arrival to the response."""


class Metrics:
    """The operator's metrics, in a registry of their own."""

    def __init__(self, buckets: Buckets | None = None) -> None:
        b = buckets or Buckets()
        # ``*_created`` series double the output and, for ``runbook_executions_total``,
        # would read as a metric of created executions. The switch is process-wide;
        # this process exposes no other registry.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.executions_total = Counter(
            "runbook_executions_total", "Executions that finished, by final phase.",
            ["namespace", "runbook", "phase"], registry=r)
        self.executions_active = Gauge(
            "runbook_executions_active", "Executions started and not finished.",
            ["namespace", "runbook"], registry=r)
        self.execution_duration = Histogram(
            "runbook_execution_duration_seconds", "Duration of finished executions.",
            ["namespace", "runbook", "phase"], buckets=b.execution, registry=r)
        self.executions_queued = Gauge(
            "runbook_executions_queued", "Executions waiting for a concurrency slot.",
            ["namespace", "runbook"], registry=r)
        self.takeover_seconds = Gauge(
            "runbook_operator_takeover_seconds",
            "Time the last takeover of leadership took to rebuild state from the API "
            "(from holding the Lease to ready to write).", registry=r)
        self.steps_total = Counter(
            "runbook_steps_total", "Steps that finished, by final phase.",
            ["namespace", "runbook", "step", "phase"], registry=r)
        self.step_duration = Histogram(
            "runbook_step_duration_seconds", "Duration of finished steps.",
            ["namespace", "runbook"], buckets=b.step, registry=r)
        self.step_retries = Counter(
            "runbook_step_retries_total", "Step attempts after the first.",
            ["namespace", "runbook", "step"], registry=r)
        self.step_transition_latency = Histogram(
            "runbook_step_transition_latency_seconds",
            "From a step becoming runnable to its Job being created.",
            buckets=b.transition, registry=r)
        self.circuit_state = Gauge(
            "runbook_circuit_state", "1 for the circuit's current state, 0 for the others.",
            ["namespace", "policy", "key", "state"], registry=r)
        self.circuit_calls = Counter(
            "runbook_circuit_calls_total", "Calls through a circuit, by outcome.",
            ["namespace", "policy", "key", "outcome"], registry=r)
        self.circuit_transitions = Counter(
            "runbook_circuit_transitions_total", "Circuit state changes.",
            ["namespace", "policy", "key", "from", "to"], registry=r)
        self.circuit_failure_rate = Gauge(
            "runbook_circuit_failure_rate", "Failure rate of the circuit's window (0..1).",
            ["namespace", "policy", "key"], registry=r)
        self.bulkhead_available = Gauge(
            "runbook_bulkhead_available", "Free bulkhead slots of a policy.",
            ["namespace", "policy"], registry=r)
        self.reconcile_duration = Histogram(
            "runbook_operator_reconcile_duration_seconds", "Duration of one reconcile pass.",
            ["kind"], buckets=b.reconcile, registry=r)
        self.api_errors = Counter(
            "runbook_operator_api_errors_total", "Kubernetes API errors, by HTTP status.",
            ["code"], registry=r)
        self.watch_restarts = Counter(
            "runbook_operator_watch_restarts_total", "Watch streams restarted.",
            ["resource"], registry=r)
        self.alerts_received = Counter(
            "runbook_alerts_received_total",
            "Alerts received from Alertmanager, by what the receiver decided.",
            ["outcome"], registry=r)
        self.alert_request_duration = Histogram(
            "runbook_alert_request_duration_seconds",
            "Time to handle one Alertmanager webhook request, by HTTP status code.",
            ["code"], buckets=b.alert_request, registry=r)
        self.schedule_missed = Counter(
            "runbook_schedule_missed_total",
            "Schedule slots not started: the operator was down past startingDeadline.",
            ["namespace", "runbook"], registry=r)
        self.schedule_runs = Counter(
            "runbook_schedule_runs_total",
            "Schedule slots acted on, by outcome (created; duplicate: another replica or "
            "an earlier attempt created it; failed: the API server refused it).",
            ["namespace", "runbook", "outcome"], registry=r)
        self.notifications = Counter(
            "runbook_notifications_total",
            "Notifications finished, by channel, execution event and outcome "
            "(delivered, failed).", ["channel", "event", "outcome"], registry=r)
        self.query_checks = Counter(
            "runbook_query_checks_total", "Checks of query steps, by source and outcome "
            "(Success, Failure, Inconclusive, Timeout, Unavailable, BadResponse, Refused).",
            ["source", "outcome"], registry=r)
        self.query_check_duration = Histogram(
            "runbook_query_check_duration_seconds",
            "Time of one query step check, the request to Prometheus included.",
            ["source"], buckets=b.alert_request, registry=r)
        for outcome in sorted(ALERT_OUTCOMES):  # every series exists from the start
            self.alerts_received.labels(outcome)
        self._execution_series: set[tuple[str, str]] = set()
        self._circuit_series: set[tuple[str, str, str]] = set()

    def takeover(self, seconds: float) -> None:
        """This replica took the lead and rebuilt its state in ``seconds``."""
        self.takeover_seconds.set(seconds)

    # -- executions and steps ----------------------------------------------------------

    def execution_finished(self, namespace: str, runbook: str, phase: str,
                           duration_s: float | None) -> None:
        """An execution reached a final phase (Succeeded, Failed, Cancelled). Once each."""
        self.executions_total.labels(namespace, runbook, phase).inc()
        if duration_s is not None and duration_s >= 0:
            self.execution_duration.labels(namespace, runbook, phase).observe(duration_s)

    def set_executions(self, namespace: str, runbook: str, active: int, queued: int) -> None:
        """The current number of active and queued executions of one runbook."""
        self.executions_active.labels(namespace, runbook).set(active)
        self.executions_queued.labels(namespace, runbook).set(queued)
        self._execution_series.add((namespace, runbook))

    def step_finished(self, namespace: str, runbook: str, step: str, phase: str,
                      duration_s: float | None) -> None:
        """A step reached a final phase (Succeeded, Failed, Skipped). Once each."""
        self.steps_total.labels(namespace, runbook, step, phase).inc()
        if duration_s is not None and duration_s >= 0:
            self.step_duration.labels(namespace, runbook).observe(duration_s)

    def step_retried(self, namespace: str, runbook: str, step: str) -> None:
        """A step's attempt after the first was started."""
        self.step_retries.labels(namespace, runbook, step).inc()

    def step_transition(self, latency_s: float) -> None:
        """A step became runnable ``latency_s`` seconds before its Job was created."""
        if latency_s >= 0:
            self.step_transition_latency.observe(latency_s)

    # -- circuits and bulkheads ----------------------------------------------------------

    def set_circuit_state(self, namespace: str, policy: str, key: str, state: str) -> None:
        """The circuit's current state: its series is 1, the other two are 0."""
        for s in CIRCUIT_STATES:
            self.circuit_state.labels(namespace, policy, key, s).set(1 if s == state else 0)
        self._circuit_series.add((namespace, policy, key))

    def circuit_transition(self, namespace: str, policy: str, key: str,
                           from_state: str, to_state: str) -> None:
        """A circuit changed state; also sets the state gauge."""
        self.circuit_transitions.labels(namespace, policy, key, from_state, to_state).inc()
        self.set_circuit_state(namespace, policy, key, to_state)

    def circuit_call(self, namespace: str, policy: str, key: str, outcome: str) -> None:
        """One call through a circuit: ``success``, ``failure``, ``slow`` or ``rejected``."""
        if outcome not in CIRCUIT_OUTCOMES:
            raise ValueError(f"unknown circuit call outcome {outcome!r}")
        self.circuit_calls.labels(namespace, policy, key, outcome).inc()

    def set_circuit_failure_rate(self, namespace: str, policy: str, key: str,
                                 ratio: float) -> None:
        """The failure rate of the circuit's sliding window, as a ratio in 0..1."""
        self.circuit_failure_rate.labels(namespace, policy, key).set(ratio)
        self._circuit_series.add((namespace, policy, key))

    def set_bulkhead_available(self, namespace: str, policy: str, available: int) -> None:
        """Free bulkhead slots of a policy."""
        self.bulkhead_available.labels(namespace, policy).set(available)

    # -- operator health -------------------------------------------------------------------

    def reconcile_finished(self, kind: str, duration_s: float) -> None:
        """One reconcile pass of an object of ``kind`` took ``duration_s``."""
        self.reconcile_duration.labels(kind).observe(duration_s)

    @contextmanager
    def time_reconcile(self, kind: str) -> Iterator[None]:
        """Time the ``with`` block as one reconcile pass (also when it raises)."""
        start = perf_counter()
        try:
            yield
        finally:
            self.reconcile_finished(kind, perf_counter() - start)

    def api_error(self, code: int | str) -> None:
        """The Kubernetes API answered with an error status (or none: ``code="none"``)."""
        self.api_errors.labels(str(code)).inc()

    def alert_decided(self, outcome: str, count: int = 1) -> None:
        """``count`` alerts were decided ``outcome`` (one of :data:`ALERT_OUTCOMES`)."""
        self.alerts_received.labels(outcome).inc(count)

    def schedule_missed_slots(self, namespace: str, runbook: str, count: int) -> None:
        self.schedule_missed.labels(namespace, runbook).inc(count)

    def schedule_run(self, namespace: str, runbook: str, outcome: str) -> None:
        self.schedule_runs.labels(namespace, runbook, outcome).inc()

    def notification(self, channel: str, event: str, outcome: str) -> None:
        self.notifications.labels(channel, event, outcome).inc()

    def alert_request(self, code: int, duration_s: float) -> None:
        """One webhook request was answered with ``code`` after ``duration_s``."""
        self.alert_request_duration.labels(str(code)).observe(duration_s)

    def query_checked(self, source: str, outcome: str, duration_s: float) -> None:
        self.query_checks.labels(source, outcome).inc()
        self.query_check_duration.labels(source).observe(duration_s)

    def watch_restarted(self, resource: str) -> None:
        """A watch on ``resource`` (e.g. ``runbookexecutions``) was restarted."""
        self.watch_restarts.labels(resource).inc()

    # -- state from the cluster ------------------------------------------------------------

    def rebuild_from(self, executions: Iterable[Mapping[str, Any]],
                     policies: Iterable[Mapping[str, Any]]) -> None:
        """Set the state gauges from RunbookExecution and CircuitPolicy bodies.

        Active/queued executions are counted per (namespace, runbook) from
        ``status.phase`` and ``spec.runbookRef.name``; circuits come from a policy's
        ``status.circuits[] {key, state, failureRate}`` (``failureRate`` in percent,
        as the policy's threshold; exported as a ratio); a policy's free bulkhead
        slots are its ``spec.bulkhead.maxConcurrent`` less :func:`bulkhead_in_use`.
        Series seen before but absent now are set to 0, so an emptied queue reads 0
        rather than its last value.
        Meant for startup and for a periodic refresh from the informer cache.
        """
        executions_seen = list(executions)
        counts: dict[tuple[str, str], list[int]] = {}
        for body in executions_seen:
            meta, spec, status = _part(body, "metadata"), _part(body, "spec"), \
                _part(body, "status")
            phase = status.get("phase")
            runbook = _part(spec, "runbookRef").get("name")
            if not isinstance(runbook, str) or not isinstance(phase, str):
                continue
            slot = counts.setdefault((str(meta.get("namespace") or ""), runbook), [0, 0])
            if phase in ACTIVE_PHASES:
                slot[0] += 1
            elif phase in QUEUED_PHASES:
                slot[1] += 1
        for series in self._execution_series - counts.keys():
            counts[series] = [0, 0]
        for (namespace, runbook), (active, queued) in counts.items():
            self.set_executions(namespace, runbook, active, queued)

        seen: set[tuple[str, str, str]] = set()
        for body in policies:
            meta = _part(body, "metadata")
            namespace, policy = str(meta.get("namespace") or ""), str(meta.get("name") or "")
            limit = _part(_part(body, "spec"), "bulkhead").get("maxConcurrent")
            if isinstance(limit, int):
                self.set_bulkhead_available(
                    namespace, policy, limit - bulkhead_in_use(executions_seen, namespace, policy))
            circuits = _part(body, "status").get("circuits")
            for circuit in circuits if isinstance(circuits, list) else []:
                if not isinstance(circuit, Mapping) or not isinstance(circuit.get("key"), str):
                    continue
                key = circuit["key"]
                state = circuit.get("state") if circuit.get("state") in CIRCUIT_STATES \
                    else "Closed"
                self.set_circuit_state(namespace, policy, key, str(state))
                rate = circuit.get("failureRate")
                ratio = float(rate) / 100 if isinstance(rate, int | float) else 0.0
                self.set_circuit_failure_rate(namespace, policy, key, ratio)
                seen.add((namespace, policy, key))
        for namespace, policy, key in self._circuit_series - seen:
            for s in CIRCUIT_STATES:
                self.circuit_state.labels(namespace, policy, key, s).set(0)
            self.circuit_failure_rate.labels(namespace, policy, key).set(0)

    # -- exposition --------------------------------------------------------------------------

    @property
    def content_type(self) -> str:
        """The Content-Type of :meth:`render`'s output."""
        return str(CONTENT_TYPE_LATEST)

    def render(self) -> bytes:
        """All series in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def bulkhead_in_use(executions: Iterable[Mapping[str, Any]], namespace: str,
                    policy: str) -> int:
    """Bulkhead slots of ``policy`` held now, by the planner's own rule
    (:func:`runbook_operator.engine.bulkhead.in_use`)."""
    return bulkhead.in_use(executions, namespace, policy)


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler serving ``metrics`` (route it at ``GET /metrics``)."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": metrics.content_type})

    return handle


def _part(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name) if isinstance(body, Mapping) else None
    return value if isinstance(value, Mapping) else {}
