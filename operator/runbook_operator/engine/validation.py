"""Validation of a Runbook spec: everything the CRD schema cannot check.

A pure function from a spec (or a raw dict) to a list of problems, each with a
machine-readable reason, the step it concerns and a message a user can act on.
The operator turns the first problem into the Ready condition; the kubectl plugin
prints one line per problem. It never raises on any input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.common import parse_duration
from runbook_operator.api.runbook import Param, RunbookSpec, Step
from runbook_operator.engine.alerts import compile_triggers
from runbook_operator.engine.cel import (
    ROOT_VARIABLES,
    CelError,
    compile_expression,
    referenced_steps,
)
from runbook_operator.engine.params import ParamError, check_value
from runbook_operator.engine.podsecurity import (
    SecurityPolicy,
    allowance_hint,
    check_step_security,
    malformed,
)
from runbook_operator.engine.query_validation import query_problems
from runbook_operator.engine.schedule import ScheduleError, compile_schedule

SECURITY_REASONS = frozenset({"PrivilegedStep", "ServiceAccountNotAllowed"})
"""Problems that depend on the operator's allowances, not on the spec alone."""


@dataclass(frozen=True)
class Problem:
    """One reason a runbook is not valid."""

    reason: str
    """CamelCase, stable: InvalidSpec, DuplicateName, UnknownDependency, DependencyCycle,
    InvalidExpression, InvalidDefault, UnknownFallback, InvalidStep, PrivilegedStep,
    ServiceAccountNotAllowed, InvalidTrigger, InvalidSchedule, InvalidQuery."""
    message: str
    step: str | None = None

    def __str__(self) -> str:
        where = f"step {self.step!r}: " if self.step else ""
        return f"{self.reason}: {where}{self.message}"


def validate_spec(raw: Mapping[str, Any] | RunbookSpec,
                  security: SecurityPolicy | None = None,
                  namespace: str | None = None) -> list[Problem]:
    """All problems of a runbook spec, or an empty list when it is valid.

    ``security``: the operator's allowances (default: none, the chart's runner
    account only); ``namespace``: where the Runbook lives (privileged steps may be
    allowed per namespace).
    """
    if isinstance(raw, RunbookSpec):
        spec = raw
    else:
        try:
            spec = RunbookSpec.model_validate(raw)
        except ValidationError as exc:
            return [_schema_problem(err) for err in exc.errors()]
        except Exception as exc:  # never raise on untrusted input
            return [Problem("InvalidSpec", f"{type(exc).__name__}: {exc}")]
    problems: list[Problem] = []
    problems += _check_names(spec)
    problems += _check_params(spec.params)
    dependency_problems = _check_dependencies(spec)
    problems += dependency_problems
    has_cycle = any(p.reason == "DependencyCycle" for p in dependency_problems)
    problems += _check_steps(spec, has_cycle)
    problems += _check_durations(spec)
    problems += _check_triggers(spec)
    problems += _check_schedule(spec)
    problems += security_problems(spec, security or SecurityPolicy(), namespace)
    problems += _secret_keys(spec)
    problems += [Problem(r, m, s) for r, m, s in query_problems(spec)]
    return problems


_PARAM_REFERENCE = re.compile(
    r"""(?<![.\w])params\s*(?:\.\s*(?P<dot>[A-Za-z_]\w*)|\[\s*["'](?P<sub>[^"']*)["']\s*\])""")


def _secret_keys(spec: RunbookSpec) -> list[Problem]:
    """A circuit or concurrency key is published (status, metrics, Events): never a secret."""
    secrets = {p.name for p in spec.params if p.secret}
    if not secrets:
        return []
    keys: list[tuple[str | None, str, str]] = [
        (s.name, "circuit.key", s.circuit.key) for s in spec.all_steps()
        if s.circuit is not None and s.circuit.key]
    if spec.concurrency is not None and spec.concurrency.key:
        keys.append((None, "concurrency.key", spec.concurrency.key))
    problems = []
    for step, field, source in keys:
        read = {m.group("dot") or m.group("sub") for m in _PARAM_REFERENCE.finditer(source)}
        for name in sorted(read & secrets):
            problems.append(Problem("InvalidExpression", f"{field} reads the secret parameter "
                                    f"{name!r}; a key is published in status, metrics and "
                                    "Events, so key on a parameter that is not secret", step))
    return problems


def _check_triggers(spec: RunbookSpec) -> list[Problem]:
    """Alert triggers: matchers that parse, CEL that compiles, parameters that exist."""
    if spec.triggers is None:
        return []
    _, problems = compile_triggers("", "", spec.triggers.alerts, (p.name for p in spec.params))
    return [Problem("InvalidTrigger", str(p)) for p in problems]


def _check_schedule(spec: RunbookSpec) -> list[Problem]:
    """A cron expression and time zone that work; parameters the runbook declares."""
    if spec.schedule is None:
        return []
    problems = []
    try:
        compile_schedule(spec.schedule)
    except ScheduleError as exc:
        problems.append(Problem("InvalidSchedule", str(exc)))
    declared = {p.name: p for p in spec.params}
    for name, value in spec.schedule.params.items():
        if name not in declared:
            problems.append(Problem("InvalidSchedule", f"schedule.params.{name}: the runbook "
                                    "declares no such parameter"))
            continue
        try:
            check_value(declared[name], value)
        except ParamError as exc:
            problems.append(Problem("InvalidSchedule", f"schedule.params.{name}: {exc}"))
    return problems


def security_problems(spec: RunbookSpec, security: SecurityPolicy,
                      namespace: str | None) -> list[Problem]:
    """Privileged step settings and a service account the operator was not allowed."""
    runs = [s for s in spec.all_steps() if s.type == "run"]
    violations, account = check_step_security(
        [(s.name, s.security_context, s.pod_metadata.annotations if s.pod_metadata else None)
         for s in runs], spec.service_account_name, namespace, security)
    # A wrong type is a mistake whatever the allowances (the Job would be refused).
    problems = [Problem("InvalidStep", f"{field}: {why}", s.name)
                for s in runs for field, why in malformed(s.security_context)]
    problems += [Problem("PrivilegedStep", f"{v.field}: {v.message}; {allowance_hint(namespace)}",
                         v.step) for v in violations]
    if account:
        problems.append(Problem("ServiceAccountNotAllowed", account))
    return problems


def _check_durations(spec: RunbookSpec) -> list[Problem]:
    """Durations the schema's pattern accepts but arithmetic cannot hold (e.g. 10**20h)."""
    fields: list[tuple[str | None, str, str | None]] = [(None, "timeout", spec.timeout)]
    for step in spec.all_steps():
        fields.append((step.name, "timeout", step.timeout))
        if step.retry:
            fields += [(step.name, "retry.backoff.initial", step.retry.backoff.initial),
                       (step.name, "retry.backoff.max", step.retry.backoff.max)]
        if step.approval:
            fields.append((step.name, "approval.timeout", step.approval.timeout))
        if step.wait:
            fields.append((step.name, "wait.duration", step.wait.duration))
        if step.query:
            fields.append((step.name, "query.interval", step.query.interval))
    problems = []
    for step_name, field, value in fields:
        if value is None:
            continue
        try:
            parse_duration(value)
        except ValueError as exc:
            problems.append(Problem("InvalidSpec", f"{field}: {exc}", step_name))
    return problems


def _schema_problem(err: Mapping[str, Any]) -> Problem:
    loc = [str(p) for p in err.get("loc", ())]
    step = None
    if len(loc) >= 2 and loc[0] in ("steps", "finally") and loc[1].isdigit():
        step = f"{loc[0]}[{loc[1]}]"
    return Problem("InvalidSpec", f"{'.'.join(loc) or 'spec'}: {err.get('msg', 'invalid')}", step)


def _check_names(spec: RunbookSpec) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for step in spec.all_steps():
        if step.name in seen:
            problems.append(Problem("DuplicateName", f"step name {step.name!r} is used twice "
                                    "(names are unique across steps and finally)", step.name))
        seen.add(step.name)
    env_names: dict[str, str] = {}
    for param in spec.params:
        env = param.name.upper()
        if env in env_names:
            problems.append(Problem("DuplicateName", f"parameters {env_names[env]!r} and "
                                    f"{param.name!r} both become PARAM_{env}"))
        env_names[env] = param.name
    return problems


def _check_params(params: list[Param]) -> list[Problem]:
    problems = []
    for param in params:
        if param.pattern is not None:
            try:
                re.compile(param.pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                problems.append(Problem("InvalidDefault", f"parameter {param.name!r}: pattern "
                                        f"{param.pattern!r} is not a regular expression: {exc}"))
                continue
        for value in param.enum or []:
            try:
                check_value(param, value, check_enum=False)
            except ParamError as exc:
                problems.append(Problem("InvalidDefault", f"enum value of {exc}"))
        if param.default is not None:
            try:
                check_value(param, param.default)
            except ParamError as exc:
                problems.append(Problem("InvalidDefault", f"default of {exc}"))
    return problems


def _check_dependencies(spec: RunbookSpec) -> list[Problem]:
    problems = []
    dag_names = {s.name for s in spec.steps}
    finally_names = {s.name for s in spec.finally_}
    for step in spec.steps:
        for dep in step.depends_on:
            if dep == step.name:
                problems.append(Problem("DependencyCycle", f"{dep} -> {dep}", step.name))
            elif dep not in dag_names:
                hint = " (a finally step)" if dep in finally_names else ""
                problems.append(Problem("UnknownDependency",
                                        f"dependsOn names {dep!r}, which is not a step{hint}",
                                        step.name))
    for step in spec.finally_:
        for dep in step.depends_on:
            if dep not in finally_names or dep == step.name:
                problems.append(Problem("UnknownDependency", f"finally step depends on {dep!r}; "
                                        "finally steps may depend only on other finally steps",
                                        step.name))
    cycle = find_cycle({s.name: [d for d in s.depends_on if d in dag_names and d != s.name]
                        for s in spec.steps})
    if cycle:
        problems.append(Problem("DependencyCycle", " -> ".join(cycle), cycle[0]))
    cycle = find_cycle({s.name: [d for d in s.depends_on if d in finally_names and d != s.name]
                        for s in spec.finally_})
    if cycle:
        problems.append(Problem("DependencyCycle", " -> ".join(cycle), cycle[0]))
    return problems


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path that starts and ends at the same node, or None.

    Iterative depth-first search (a 500-step chain must not hit Python's recursion
    limit); the order of ``graph`` makes the answer deterministic.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, index = stack[-1]
            edges = graph.get(node, [])
            if index < len(edges):
                stack[-1] = (node, index + 1)
                nxt = edges[index]
                state = colour.get(nxt, black)
                if state == grey:
                    return [*path[path.index(nxt):], nxt]
                if state == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def ancestors(spec: RunbookSpec) -> dict[str, set[str]]:
    """For every DAG step, the steps that finish before it (transitively)."""
    deps = {s.name: set(s.depends_on) for s in spec.steps}
    result: dict[str, set[str]] = {}

    def visit(name: str, trail: frozenset[str]) -> set[str]:
        if name in result:
            return result[name]
        found: set[str] = set()
        for dep in deps.get(name, ()):
            if dep in deps and dep not in trail:
                found |= {dep} | visit(dep, trail | {dep})
        result[name] = found
        return found

    for name in deps:
        visit(name, frozenset({name}))
    return result


def _check_steps(spec: RunbookSpec, has_cycle: bool) -> list[Problem]:
    problems = []
    names = {s.name for s in spec.all_steps()}
    dag_names = {s.name for s in spec.steps}
    upstream = {} if has_cycle else ancestors(spec)
    finally_ids = {id(s) for s in spec.finally_}
    for step in spec.all_steps():
        in_finally = id(step) in finally_ids
        problems += _check_kind(step)
        if step.when is not None:
            problem = _check_expression(step.name, "when", step.when)
            if problem:
                problems.append(problem)
            else:
                # A DAG step can only read steps that are guaranteed to have finished
                # (unknowable with a cycle, which is reported on its own).
                visible = dag_names if in_finally or not upstream else \
                    upstream.get(step.name, set())
                for ref in sorted(referenced_steps(step.when)):
                    if ref not in visible:
                        what = "is not a step" if ref not in names else \
                            "is not among its dependencies (add it to dependsOn)"
                        problems.append(Problem("InvalidExpression",
                                                f"when reads steps.{ref}, which {what}",
                                                step.name))
        if step.circuit is not None:
            if step.circuit.key is not None:
                problem = _check_expression(step.name, "circuit.key", step.circuit.key)
                if problem:
                    problems.append(problem)
            fallback = step.circuit.fallback
            if step.circuit.on_open == "Fallback" and not fallback:
                problems.append(Problem("UnknownFallback",
                                        "circuit.onOpen is Fallback but no fallback step is named",
                                        step.name))
            elif fallback is not None and (fallback not in names or fallback == step.name):
                problems.append(Problem("UnknownFallback",
                                        f"circuit.fallback names {fallback!r}, which is not "
                                        "another step of this runbook", step.name))
    if spec.concurrency is not None and spec.concurrency.key is not None:
        problem = _check_expression(None, "concurrency.key", spec.concurrency.key)
        if problem:
            problems.append(problem)
    return problems


def _check_kind(step: Step) -> list[Problem]:
    if step.type == "run" and not step.image:
        return [Problem("InvalidStep", "a run step needs an image", step.name)]
    if step.type == "wait" and step.wait is None:
        return [Problem("InvalidStep", "a wait step needs wait.duration", step.name)]
    if step.type == "query" and step.query is None:
        return [Problem("InvalidStep", "a query step needs query (source, expr, "
                        "successCondition)", step.name)]
    if step.type != "run" and (step.image or step.command or step.args):
        return [Problem("InvalidStep", f"a {step.type} step runs no container; "
                        "remove image, command and args", step.name)]
    return []


def _check_expression(step: str | None, field: str, source: str) -> Problem | None:
    try:
        program = compile_expression(source)
    except CelError as exc:
        return Problem("InvalidExpression", f"{field} {source!r} does not compile: {exc}", step)
    unknown = [v for v in program.variables() if v not in ROOT_VARIABLES]
    # Comprehension variables (x in `list.all(x, ...)`) are listed too: only flag
    # names that are not bound by a macro somewhere in the source.
    unbound = [v for v in unknown if not re.search(rf"\(\s*{re.escape(v)}\s*,", source)]
    if unbound:
        return Problem("InvalidExpression",
                       f"{field} {source!r} uses unknown variable(s) {', '.join(unbound)}; "
                       "expressions may read params, steps and execution", step)
    return None
