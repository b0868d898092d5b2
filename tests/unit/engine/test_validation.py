"""engine.validation: what makes a Runbook spec invalid, and that the validator never raises.

Cases:
- every fixture under tests/fixtures/invalid gives exactly one problem, with the
  reason, step and message its header comment names (cycle of three, unknown
  dependsOn, duplicate name across steps and finally, `when` that does not compile,
  default not in enum, default of the wrong type, unknown fallback, `when` reading
  a step that is not a dependency);
- the cycle is reported as a path: `a -> b -> c -> a`, on the step it starts at;
- every example runbook is valid, as a dict and as a parsed RunbookSpec;
- smaller rules: self-dependency, cycle among finally steps, finally depending on a
  DAG step, `steps["dashed-name"]` of a dependency, finally reading any DAG step,
  Fallback without a fallback step, a run step without an image, schema errors
  name the step's index, a cycle does not also flag every `when`, a pattern with a
  huge repetition count, a bad circuit key or concurrency key;
- find_cycle on a 2000-step chain and validate_spec on a 500-step chain declared
  in reverse order (no recursion limit);
- hypothesis: validate_spec never raises on junk (any JSON-like value as the spec)
  nor on spec-shaped junk (steps with random names, dependsOn, when, circuit);
- hypothesis, random DAGs of 1..30 steps with random dependsOn edges (back edges
  and self edges included): DependencyCycle is reported exactly when
  graphlib.TopologicalSorter finds a cycle, the reported path is a real cycle, and
  a `when` is flagged exactly when it reads a step that is not a transitive
  dependency.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.validation import Problem, find_cycle, validate_spec

from ..support import EXAMPLES, INVALID, expectations, load

INVALID_FILES = sorted(INVALID.glob("*.yaml"))
RUNBOOK_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if load(p)["kind"] == "Runbook")


def run(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.37", "command": ["true"], **fields}


def reasons(problems: list[Problem]) -> list[str]:
    return [p.reason for p in problems]


# --- fixtures and examples ---------------------------------------------------------------


def test_there_is_one_fixture_per_invalid_case() -> None:
    assert {expectations(p)["reason"] for p in INVALID_FILES} == {
        "DependencyCycle", "UnknownDependency", "DuplicateName", "InvalidExpression",
        "InvalidDefault", "UnknownFallback",
    }
    assert len(INVALID_FILES) == 8


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda p: p.stem)
def test_invalid_fixture_gives_the_expected_problem(path: Path) -> None:
    expected = expectations(path)
    problems = validate_spec(load(path)["spec"])
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.reason == expected["reason"]
    assert problem.step == (None if expected["step"] == "none" else expected["step"])
    assert expected["message"] in problem.message


@pytest.mark.parametrize("path", RUNBOOK_EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid(path: Path) -> None:
    spec = load(path)["spec"]
    assert validate_spec(spec) == []
    assert validate_spec(RunbookSpec.model_validate(spec)) == []


def test_all_seven_runbooks_of_the_seed_have_an_example() -> None:
    assert {p.stem for p in RUNBOOK_EXAMPLES} == {
        "system-health-check", "incident-diagnostics", "ai-service-recovery",
        "database-performance", "high-memory-usage", "smoke-test", "security-incident",
    }


# --- individual rules --------------------------------------------------------------------


def test_cycle_is_reported_as_a_path_on_its_first_step() -> None:
    spec = {"steps": [run("a", dependsOn=["b"]), run("b", dependsOn=["c"]),
                      run("c", dependsOn=["a"])]}
    assert validate_spec(spec) == [Problem("DependencyCycle", "a -> b -> c -> a", "a")]


def test_self_dependency_is_a_cycle() -> None:
    assert validate_spec({"steps": [run("a", dependsOn=["a"])]}) == [
        Problem("DependencyCycle", "a -> a", "a")]


def test_cycle_among_finally_steps() -> None:
    spec = {"steps": [run("main")],
            "finally": [run("x", dependsOn=["y"]), run("y", dependsOn=["x"])]}
    assert validate_spec(spec) == [Problem("DependencyCycle", "x -> y -> x", "x")]


def test_finally_step_may_not_depend_on_a_dag_step() -> None:
    spec = {"steps": [run("main")], "finally": [run("report", dependsOn=["main"])]}
    (problem,) = validate_spec(spec)
    assert (problem.reason, problem.step) == ("UnknownDependency", "report")


def test_dag_step_depending_on_a_finally_step_gets_a_hint() -> None:
    spec = {"steps": [run("main", dependsOn=["report"])], "finally": [run("report")]}
    (problem,) = validate_spec(spec)
    assert (problem.reason, problem.step) == ("UnknownDependency", "main")
    assert "finally" in problem.message


def test_when_reads_a_dashed_dependency_with_brackets() -> None:
    spec = {"steps": [run("clear-cache"),
                      run("verify", dependsOn=["clear-cache"],
                          when="steps['clear-cache'].phase == 'Succeeded'"),
                      run("report", dependsOn=["verify"],
                          when='steps["clear-cache"].phase == "Succeeded"')]}
    assert validate_spec(spec) == []


def test_when_may_read_transitive_dependencies() -> None:
    spec = {"steps": [run("a"), run("b", dependsOn=["a"]),
                      run("c", dependsOn=["b"], when="steps.a.phase == 'Succeeded'")]}
    assert validate_spec(spec) == []


def test_when_reading_an_unknown_step() -> None:
    spec = {"steps": [run("a"), run("b", dependsOn=["a"], when="steps.nope.phase == 'Failed'")]}
    (problem,) = validate_spec(spec)
    assert (problem.reason, problem.step) == ("InvalidExpression", "b")
    assert "is not a step" in problem.message


def test_finally_step_may_read_any_dag_step() -> None:
    spec = {"steps": [run("a"), run("b")],
            "finally": [run("report",
                            when="steps.a.phase == 'Failed' || steps.b.phase == 'Failed'")]}
    assert validate_spec(spec) == []


def test_when_with_unknown_variable() -> None:
    spec = {"steps": [run("a", when="alert.severity == 'critical'")]}
    (problem,) = validate_spec(spec)
    assert (problem.reason, problem.step) == ("InvalidExpression", "a")
    assert "alert" in problem.message


def test_macro_variables_are_not_unknown() -> None:
    spec = {"steps": [run("a"), run("b", dependsOn=["a"],
                                    when="[steps.a].exists(s, s.phase == 'Failed')")]}
    assert validate_spec(spec) == []


def test_a_cycle_does_not_also_flag_every_when() -> None:
    spec = {"steps": [run("a", dependsOn=["b"]),
                      run("b", dependsOn=["a"], when="steps.a.phase == 'Failed'")]}
    assert reasons(validate_spec(spec)) == ["DependencyCycle"]


def test_fallback_mode_without_a_fallback_step() -> None:
    spec = {"steps": [run("probe", circuit={"policy": "ai-providers", "onOpen": "Fallback"})]}
    (problem,) = validate_spec(spec)
    assert (problem.reason, problem.step) == ("UnknownFallback", "probe")


def test_fallback_to_itself() -> None:
    spec = {"steps": [run("probe", circuit={"policy": "ai-providers", "onOpen": "Fallback",
                                            "fallback": "probe"})]}
    assert reasons(validate_spec(spec)) == ["UnknownFallback"]


def test_circuit_key_and_concurrency_key_must_compile() -> None:
    spec = {"concurrency": {"policy": "Forbid", "key": "params.provider +"},
            "steps": [run("probe", circuit={"policy": "ai-providers", "key": "params."})]}
    problems = validate_spec(spec)
    assert reasons(problems) == ["InvalidExpression", "InvalidExpression"]
    assert {p.step for p in problems} == {"probe", None}


@pytest.mark.parametrize(("step", "fragment"), [
    ({"name": "a"}, "needs an image"),
    ({"name": "a", "type": "wait"}, "wait.duration"),
    ({"name": "a", "type": "approval", "image": "busybox:1.37"}, "runs no container"),
])
def test_step_kind_rules(step: dict[str, Any], fragment: str) -> None:
    (problem,) = validate_spec({"steps": [step]})
    assert (problem.reason, problem.step) == ("InvalidStep", "a")
    assert fragment in problem.message


def test_schema_error_names_the_step_by_index() -> None:
    problems = validate_spec({"steps": [run("a"), run("b", timeout="soon")]})
    assert [(p.reason, p.step) for p in problems] == [("InvalidSpec", "steps[1]")]
    assert "timeout" in problems[0].message


def test_missing_steps_and_unknown_fields_are_schema_errors() -> None:
    assert reasons(validate_spec({})) == ["InvalidSpec"]
    assert reasons(validate_spec({"steps": [run("a")], "stepz": []})) == ["InvalidSpec"]


def test_duplicate_parameter_environment_names() -> None:
    spec = {"params": [{"name": "provider"}, {"name": "PROVIDER"}], "steps": [run("a")]}
    (problem,) = validate_spec(spec)
    assert problem.reason == "DuplicateName"
    assert "PARAM_PROVIDER" in problem.message


def test_enum_value_of_the_wrong_type() -> None:
    spec = {"params": [{"name": "n", "type": "integer", "enum": [1, "two"]}], "steps": [run("a")]}
    (problem,) = validate_spec(spec)
    assert problem.reason == "InvalidDefault"
    assert "'n'" in problem.message


@pytest.mark.parametrize("pattern", ["(unclosed", "a{99999999999}"])
def test_pattern_that_is_not_a_regular_expression(pattern: str) -> None:
    spec = {"params": [{"name": "p", "pattern": pattern, "default": "a"}], "steps": [run("a")]}
    assert reasons(validate_spec(spec)) == ["InvalidDefault"]


def test_problem_str() -> None:
    assert str(Problem("DependencyCycle", "a -> a", "a")) == "DependencyCycle: step 'a': a -> a"
    assert str(Problem("InvalidSpec", "steps: missing")) == "InvalidSpec: steps: missing"


# --- large graphs ------------------------------------------------------------------------


def test_find_cycle_on_a_2000_step_chain() -> None:
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(2000)}
    chain["s2000"] = []
    assert find_cycle(chain) is None
    chain["s2000"] = ["s0"]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert cycle == [f"s{i}" for i in range(2001)] + ["s0"]


def test_validate_a_500_step_chain_declared_in_reverse() -> None:
    # s0 depends on s1, ..., s498 on s499: deepest possible ancestor walk.
    steps = [run(f"s{i}", dependsOn=[f"s{i + 1}"] if i < 499 else []) for i in range(500)]
    steps[0]["when"] = "steps.s499.phase == 'Succeeded'"
    assert validate_spec({"steps": steps}) == []
    steps[-1]["dependsOn"] = ["s0"]
    problems = validate_spec({"steps": steps})
    assert reasons(problems) == ["DependencyCycle"]
    path = problems[0].message.split(" -> ")
    assert len(path) == 501 and path[0] == path[-1]


# --- hypothesis: never raises ------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
names = st.sampled_from(["a", "b", "c", "clear-cache", "A", "", "report", "x" * 70]) | st.text(
    max_size=8)
expressions = st.sampled_from([
    "true", "steps.a.phase == 'Failed'", "steps['clear-cache'].outputs.ok", "params.x in [1, 2]",
    "!steps.b.outputs.healthy", "steps.", "steps[", "has(steps.c.outputs.x) &&", "a b c",
    "[steps.a, steps.b].exists(s, s.phase == 'Failed')", "execution.failed", "\x00", "\"",
]) | st.text(max_size=30)
step_like = st.fixed_dictionaries(
    {"name": names},
    optional={
        "image": st.sampled_from(["busybox:1.37", ""]) | json_like,
        "type": st.sampled_from(["run", "approval", "wait", "other"]),
        "dependsOn": st.lists(names, max_size=4) | json_like,
        "when": expressions | json_like,
        "circuit": st.fixed_dictionaries(
            {"policy": st.sampled_from(["ai-providers", "Bad_Name"])},
            optional={"key": expressions, "onOpen": st.sampled_from(["Fail", "Fallback", "x"]),
                      "fallback": names}),
        "wait": st.fixed_dictionaries({"duration": st.sampled_from(["5s", "1h30m", "x", ""])}),
        "timeout": st.sampled_from(["30s", "500ms", "1x", "9" * 31 + "h"]),
        "retry": json_like,
        "continueOnFailure": st.booleans(),
    },
)
param_like = st.fixed_dictionaries(
    {"name": st.sampled_from(["provider", "Provider", "n", "1bad"]) | st.text(max_size=6)},
    optional={
        "type": st.sampled_from(["string", "integer", "number", "boolean", "array", "object"]),
        "default": json_like,
        "enum": st.lists(json_like, max_size=4),
        "pattern": st.sampled_from(["^[a-z]+$", "(", "a{99999999999}", ".*"]) | st.text(max_size=8),
        "required": st.booleans(),
    },
)
spec_like = st.fixed_dictionaries(
    {"steps": st.lists(step_like, max_size=6)},
    optional={
        "finally": st.lists(step_like, max_size=3),
        "params": st.lists(param_like, max_size=4),
        "concurrency": st.fixed_dictionaries({"key": expressions}),
        "timeout": st.sampled_from(["30m", "nope"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(json_like | st.dictionaries(st.sampled_from(["steps", "finally", "params"]), json_like))
def test_never_raises_on_junk(raw: Any) -> None:
    problems = validate_spec(raw)
    assert isinstance(problems, list)
    assert all(isinstance(p, Problem) for p in problems)
    if not isinstance(raw, dict) or "steps" not in raw:
        assert problems, "a spec without steps is never valid"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_like)
def test_never_raises_on_spec_shaped_junk(raw: dict[str, Any]) -> None:
    problems = validate_spec(raw)
    assert all(isinstance(p, Problem) and p.reason and p.message for p in problems)


# --- hypothesis: random DAGs -------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Steps s0..s{n-1} with random dependsOn (any direction, self, duplicates), and a
    random `when` target for some steps."""
    n = draw(st.integers(1, 30))
    step_names = [f"s{i}" for i in range(n)]
    deps = {name: draw(st.lists(st.sampled_from(step_names), max_size=4)) for name in step_names}
    reads = draw(st.dictionaries(st.sampled_from(step_names), st.sampled_from(step_names),
                                 max_size=n))
    return deps, reads


def has_cycle(deps: dict[str, list[str]]) -> bool:
    try:
        TopologicalSorter(deps).prepare()
    except CycleError:
        return True
    return False


def transitive_dependencies(deps: dict[str, list[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(deps[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(deps[node])
    return seen


@settings(max_examples=400, deadline=None)
@given(graphs())
def test_random_dags(graph: tuple[dict[str, list[str]], dict[str, str]]) -> None:
    deps, reads = graph
    steps = []
    for name, dep_list in deps.items():
        step = run(name, dependsOn=dep_list)
        if name in reads:
            step["when"] = f"steps.{reads[name]}.phase == 'Succeeded'"
        steps.append(step)
    problems = validate_spec({"steps": steps})

    assert set(reasons(problems)) <= {"DependencyCycle", "InvalidExpression"}
    cyclic = has_cycle(deps)
    assert ("DependencyCycle" in reasons(problems)) == cyclic
    for problem in problems:
        if problem.reason != "DependencyCycle":
            continue
        path = problem.message.split(" -> ")
        assert len(path) >= 2 and path[0] == path[-1] == problem.step
        for node, nxt in pairwise(path):
            assert nxt in deps[node], f"{node} -> {nxt} is not an edge of {deps}"

    flagged = {p.step for p in problems if p.reason == "InvalidExpression"}
    if cyclic:
        assert flagged == set()  # reads of existing steps are not judged in a cyclic graph
    else:
        expected = {name for name, target in reads.items()
                    if target not in transitive_dependencies(deps, name)}
        assert flagged == expected
