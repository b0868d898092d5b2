"""engine.cel: compiling and evaluating `when` and `key` expressions.

Cases:
- an expression that does not compile raises CelError carrying the compiler's
  message (position and what was expected), and compiled programs are cached;
- evaluate returns values; a runtime error (missing key, no such overload)
  becomes CelError naming the expression;
- evaluate_bool accepts only a bool (no truthiness for 1, "yes", null);
- the expressions the examples rely on: `!steps.probe.outputs.healthy`,
  `params.severity in ['SEV1','SEV2']`, `has(...)` guarding missing outputs,
  `steps["clear-cache"]`, list `.exists(...)`;
- referenced_steps finds `steps.a`, `steps["b-c"]`, `steps['d']`, with spaces, not
  names that merely contain "steps", nor inside string literals, as fields of
  something else (`params.steps.x`) or as macro calls (`steps.exists(...)`).
"""

from __future__ import annotations

import pytest

from runbook_operator.engine.cel import (
    ROOT_VARIABLES,
    CelError,
    compile_expression,
    evaluate,
    evaluate_bool,
    referenced_steps,
)


def test_compile_error_carries_the_compiler_message() -> None:
    with pytest.raises(CelError) as info:
        compile_expression("steps.probe.outputs.healthy ==")
    message = str(info.value)
    assert "steps.probe.outputs.healthy ==" in message
    assert "Syntax error" in message
    assert "1:" in message  # line:column of the problem


@pytest.mark.parametrize("source", ["", "(", "a &&", "'unterminated", "1 +* 2", "steps["])
def test_junk_does_not_compile(source: str) -> None:
    with pytest.raises(CelError):
        compile_expression(source)


def test_programs_are_cached() -> None:
    assert compile_expression("params.x == 1") is compile_expression("params.x == 1")


def test_evaluate_values() -> None:
    assert evaluate("params.n * 2", {"params": {"n": 21}}) == 42
    assert evaluate("params.provider + '/x'", {"params": {"provider": "openai"}}) == "openai/x"


def test_runtime_errors_become_cel_errors() -> None:
    with pytest.raises(CelError, match=r"steps\.probe\.phase"):
        evaluate("steps.probe.phase == 'Failed'", {"steps": {}})
    with pytest.raises(CelError):
        evaluate("params.n + 'x'", {"params": {"n": 1}})


@pytest.mark.parametrize("source", ["1", "'yes'", "null", "[true]", "params.flag"])
def test_evaluate_bool_rejects_non_bool(source: str) -> None:
    with pytest.raises(CelError, match="not a bool"):
        evaluate_bool(source, {"params": {"flag": "true"}})


def test_evaluate_bool() -> None:
    assert evaluate_bool("true", {}) is True
    assert evaluate_bool("1 > 2", {}) is False


@pytest.mark.parametrize(("outputs", "phase", "expected"), [
    ({"healthy": False}, "Succeeded", True),
    ({"healthy": True}, "Succeeded", False),
    ({}, "Succeeded", False),  # a probe that wrote nothing is not a reason to act
    ({}, "Failed", True),
])
def test_probe_branching(outputs: dict[str, bool], phase: str, expected: bool) -> None:
    source = ("steps.probe.phase == 'Failed' "
              "|| (has(steps.probe.outputs.healthy) && !steps.probe.outputs.healthy)")
    steps = {"probe": {"phase": phase, "outputs": outputs}}
    assert evaluate_bool(source, {"steps": steps}) is expected


def test_without_has_missing_outputs_are_an_error() -> None:
    with pytest.raises(CelError):
        evaluate_bool("!steps.probe.outputs.healthy", {"steps": {"probe": {"outputs": {}}}})


@pytest.mark.parametrize(("severity", "expected"), [
    ("SEV1", True), ("SEV2", True), ("SEV3", False), ("SEV4", False)])
def test_severity_in_list(severity: str, expected: bool) -> None:
    source = "params.severity in ['SEV1', 'SEV2']"
    assert evaluate_bool(source, {"params": {"severity": severity}}) is expected


def test_dashed_step_names_with_brackets() -> None:
    steps = {"clear-cache": {"phase": "Succeeded", "outputs": {"deleted": 3}}}
    assert evaluate_bool('steps["clear-cache"].outputs.deleted > 0', {"steps": steps})
    assert evaluate_bool("steps['clear-cache'].phase == 'Succeeded'", {"steps": steps})


def test_exists_over_a_list_of_steps() -> None:
    source = "[steps.a, steps.b].exists(s, s.phase == 'Failed')"
    ok = {"phase": "Succeeded", "outputs": {}}
    assert not evaluate_bool(source, {"steps": {"a": ok, "b": ok}})
    assert evaluate_bool(source, {"steps": {"a": ok, "b": {"phase": "Failed", "outputs": {}}}})


def test_variables_of_a_program() -> None:
    assert set(compile_expression("params.a && steps.b.phase == 'x'").variables()) <= (
        ROOT_VARIABLES)


@pytest.mark.parametrize(("source", "expected"), [
    ("steps.a.phase == 'Failed'", {"a"}),
    ('steps["b-c"].outputs.ok', {"b-c"}),
    ("steps['d'].phase != 'Skipped' && steps.e_1.phase == 'Failed'", {"d", "e_1"}),
    ("steps . spaced.phase", {"spaced"}),
    ('steps[ "x" ].phase', {"x"}),
    ("params.provider == 'openai'", set()),
    ("params.mysteps == 1 || params.nsteps > 2", set()),
])
def test_referenced_steps(source: str, expected: set[str]) -> None:
    assert referenced_steps(source) == expected


@pytest.mark.parametrize("source", [
    "params.note == 'steps.fake'",
    "params.steps.x == 1",
    "steps.exists(n, steps[n].phase == 'Failed')",
])
def test_referenced_steps_false_positives(source: str) -> None:
    assert referenced_steps(source) == set()
