"""Query steps: what a Prometheus answer means, and what one check does to the step.

Pure: the shell (``controllers.queries``) sends the request and hands the bytes,
or why there are none, to ``read_response``; ``apply_check`` then decides, with
the time passed in, whether the step succeeded, failed, waits for the next check
or for a retry. The step's counts live in ``StepStatus.query`` and are written
with the status, so a restart neither loses nor repeats a check: a check whose
status write was lost is simply made again.

How a result reads in CEL (``result`` in ``successCondition``/``failureCondition``):

===================  ==========================================================
Prometheus answer    ``result``
===================  ==========================================================
scalar ``v``         ``type: "scalar"``, ``value: v``, ``count: 1``, ``empty: false``
vector, one series   ``type: "vector"``, ``value``: its sample, ``count: 1``,
                     ``series: [{labels: {...}, value}]``
vector, empty        ``empty: true``, ``count: 0``, ``series: []``, no ``value``
vector, n > 1        ``count: n``, ``series`` (the first 20 by labels), no ``value``:
                     aggregate in PromQL, or use ``result.series.all(s, ...)``
matrix               as a vector; each series also has ``values`` (its samples,
                     at most 100, oldest first) and ``value`` is its last sample
string               ``type: "string"``, ``text``, no ``value``
NaN                  ``value`` left out, ``nan: true`` (CEL cannot order NaN)
+Inf / -Inf          ``value`` is the float infinity: ``result.value > 0.5`` is true
===================  ==========================================================

A condition that reads a ``value`` that is not there is a CEL error: the check is
neither a success nor a failure (the step keeps checking, its message says why);
write ``has(result.value) && result.value < 0.05`` to say what no value means.

The step's outputs are the JSON-safe form of the same result (``outputs_of``):
``value`` only when finite, ``valueText`` always when there is one number
(``"NaN"``, ``"+Inf"``, ``"0.042"``), and at most 10 series. A later step's
``when`` reads ``steps['x'].outputs.value``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from runbook_operator.api.common import parse_duration
from runbook_operator.api.runbook import Query, Retry
from runbook_operator.engine import backoff
from runbook_operator.engine.cel import CelError, evaluate_bool
from runbook_operator.engine.outputs import clean_text

MAX_RESPONSE_BYTES = 4 << 20
"""A Prometheus answer larger than this is refused unread (the shell stops reading)."""
MAX_SERIES = 20
"""Series ``result.series`` holds; ``result.count`` is the true number."""
MAX_OUTPUT_SERIES = 10
"""Series the step's outputs keep (the execution's status is bounded)."""
MAX_SAMPLES = 100
"""Samples per matrix series kept in ``values`` (the newest)."""
MAX_LABELS = 32
"""Labels per series kept; the rest are dropped (``truncated`` says so)."""
MAX_LABEL_CHARS = 256
MAX_OUTPUT_LABELS = 16
"""Labels per series the outputs keep, each value cut to ``MAX_OUTPUT_LABEL_CHARS``: a
step's outputs stay under ~45 KB whatever the series carry."""
MAX_OUTPUT_LABEL_CHARS = 128

CheckKind = Literal["Result", "Timeout", "Unavailable", "BadResponse", "Refused"]
Outcome = Literal["Success", "Failure", "Inconclusive", "Timeout", "Unavailable",
                  "BadResponse", "Refused"]


@dataclass(frozen=True)
class Check:
    """What one check of a query step came to, as the shell saw it."""

    kind: CheckKind
    at: datetime
    """When the check was made (its answer came, or it gave up)."""
    result: Mapping[str, Any] | None = None
    """``result`` as CEL reads it (``read_response``), for ``kind == "Result"``."""
    reason: str | None = None
    """For the other kinds: a CamelCase reason (``SourceUnavailable``, ``NotJSON``...)."""
    message: str | None = None
    """What came back or went wrong, never a token or the source's URL."""


@dataclass(frozen=True)
class NumberedCheck:
    """A check and the number it has in the step's count (``QueryStatus.checks + 1``)."""

    number: int
    check: Check


class ResponseError(ValueError):
    """A Prometheus answer the step cannot use, with a reason and what came back."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _snippet(body: bytes) -> str:
    return json.dumps(clean_text(body[:60].decode("utf-8", "replace")))


def _number(raw: Any) -> float:
    if not isinstance(raw, str):
        raise ResponseError("UnexpectedResult", f"a sample value is a {type(raw).__name__}, "
                            "not a string")
    text = raw.strip()
    try:
        return float(text)
    except ValueError:
        raise ResponseError("UnexpectedResult",
                            f"a sample value is not a number: {json.dumps(text[:40])}") from None


def _sample(pair: Any) -> float:
    if not isinstance(pair, list) or len(pair) != 2:
        raise ResponseError("UnexpectedResult", "a sample is not a [time, value] pair")
    return _number(pair[1])


def _labels(metric: Any) -> tuple[dict[str, str], bool]:
    if not isinstance(metric, dict):
        raise ResponseError("UnexpectedResult", "a series' metric is not an object")
    labels: dict[str, str] = {}
    for key in sorted(metric)[:MAX_LABELS]:
        value = metric[key]
        if not isinstance(value, str):
            raise ResponseError("UnexpectedResult", f"label {json.dumps(key[:40])} is a "
                                f"{type(value).__name__}, not a string")
        labels[clean_text(key)[:MAX_LABEL_CHARS]] = clean_text(value)[:MAX_LABEL_CHARS]
    return labels, len(metric) > MAX_LABELS


def _put_value(entry: dict[str, Any], number: float) -> None:
    if math.isnan(number):
        entry["nan"] = True
    else:
        entry["value"] = number


def read_response(body: bytes, truncated: bool = False) -> dict[str, Any]:
    """``result`` for CEL from an ``/api/v1/query`` answer; raises ``ResponseError``.

    ``truncated``: the shell stopped reading at ``MAX_RESPONSE_BYTES``.
    """
    if truncated or len(body) > MAX_RESPONSE_BYTES:
        raise ResponseError("ResponseTooLarge", f"the answer is larger than "
                            f"{MAX_RESPONSE_BYTES} bytes (starts {_snippet(body)})")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise ResponseError("NotJSON", f"the answer is not JSON: {_snippet(body)}") from None
    if not isinstance(doc, dict):
        raise ResponseError("UnexpectedResult", f"the answer is a JSON {type(doc).__name__}, "
                            "not an object")
    if doc.get("status") != "success":
        error_type = clean_text(str(doc.get("errorType", "")))[:64]
        error = clean_text(str(doc.get("error", "")))[:300]
        raise ResponseError("QueryError", f"Prometheus answered {error_type or 'an error'}: "
                            f"{error or _snippet(body)}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ResponseError("UnexpectedResult", "the answer has no data object")
    kind = data.get("resultType")
    raw = data.get("result")
    if kind in ("scalar", "string"):
        if not isinstance(raw, list) or len(raw) != 2:
            raise ResponseError("UnexpectedResult", f"a {kind} result is not a [time, value] pair")
        if kind == "string":
            text = raw[1] if isinstance(raw[1], str) else ""
            return {"type": "string", "text": clean_text(text)[:1024], "count": 1,
                    "empty": False, "series": [], "truncated": False}
        result: dict[str, Any] = {"type": "scalar", "count": 1, "empty": False,
                                  "series": [], "truncated": False}
        _put_value(result, _sample(raw))
        return result
    if kind not in ("vector", "matrix"):
        raise ResponseError("UnexpectedResult",
                            f"resultType is {json.dumps(clean_text(str(kind))[:40])}, not "
                            "vector, matrix, scalar or string")
    if not isinstance(raw, list):
        raise ResponseError("UnexpectedResult", f"a {kind} result is not a list")
    series = []
    cut = False
    for item in raw:
        if not isinstance(item, dict):
            raise ResponseError("UnexpectedResult", f"a {kind} element is not an object")
        labels, dropped = _labels(item.get("metric", {}))
        cut = cut or dropped
        entry: dict[str, Any] = {"labels": labels}
        if kind == "vector":
            _put_value(entry, _sample(item.get("value")))
        else:
            samples = item.get("values")
            if not isinstance(samples, list) or not samples:
                raise ResponseError("UnexpectedResult", "a matrix series has no values list")
            numbers = [_sample(s) for s in samples]
            entry["values"] = [n for n in numbers[-MAX_SAMPLES:] if not math.isnan(n)]
            cut = cut or len(numbers) > MAX_SAMPLES
            _put_value(entry, numbers[-1])
        series.append(entry)
    series.sort(key=lambda s: sorted(s["labels"].items()))
    result = {"type": kind, "count": len(series), "empty": not series,
              "series": series[:MAX_SERIES], "truncated": cut or len(series) > MAX_SERIES}
    if len(series) == 1:
        if "value" in series[0]:
            result["value"] = series[0]["value"]
        else:
            result["nan"] = True
    return result


def value_text(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    return repr(number)


def _finite(entry: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    value = entry.get("value")
    if isinstance(value, float) and math.isfinite(value):
        out["value"] = value
    if isinstance(value, float):
        out["valueText"] = value_text(value)
    elif entry.get("nan"):
        out["valueText"] = "NaN"
    return out


def outputs_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The step's outputs: JSON-safe (no NaN or Inf), bounded."""
    out: dict[str, Any] = {"type": result.get("type"), "count": result.get("count", 0),
                           "empty": bool(result.get("empty"))}
    out.update(_finite(result))
    if "text" in result:
        out["text"] = result["text"]
    out["series"] = [{"labels": {k[:MAX_OUTPUT_LABEL_CHARS]: v[:MAX_OUTPUT_LABEL_CHARS]
                                for k, v in list(s.get("labels", {}).items())[:MAX_OUTPUT_LABELS]},
                      **_finite(s)}
                     for s in list(result.get("series", []))[:MAX_OUTPUT_SERIES]]
    if result.get("truncated") or result.get("count", 0) > MAX_OUTPUT_SERIES:
        out["truncated"] = True
    return out


@dataclass
class QueryState:
    """The durable counts of one query step (``StepStatus.query`` holds them)."""

    checks: int = 0
    successes: int = 0
    """Consecutive successful checks."""
    failures: int = 0
    """Failed checks so far (failureCondition true, or timed out)."""
    errors: int = 0
    """Consecutive checks with no answer (source unavailable): the retries used."""
    next_check_at: datetime | None = None
    last_outcome: str | None = None


@dataclass
class Verdict:
    """What one check did to the step."""

    state: QueryState
    outcome: Outcome
    phase: Literal["Running", "Succeeded", "Failed"] = "Running"
    reason: str | None = None
    message: str = ""
    outputs: dict[str, Any] | None = None
    wake_at: datetime | None = None
    notes: list[str] = field(default_factory=list)


def judge_result(success: str, failure: str | None, result: Mapping[str, Any],
                 params: Mapping[str, Any]) -> Outcome:
    """Success, Failure or Inconclusive: what the conditions say of ``result``."""
    return _judge(success, failure, result, params)[0]


def _judge(success: str, failure: str | None, result: Mapping[str, Any],
           params: Mapping[str, Any]) -> tuple[Outcome, str]:
    variables = {"result": dict(result), "params": dict(params)}
    try:
        if failure and evaluate_bool(failure, variables):
            return "Failure", f"failureCondition {failure!r} is true"
    except CelError as exc:
        return "Inconclusive", f"failureCondition could not be evaluated: {exc}"
    try:
        if evaluate_bool(success, variables):
            return "Success", f"successCondition {success!r} is true"
    except CelError as exc:
        return "Inconclusive", f"successCondition could not be evaluated: {exc}"
    return "Inconclusive", "neither condition is true"


def _describe(result: Mapping[str, Any]) -> str:
    if "value" in result:
        return f"value {value_text(float(result['value']))}"
    if result.get("nan"):
        return "value NaN"
    if result.get("empty"):
        return "empty result"
    return f"{result.get('count', 0)} series"


def apply_check(query: Query, state: QueryState, check: Check, retry: Retry | None,
                params: Mapping[str, Any], seed: str) -> Verdict:
    """The step after ``check``: counts updated, and Succeeded, Failed or the next check.

    ``seed`` makes the retry jitter the same on every pass (``engine.backoff``).
    """
    s = QueryState(**vars(state))
    s.checks += 1
    interval = parse_duration(query.interval)
    if check.kind == "Result" and check.result is not None:
        s.errors = 0
        outcome, why = _judge(query.success_condition, query.failure_condition,
                              check.result, params)
        seen = _describe(check.result)
        outputs: dict[str, Any] | None = outputs_of(check.result)
        if outcome == "Success":
            s.successes += 1
        else:
            s.successes = 0
        if outcome == "Failure":
            s.failures += 1
        s.last_outcome = outcome
        progress = (f"check {s.checks}: {seen}; {why}; {s.successes}/{query.count} in a row, "
                    f"{s.failures}/{query.failure_limit} failed")
        if s.failures >= query.failure_limit:
            return Verdict(s, outcome, "Failed", "QueryFailed", progress, outputs)
        if s.successes >= query.count:
            return Verdict(s, outcome, "Succeeded", "QuerySucceeded", progress, outputs)
        s.next_check_at = check.at + interval
        return Verdict(s, outcome, "Running", "Checking", progress, outputs, s.next_check_at)
    s.successes = 0
    detail = check.message or check.reason or check.kind
    if check.kind == "Timeout":
        s.errors = 0  # the run of unanswered checks (retries) is broken
        s.failures += 1
        s.last_outcome = "Timeout"
        progress = f"check {s.checks} timed out ({detail}); {s.failures}/" \
                   f"{query.failure_limit} failed"
        if s.failures >= query.failure_limit:
            return Verdict(s, "Timeout", "Failed", "QueryTimeout", progress)
        s.next_check_at = check.at + interval
        return Verdict(s, "Timeout", "Running", "Checking", progress, None, s.next_check_at)
    if check.kind == "Unavailable":
        s.errors += 1
        s.last_outcome = "Unavailable"
        if backoff.should_retry(retry, s.errors, None, False):
            assert retry is not None
            at = backoff.next_attempt_at(retry, s.errors, check.at, f"{seed}/{s.errors}")
            s.next_check_at = at
            return Verdict(s, "Unavailable", "Running", "SourceUnavailable",
                           f"check {s.checks}: {detail}; retry {s.errors} of {retry.limit} "
                           "at the step's retry backoff", None, at)
        return Verdict(s, "Unavailable", "Failed", check.reason or "SourceUnavailable",
                       f"check {s.checks}: {detail}" + (
                           f"; {retry.limit} retries used" if retry else "; no retry policy"))
    s.last_outcome = check.kind
    kind: Outcome = "Refused" if check.kind == "Refused" else "BadResponse"
    return Verdict(s, kind, "Failed", check.reason or check.kind, f"check {s.checks}: {detail}")


def first_check_at(started: datetime) -> datetime:
    """The first check is due as soon as the step starts."""
    return started


def step_deadline(started: datetime, timeout: str | None) -> datetime | None:
    return started + parse_duration(timeout) if timeout else None


def timed_out(started: datetime, timeout: str | None, now: datetime) -> bool:
    deadline = step_deadline(started, timeout)
    return deadline is not None and now >= deadline


def check_timeout(query: Query) -> timedelta:
    """How long one request may take: the interval, at most 30 s, at least 1 s."""
    return max(timedelta(seconds=1), min(parse_duration(query.interval), timedelta(seconds=30)))
