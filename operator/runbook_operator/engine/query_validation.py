"""Validation of query steps at apply: PromQL that parses, CEL that compiles.

Kept apart from ``engine.validation`` (which calls it) so that module stays a list
of checks. Every problem names the step; a PromQL error also names the line and
column in ``expr`` as written (``$name`` placeholders are replaced by literals of
the same length before parsing, so positions match the text the author wrote).
"""

from __future__ import annotations

import re
from datetime import timedelta

from runbook_operator.api.common import parse_duration
from runbook_operator.api.runbook import RunbookSpec, Step
from runbook_operator.engine.cel import CelError, compile_expression
from runbook_operator.engine.promql import code_spans, parse_problem, placeholders

CONDITION_VARIABLES = frozenset({"result", "params"})
MIN_INTERVAL = timedelta(seconds=1)


def _same_length_literals(expr: str) -> str:
    """``expr`` with each ``$name`` in code replaced by ``"xx..."`` of the same length."""
    out = []
    for start, end, code in code_spans(expr):
        piece = expr[start:end]
        if code:
            piece = re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)",
                           lambda m: '"' + "x" * (len(m.group(0)) - 2) + '"', piece)
        out.append(piece)
    return "".join(out)


def _condition(step: str, field: str, source: str) -> tuple[str, str, str] | None:
    try:
        program = compile_expression(source)
    except CelError as exc:
        return ("InvalidExpression", f"query.{field} {source!r} does not compile: {exc}", step)
    unknown = [v for v in program.variables() if v not in CONDITION_VARIABLES
               and not re.search(rf"\(\s*{re.escape(v)}\s*,", source)]
    if unknown:
        return ("InvalidExpression", f"query.{field} {source!r} uses unknown variable(s) "
                f"{', '.join(unknown)}; a condition may read result and params", step)
    return None


def step_problems(step: Step, declared: dict[str, bool]) -> list[tuple[str, str, str]]:
    """(reason, message, step) for one query step; ``declared``: param -> secret."""
    query = step.query
    if step.type != "query" or query is None:
        if query is not None:
            return [("InvalidStep", f"a {step.type} step has a query; set type: query",
                     step.name)]
        return []
    problems: list[tuple[str, str, str]] = []
    for name in dict.fromkeys(placeholders(query.expr)):
        if name not in declared:
            problems.append(("InvalidQuery", f"query.expr uses ${name}, which is not a "
                             "parameter of this runbook", step.name))
        elif declared[name]:
            problems.append(("InvalidQuery", f"query.expr uses the secret parameter ${name}; "
                             "the query text is logged and sent to Prometheus", step.name))
    problem = parse_problem(_same_length_literals(query.expr))
    if problem is not None:
        problems.append(("InvalidQuery", f"query.expr does not parse: {problem}", step.name))
    for field, source in (("successCondition", query.success_condition),
                          ("failureCondition", query.failure_condition)):
        if source is not None:
            found = _condition(step.name, field, source)
            if found:
                problems.append(found)
    try:
        if parse_duration(query.interval) < MIN_INTERVAL:
            problems.append(("InvalidQuery", f"query.interval {query.interval} is below "
                             "1s", step.name))
    except ValueError:
        pass  # reported by engine.validation's duration check
    return problems


def query_problems(spec: RunbookSpec) -> list[tuple[str, str, str]]:
    """Problems of every query step of ``spec``."""
    declared = {p.name: p.secret for p in spec.params}
    found: list[tuple[str, str, str]] = []
    for step in spec.all_steps():
        found += step_problems(step, declared)
    return found
