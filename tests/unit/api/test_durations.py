"""api.common.parse_duration and the Duration type of the models.

Cases:
- known values: 500ms, 30s, 5m, 1h30m (5400 s), 1.5h, 2h45m30s500ms, 0s;
- junk is rejected with a ValueError naming the text: empty, no unit, unknown
  unit, negative, spaces, Go's `us`/`ns`, a unit before its number, a bare dot;
- the Step model rejects a malformed duration (so the CRD and the validator agree);
- hypothesis: a duration built from random (number, unit) parts parses to the
  sum of the parts;
- a number too large for timedelta is a ValueError too, not an OverflowError.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runbook_operator.api.common import DURATION_PATTERN, parse_duration
from runbook_operator.api.runbook import Step

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5),
    ("30s", 30),
    ("5m", 300),
    ("1h30m", 5400),
    ("1.5h", 5400),
    ("2h45m30s500ms", 2 * 3600 + 45 * 60 + 30.5),
    ("0s", 0),
    ("90m", 5400),
])
def test_known_values(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", [
    "", "5", "5d", "-5s", "5 s", " 5s", "5s ", "1us", "10ns", "s5", ".5s", "5.s", "1h30",
    "ms", "1e3s", "五s",
])
def test_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_duration(text)


def test_step_model_rejects_a_malformed_duration() -> None:
    with pytest.raises(ValidationError):
        Step.model_validate({"name": "a", "image": "busybox:1.37", "timeout": "soon"})
    assert Step.model_validate({"name": "a", "image": "busybox:1.37", "timeout": "1h30m"}).timeout


parts = st.lists(
    st.tuples(
        st.integers(0, 10_000) | st.decimals(0, 1000, places=3, allow_nan=False,
                                             allow_infinity=False),
        st.sampled_from(sorted(UNITS)),
    ),
    min_size=1, max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(parts)
def test_round_trip_from_parts(duration_parts: list[tuple[object, str]]) -> None:
    text = "".join(f"{number}{unit}" for number, unit in duration_parts)
    assert re.fullmatch(DURATION_PATTERN, text)
    expected = sum(float(str(number)) * UNITS[unit] for number, unit in duration_parts)
    assert math.isclose(parse_duration(text).total_seconds(), expected, rel_tol=1e-9,
                        abs_tol=1e-6)


def test_huge_duration_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_duration("9" * 20 + "h")
