"""Query steps: how Prometheus answers read in CEL, and what one check does to the step."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.api.runbook import Backoff, Query, Retry
from runbook_operator.engine.query import (
    MAX_RESPONSE_BYTES,
    MAX_SERIES,
    Check,
    QueryState,
    ResponseError,
    apply_check,
    outputs_of,
    read_response,
)
from runbook_operator.engine.validation import validate_spec

T0 = datetime(2026, 12, 8, tzinfo=UTC)


def _answer(kind: str, result: Any) -> bytes:
    return json.dumps({"status": "success",
                       "data": {"resultType": kind, "result": result}}).encode()


def _vector(*values: str) -> bytes:
    return _answer("vector", [{"metric": {"pod": f"p{i}"}, "value": [1.0, v]}
                              for i, v in enumerate(values)])


def test_scalar_and_single_series_have_a_value() -> None:
    assert read_response(_answer("scalar", [1.0, "0.25"]))["value"] == 0.25
    one = read_response(_vector("0.04"))
    assert one["value"] == 0.04 and one["count"] == 1 and not one["empty"]
    assert one["series"] == [{"labels": {"pod": "p0"}, "value": 0.04}]


def test_empty_vector_has_no_value() -> None:
    empty = read_response(_vector())
    assert empty["empty"] and empty["count"] == 0 and "value" not in empty


def test_several_series_have_no_single_value_and_are_capped() -> None:
    many = read_response(_vector(*[str(i) for i in range(MAX_SERIES + 5)]))
    assert "value" not in many and many["count"] == MAX_SERIES + 5
    assert len(many["series"]) == MAX_SERIES and many["truncated"]


def test_nan_and_infinities() -> None:
    nan = read_response(_vector("NaN"))
    assert nan["nan"] and "value" not in nan
    assert read_response(_vector("+Inf"))["value"] == math.inf
    assert read_response(_vector("-Inf"))["value"] == -math.inf
    out = outputs_of(read_response(_vector("+Inf")))
    assert "value" not in out and out["valueText"] == "+Inf"
    json.dumps(out, allow_nan=False)  # the status stays valid JSON


def test_matrix_reads_as_its_last_sample() -> None:
    matrix = read_response(_answer("matrix", [{"metric": {}, "values": [[1, "3"], [2, "1"]]}]))
    assert matrix["value"] == 1.0 and matrix["series"][0]["values"] == [3.0, 1.0]


@pytest.mark.parametrize(("body", "reason", "said"), [
    (b"<html>502 Bad Gateway</html>", "NotJSON", "<html>502"),
    (b"[1,2]", "UnexpectedResult", "list"),
    (json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode(),
     "QueryError", "bad_data"),
    (_answer("streams", []), "UnexpectedResult", "streams"),
    (_answer("vector", [{"metric": {}, "value": [1, 5]}]), "UnexpectedResult", "int"),
    (_answer("vector", [{"metric": {"a": 1}, "value": [1, "5"]}]), "UnexpectedResult", "label"),
    (_answer("vector", [{"metric": {}, "value": [1, "five"]}]), "UnexpectedResult", "five"),
    (b"[" * 100000, "NotJSON", "["),
])
def test_bad_answers_fail_with_what_came_back(body: bytes, reason: str, said: str) -> None:
    with pytest.raises(ResponseError) as caught:
        read_response(body)
    assert caught.value.reason == reason
    assert said in str(caught.value)


def test_a_huge_answer_is_refused() -> None:
    with pytest.raises(ResponseError) as caught:
        read_response(b" " * 10, truncated=True)
    assert caught.value.reason == "ResponseTooLarge"
    assert str(MAX_RESPONSE_BYTES) in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=30).map(lambda v: json.dumps({"status": "success", "data": v}).encode()))
def test_read_response_raises_only_response_errors(body: bytes) -> None:
    try:
        result = read_response(body)
    except ResponseError:
        return
    json.dumps(outputs_of(result), allow_nan=False)


QUERY = Query(source="prometheus", expr="x", success_condition="result.value < 0.05",
              failure_condition="result.value > 0.5", interval="30s", count=3, failure_limit=2)


def _check(value: str | None, at: datetime, kind: str = "Result") -> Check:
    result = read_response(_vector(value)) if value is not None else None
    return Check(kind, at, result, reason="SourceUnavailable" if kind == "Unavailable" else None,
                 message="connection refused" if kind == "Unavailable" else None)


def test_count_consecutive_successes_then_succeeds() -> None:
    state = QueryState()
    at = T0
    phases = []
    for value in ["0.2", "0.01", "0.3", "0.01", "0.02", "0.03"]:
        verdict = apply_check(QUERY, state, _check(value, at), None, {}, "seed")
        state, at = verdict.state, at + timedelta(seconds=30)
        phases.append((verdict.outcome, verdict.phase, state.successes))
    assert phases == [("Inconclusive", "Running", 0), ("Success", "Running", 1),
                      ("Inconclusive", "Running", 0), ("Success", "Running", 1),
                      ("Success", "Running", 2), ("Success", "Succeeded", 3)]
    assert verdict.outputs is not None and verdict.outputs["value"] == 0.03


def test_fails_at_failure_limit_and_a_timeout_is_a_failed_check() -> None:
    first = apply_check(QUERY, QueryState(), _check("0.9", T0), None, {}, "s")
    assert (first.phase, first.state.failures, first.wake_at) == \
        ("Running", 1, T0 + timedelta(seconds=30))
    second = apply_check(QUERY, first.state, Check("Timeout", T0, message="no answer in 30s"),
                         None, {}, "s")
    assert (second.phase, second.reason) == ("Failed", "QueryTimeout")


def test_unavailable_source_follows_the_retry_policy() -> None:
    retry = Retry(limit=1, backoff=Backoff(initial="10s", jitter=0.0))
    first = apply_check(QUERY, QueryState(), _check(None, T0, "Unavailable"), retry, {}, "s")
    assert first.phase == "Running" and first.wake_at == T0 + timedelta(seconds=10)
    second = apply_check(QUERY, first.state, _check(None, T0, "Unavailable"), retry, {}, "s")
    assert (second.phase, second.reason) == ("Failed", "SourceUnavailable")
    assert "connection refused" in second.message
    no_retry = apply_check(QUERY, QueryState(), _check(None, T0, "Unavailable"), None, {}, "s")
    assert no_retry.phase == "Failed"


def test_a_condition_over_a_missing_value_is_inconclusive_not_a_crash() -> None:
    verdict = apply_check(QUERY, QueryState(), Check("Result", T0, read_response(_vector())),
                          None, {}, "s")
    assert (verdict.outcome, verdict.phase) == ("Inconclusive", "Running")
    assert "could not be evaluated" in verdict.message


def test_state_is_not_mutated() -> None:
    state = QueryState(successes=2)
    apply_check(QUERY, state, _check("0.01", T0), None, {}, "s")
    assert state.successes == 2 and state.checks == 0


def _spec(query: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"params": [{"name": "service"}], **extra,
            "steps": [{"name": "verify", "type": "query", "query": {
                "source": "prometheus", "successCondition": "result.value < 0.8", **query}}]}


def test_validation_reports_invalid_query_with_step_and_position() -> None:
    problems = validate_spec(_spec({"expr": "avg(mem{service=$service}) bar"}))
    assert [p.reason for p in problems] == ["InvalidQuery"]
    assert problems[0].step == "verify"
    assert "line 1, column 28" in problems[0].message


def test_validation_accepts_a_good_query_and_checks_its_cel() -> None:
    assert validate_spec(_spec({"expr": "avg(mem{service=$service})"})) == []
    bad = validate_spec(_spec({"expr": "up", "failureCondition": "steps.x > 1"}))
    assert [p.reason for p in bad] == ["InvalidExpression"]
    assert "result and params" in bad[0].message
    missing = validate_spec({"steps": [{"name": "q", "type": "query"}]})
    assert missing[0].reason == "InvalidStep"


KINDS = st.sampled_from(["low", "high", "mid", "none", "timeout", "down"])


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(KINDS, max_size=40), count=st.integers(1, 5),
       limit=st.integers(1, 4), retries=st.integers(0, 3))
def test_apply_check_properties(kinds: list[str], count: int, limit: int, retries: int) -> None:
    """Over any run of checks: counts stay consistent, and the step ends exactly when
    ``count`` successes in a row, ``failureLimit`` failed checks or too many
    unanswered checks say so, never earlier and never both."""
    query = QUERY.model_copy(update={"count": count, "failure_limit": limit})
    retry = Retry(limit=retries, backoff=Backoff(initial="1s", jitter=0.0)) if retries else None
    state, at = QueryState(), T0
    run = failed = errors = 0
    for n, kind in enumerate(kinds, 1):
        if kind == "timeout":
            check = Check("Timeout", at, message="slow")
        elif kind == "down":
            check = Check("Unavailable", at, reason="SourceUnavailable", message="refused")
        else:
            value = {"low": "0.01", "high": "0.9", "mid": "0.2", "none": None}[kind]
            check = Check("Result", at, read_response(_vector() if value is None
                                                      else _vector(value)))
        verdict = apply_check(query, state, check, retry, {}, "seed")
        state = verdict.state
        run = run + 1 if kind == "low" else 0
        failed += kind in ("high", "timeout")
        errors = errors + 1 if kind == "down" else 0
        assert state.checks == n
        assert (state.successes, state.failures, state.errors) == (run, failed, errors)
        expected = ("Failed" if failed >= limit or errors > retries else
                    "Succeeded" if run >= count else "Running")
        assert verdict.phase == expected, (kinds[:n], verdict)
        if verdict.phase != "Running":
            break
        assert verdict.wake_at is not None and verdict.wake_at > at
        at = verdict.wake_at


def test_outputs_stay_small_whatever_the_series_carry() -> None:
    fat = {f"label_{i:02d}": "v" * 1000 for i in range(40)}
    body = _answer("vector", [{"metric": {**fat, "i": str(n)}, "value": [1, "1"]}
                              for n in range(50)])
    out = outputs_of(read_response(body))
    assert len(json.dumps(out)) < 48 * 1024
    assert out["truncated"] and len(out["series"]) == 10
