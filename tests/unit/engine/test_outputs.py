"""engine.outputs: a step's termination message parsed with limits, never raising.

Cases:
- a JSON object is the outputs; blank is none; not JSON, not an object, NaN and
  Infinity, integers beyond 64 bits, invalid UTF-8 bytes, lone surrogates (raw or
  as \\ud800 escapes), NUL, more than 4096 bytes, nesting deeper than 16 (even
  4,000 deep, which used to hit the recursion limit), more than 512 keys and
  values (also a million keys, a 10 MB string, as text or bytes), and over-long
  keys are ignored with a message saying why;
- clean_text makes any text writable as UTF-8;
- hypothesis, 10,000 cases each (1,000 examples of 10 inputs: hypothesis' own
  cost per example would otherwise dominate): arbitrary text, arbitrary bytes, and
  JSON-shaped values of any type and depth, serialised, never raise; whatever is
  returned is a dict that round-trips through strict JSON and UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_operator.engine.outputs import (
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_NODES,
    clean_text,
    parse_outputs,
)

BATCH = 10
FUZZ = settings(max_examples=1_000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_objects_and_blanks() -> None:
    assert parse_outputs('{"healthy": true, "n": [1, 2]}') == (
        {"healthy": True, "n": [1, 2]}, None)
    assert parse_outputs(None) == ({}, None)
    assert parse_outputs(" \n") == ({}, None)


@pytest.mark.parametrize(("message", "why"), [
    ("not json", "not a JSON object"),
    ("[1, 2]", "not a JSON object"),
    ('{"a": NaN}', "NaN is not JSON"),
    ('{"a": Infinity}', "Infinity is not JSON"),
    ('{"a": 1e999}', "a number JSON cannot carry"),
    ('{"a": ' + "9" * 30 + "}", "beyond 64 bits"),
    (b'{"a": "\xff"}', "not valid UTF-8"),
    ('{"a": "\ud800"}', "not valid UTF-8"),
    ('{"a": "\\ud800"}', "not valid UTF-8"),
    ('{"a": "\\u0000"}', "NUL"),
    ('{"a": "' + "x" * MAX_MESSAGE_BYTES + '"}', f"more than {MAX_MESSAGE_BYTES}"),
    ('{"a": ' * 17 + "1" + "}" * 17, f"deeper than {MAX_DEPTH}"),
    ("[" * 4000, f"deeper than {MAX_DEPTH}"),
    ('{"a": [' + ",".join(["1"] * MAX_NODES) + "]}", f"more than {MAX_NODES}"),
    ('{"' + "k" * 300 + '": 1}', "key is longer"),
    (12, "not text"),
    # What a kubelet that does not cap the message (or a forged pod status) could carry:
    # a valid JSON object of a million keys, and a 10 MB string, as text and as bytes.
    (json.dumps({str(i): i for i in range(10**6)}), f"more than {MAX_MESSAGE_BYTES}"),
    (json.dumps({"a": "x" * 10_000_000}), f"more than {MAX_MESSAGE_BYTES}"),
    (json.dumps({"a": "x" * 10_000_000}).encode(), f"more than {MAX_MESSAGE_BYTES}"),
    ('{"a": [' + ",".join(["{}"] * 1000) + "]}", f"more than {MAX_NODES}"),
])
def test_poison_is_ignored_with_a_reason(message: Any, why: str) -> None:
    outputs, warning = parse_outputs(message)
    assert outputs == {}
    assert warning is not None and warning.startswith("outputs ignored: ") and why in warning


def test_clean_text() -> None:
    assert clean_text("ok") == "ok"
    assert clean_text("a\ud800b").encode("utf-8") == b"a?b"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text(b"\xffx") == "\ufffdx"


def _check(message: Any) -> None:
    outputs, warning = parse_outputs(message)
    assert isinstance(outputs, dict)
    assert warning is None or isinstance(warning, str)
    # Whatever is kept can be written to the status: strict JSON, valid UTF-8.
    json.dumps(outputs, allow_nan=False).encode("utf-8")


@FUZZ
@given(st.lists(st.text(), min_size=BATCH, max_size=BATCH))
def test_fuzz_text(messages: list[str]) -> None:
    for message in messages:
        _check(message)


@FUZZ
@given(st.lists(st.binary(max_size=5000), min_size=BATCH, max_size=BATCH))
def test_fuzz_bytes(messages: list[bytes]) -> None:
    for message in messages:
        _check(message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20)


@FUZZ
@given(json_values)
def test_fuzz_json_of_any_shape(value: Any) -> None:
    for wrap in range(0, 2 * BATCH, 2):  # 10 depths, across the nesting limit
        wrapped = value
        for _ in range(wrap):
            wrapped = {"v": wrapped}
        _check(json.dumps(wrapped))
