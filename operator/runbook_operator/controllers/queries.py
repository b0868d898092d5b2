"""The shell of query steps: make the checks that are due, before the planner runs.

Why it exists: a query step runs no pod; the operator itself sends its PromQL to
the source the cluster admin named. This mixin of the execution reconciler only
observes and acts: it asks ``engine.query_step.due_checks`` which checks are due,
refuses a source the namespace may not use before any request, splices the
parameters in as string literals (``engine.promql.render``), makes the request
(``notify.prometheus``), and hands each ``Check`` to the planner, which decides.
Every check is counted in ``runbook_query_checks_total{source,outcome}`` and timed,
gets a span, and its query text is logged (never a token: those are files the
client reads itself, and secret parameters cannot appear in ``expr``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from runbook_operator.api.execution import RunbookExecutionStatus
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.promql import InjectionError, render
from runbook_operator.engine.query import Check, NumberedCheck, check_timeout, judge_result
from runbook_operator.engine.query_sources import Source, refusal
from runbook_operator.engine.query_step import due_checks
from runbook_operator.notify import prometheus

if TYPE_CHECKING:
    from runbook_operator.observability.metrics import Metrics

log = logging.getLogger("runbook_operator.queries")
_tracer = trace.get_tracer("runbook_operator.queries")

Fetch = Callable[[Source, str, float, Callable[[], datetime]], Check]


class QueryChecks:
    """Makes the due checks of an execution's query steps (a mixin of the reconciler)."""

    query_sources: Mapping[str, Source] = {}
    """The sources the cluster admin named (``--query-source``); set by ``main``."""
    query_fetch: Fetch = staticmethod(prometheus.check)

    if TYPE_CHECKING:
        clock: Callable[[], datetime]
        metrics: Metrics

    def query_checks(self, namespace: str, runbook: str, spec: RunbookSpec,
                     params: Mapping[str, Any],
                     status: RunbookExecutionStatus) -> dict[str, NumberedCheck]:
        checks: dict[str, NumberedCheck] = {}
        for step, number in due_checks(spec.all_steps(), status.steps, self.clock()):
            assert step.query is not None
            query = step.query
            started = time.perf_counter()
            refused = refusal(self.query_sources, query.source, namespace)
            if refused is not None:
                made = Check("Refused", self.clock(), reason=refused[0], message=refused[1])
            else:
                try:
                    expr = render(query.expr, params)
                except (KeyError, InjectionError) as exc:
                    made = Check("Refused", self.clock(), reason="InvalidParameter",
                                 message=f"a parameter cannot enter the query: {exc}")
                else:
                    log.info("query check %s/%s step %s check %d on source %s: %s",
                             namespace, runbook, step.name, number, query.source, expr)
                    with _tracer.start_as_current_span("query.check") as span:
                        made = self.query_fetch(self.query_sources[query.source], expr,
                                                check_timeout(query).total_seconds(),
                                                self.clock)
                        span.set_attributes({
                            "runbook.namespace": namespace, "runbook.name": runbook,
                            "runbook.step": step.name, "query.source": query.source,
                            "query.check": number, "query.kind": made.kind,
                            "query.reason": made.reason or ""})
            # A name no admin defined is the author's free text: one series for them all.
            label = query.source if query.source in self.query_sources else "(unknown)"
            self.metrics.query_checked(label, _outcome(made, query.success_condition,
                                                              query.failure_condition, params),
                                       time.perf_counter() - started)
            checks[step.name] = NumberedCheck(number, made)
        return checks


def _outcome(check: Check, success: str, failure: str | None,
             params: Mapping[str, Any]) -> str:
    """The metric's outcome label: the kind, or for a result what the conditions say."""
    if check.kind != "Result" or check.result is None:
        return check.kind
    return judge_result(success, failure, check.result, params)
