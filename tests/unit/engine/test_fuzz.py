"""Hypothesis fuzzing of what arrives from outside: nothing raises but the documented error.

Each test checks at least 10,000 inputs: 1,000 hypothesis examples of 10 inputs
(hypothesis' own cost per example would otherwise dominate the run time).
Termination messages are fuzzed in test_outputs.py. Cases:
- execution params (any JSON-like value, huge integers, NaN and infinities,
  lone surrogates, deep nesting, unknown names) through resolve_params against
  declarations of every type, with enum and pattern (including broken patterns):
  no exception, every error names a parameter, secret values never quoted;
- Runbook specs (spec-shaped junk: random names, dependsOn, when, circuit,
  securityContext, serviceAccountName, params, wrong types anywhere) through
  validate_spec: a list of Problems, never an exception; and the valid ones
  through start_execution and a planning pass (few of the junk specs are valid,
  so planning gets its own 10,000 below);
- valid Runbook specs (random DAGs of run, wait and approval steps, when
  expressions that compile, some of which fail at runtime, retries, timeouts,
  continueOnFailure, finally steps, typed params with defaults) through
  validate_spec, start_execution and planning passes on the simulated cluster,
  whose Jobs end with random outcomes and termination messages (poison included):
  valid, started, and every pass plans without an exception;
- CEL strings (random text and token soup of CEL's own grammar) through
  compile_expression and evaluate over realistic variables: only CelError.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.api.execution import RunbookExecutionSpec
from runbook_operator.api.runbook import Param, RunbookSpec
from runbook_operator.engine.cel import CelError, compile_expression, evaluate
from runbook_operator.engine.params import resolve_params
from runbook_operator.engine.planner import plan
from runbook_operator.engine.plans import Observation
from runbook_operator.engine.start import start_execution
from runbook_operator.engine.validation import Problem, validate_spec

from .simulator import Outcome, Simulator

BATCH = 10
FUZZ = settings(max_examples=1_000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def batch(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


leaf = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30)
        | st.floats() | st.text(max_size=12) | st.sampled_from(["\ud800", "a\x00b", "x" * 20000]))
json_like = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=6), inner, max_size=4), max_leaves=12)


def deep(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


# -- params ------------------------------------------------------------------------------

NAMES = ["provider", "n", "flag", "items", "cfg", "token"]
DECLARED = [
    Param(name="provider", type="string", enum=["openai", "anthropic"], default="openai"),
    Param(name="n", type="integer", required=True),
    Param(name="flag", type="boolean"),
    Param(name="items", type="array"),
    Param(name="cfg", type="object", pattern="("),
    Param(name="token", type="string", secret=True, pattern="^[a-z]{4,}$"),
    Param(name="ratio", type="number", default=0.5),
]


def variants(value: Any, other: str) -> list[dict[str, Any]]:
    """Ten parameter maps from one generated value: it under every name, deep, unknown."""
    return [{"n": 1, name: value} for name in NAMES] + [
        {other: value}, {"n": value, "token": value}, {"n": 1, "items": deep(value, 1200)},
        {"ratio": value, "flag": value}]


@FUZZ
@given(json_like, st.text(max_size=4))
def test_fuzz_params(value: Any, other: str) -> None:
    for given_ in variants(value, other):
        resolved, errors = resolve_params(DECLARED, given_)
        assert set(resolved) <= {p.name for p in DECLARED}
        for error in errors:
            assert error.startswith("parameter ")
        token = given_.get("token")
        if isinstance(token, str) and len(token) > 8:  # a secret's error never quotes it
            assert not any(token in e for e in errors if e.startswith("parameter 'token'"))


# -- Runbook specs -----------------------------------------------------------------------

junk = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
names = st.sampled_from(["a", "b", "c", "probe", "fix-it", "", "A", "x" * 70, 3])
contexts = st.dictionaries(
    st.sampled_from(["privileged", "runAsUser", "runAsNonRoot", "capabilities",
                     "allowPrivilegeEscalation", "seccompProfile", "procMount", "hostPID"]),
    junk, max_size=3)
steps = st.fixed_dictionaries(
    {"name": names},
    optional={
        "image": st.sampled_from(["busybox:1.37", ""]) | junk,
        "type": st.sampled_from(["run", "approval", "wait", "other"]),
        "dependsOn": st.lists(names, max_size=3) | junk,
        "when": st.sampled_from(["true", "steps.a.phase == 'Succeeded'", "params.n > 1",
                                 "(", "steps['fix-it'].outputs.x", "unknown.y"]) | junk,
        "circuit": st.fixed_dictionaries({"policy": st.sampled_from(["ai", "Bad"])},
                                         optional={"key": st.sampled_from(["params.p", ")"]),
                                                   "onOpen": st.sampled_from(["Fallback", "x"]),
                                                   "fallback": names}),
        "securityContext": contexts | junk,
        "timeout": st.sampled_from(["30s", "9" * 40 + "h", "soon"]),
        "retry": st.fixed_dictionaries({"limit": st.integers(-1, 60)}) | junk,
        "wait": st.fixed_dictionaries({"duration": st.sampled_from(["1s", "x"])}),
        "approval": st.just({}),
    })
specs = st.fixed_dictionaries(
    {"steps": st.lists(steps, max_size=4) | junk},
    optional={
        "finally": st.lists(steps, max_size=2),
        "params": st.lists(st.fixed_dictionaries(
            {"name": st.sampled_from(["p", "n", "P", "1x"])},
            optional={"type": st.sampled_from(["string", "integer", "nope"]),
                      "default": junk, "enum": st.lists(junk, max_size=3),
                      "pattern": st.sampled_from(["^a$", "(", "a{99999999999}"]),
                      "secret": st.booleans()}), max_size=3),
        "serviceAccountName": st.sampled_from(["runbook-runner", "admin", ""]) | junk,
        "concurrency": st.fixed_dictionaries({"policy": st.sampled_from(["Forbid", "No"])},
                                             optional={"key": st.sampled_from(["params.p",
                                                                               "(("])}),
        "timeout": st.sampled_from(["1h", "x"]),
        "parallelism": st.integers(-1, 600),
    }) | junk


@FUZZ
@given(batch(specs))
def test_fuzz_runbook_specs(cases: list[Any]) -> None:
    for raw in cases:
        problems = validate_spec(raw) if isinstance(raw, dict) else validate_spec({"x": raw})
        assert all(isinstance(p, Problem) for p in problems)
        if problems or not isinstance(raw, dict):
            continue
        # A valid spec starts and survives a planning pass.
        ex = RunbookExecutionSpec.model_validate({"runbookRef": {"name": "rb"}})
        status = start_execution(ex, {"spec": raw}, "ns", NOW)
        if status.phase != "Running":
            continue
        spec = RunbookSpec.model_validate(status.runbook_spec)
        plan(Observation(name="x", namespace="ns", uid="u", spec=spec, params={},
                         status=status, jobs={}, now=NOW))


# -- CEL ---------------------------------------------------------------------------------

TOKENS = ["params", "steps", "execution", ".", "a", "outputs", "phase", "[", "]", "(", ")",
          "{", "}", "'x'", '"y"', "1", "-", "2.5", "1e308", "9223372036854775807", "+", "*",
          "/", "%", "==", "!=", "<", ">=", "&&", "||", "!", "?", ":", ",", "has", "size",
          "exists", "all", "map", "filter", "in", "true", "null", "b'\\xff'", "'\\ud800'",
          "int", "string", "double", "matches", "'(a+)+$'", "x", "0u", "timestamp",
          "duration", "'1s'"]
cel_sources = st.text(max_size=40) | st.lists(st.sampled_from(TOKENS), max_size=25).map(
    " ".join)
VARIABLES = {
    "params": {"provider": "openai", "n": 3, "items": [1, 2], "cfg": {"a": {"b": None}}},
    "steps": {"a": {"phase": "Succeeded", "outputs": {"x": 1, "y": [True]}, "exitCode": 0,
                    "attempts": 1, "reason": ""}},
    "execution": {"name": "x", "namespace": "ns", "runbook": "rb", "failed": False,
                  "cancelled": False},
}


@FUZZ
@given(batch(cel_sources))
def test_fuzz_cel(sources: list[str]) -> None:
    for source in sources:
        try:
            compile_expression(source)
            evaluate(source, VARIABLES)
        except CelError:
            pass


# -- valid Runbook specs through planning ---------------------------------------------------

WHENS = ["true", "steps.s0.phase == 'Succeeded'", "params.n > 1", "params.flag",
         "steps.s0.outputs.x == 1", "size(params.provider) > 3", "execution.failed",
         "steps.s0.outputs.missing.deeper"]  # the last fails at runtime
MESSAGES = [None, '{"x": 1}', '{"x": "a"}', "not json", "[" * 50 + "]" * 50,
            '{"a": "\\ud800"}', '{"big": "' + "x" * 5000 + '"}', "\x00", "1e999"]


def valid_spec(seed: int) -> tuple[dict[str, Any], dict[str, Outcome]]:
    """A valid spec and its steps' outcomes, drawn from ``seed``: cheap to generate
    (hypothesis' own drawing of ten nested specs cost more than planning them), and a
    failure is reproduced from the seed hypothesis reports."""
    rnd = random.Random(seed)
    steps: list[dict[str, Any]] = []
    outcomes: dict[str, Outcome] = {}
    for i in range(rnd.randint(1, 6)):
        name = f"s{i}"
        kind = rnd.choice(["run", "run", "run", "wait", "approval"])
        step: dict[str, Any] = {"name": name, "type": kind,
                                "dependsOn": rnd.sample([f"s{j}" for j in range(i)],
                                                        min(i, rnd.randint(0, 3)))}
        if i and rnd.random() < 0.5:
            step["when"] = rnd.choice(WHENS)
            if "steps.s0" in step["when"] and "s0" not in step["dependsOn"]:
                step["dependsOn"].append("s0")  # a when reads only its dependencies
        if kind == "run":
            step["image"] = "busybox:1.37"
            step["continueOnFailure"] = rnd.random() < 0.5
            step["retry"] = {"limit": rnd.randint(0, 2),
                             "backoff": {"initial": "1s", "max": "5s"}}
            if rnd.random() < 0.5:
                step["timeout"] = "30s"
            outcomes[name] = rnd.choice([Outcome.ok, Outcome.fail, Outcome.deadline])(
                message=rnd.choice(MESSAGES))
        elif kind == "wait":
            step["wait"] = {"duration": "5s"}
        else:
            step["approval"] = {"timeout": "1m"}
        steps.append(step)
    spec: dict[str, Any] = {
        "params": [{"name": "provider", "enum": ["openai", "anthropic"], "default": "openai"},
                   {"name": "n", "type": "integer", "default": rnd.randint(-5, 5)},
                   {"name": "flag", "type": "boolean", "default": rnd.random() < 0.5}],
        "parallelism": rnd.randint(1, 4),
        "steps": steps,
    }
    if rnd.random() < 0.5:
        spec["finally"] = [{"name": "report", "image": "busybox:1.37"}]
    return spec, outcomes


@FUZZ
@given(batch(st.integers(0, 2**32)))
def test_fuzz_valid_runbooks_through_planning(seeds: list[int]) -> None:
    for seed in seeds:
        raw, outcomes = valid_spec(seed)
        assert validate_spec(raw) == []
        sim = Simulator.start(raw)  # asserts the run started
        sim.default_outcome = lambda step, attempt, o=outcomes: o.get(step, Outcome.ok())
        for _ in range(3):  # three planning passes, Jobs ending in between
            sim.step()
            if sim.finished or (nxt := sim.next_event()) is None:
                break
            sim.advance_to(nxt)
