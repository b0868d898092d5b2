"""Alertmanager matchers (engine/matchers.py).

Cases: the four operators; quoted and unquoted values, escapes, quoted names,
braces, spaces around the operator; regexes anchored on both ends and run by RE2
(a pattern that backtracks catastrophically in Python's re is linear here);
a missing label matching as ""; every malformed matcher raises MatcherError with
a message naming it; property: any string either parses or raises MatcherError,
and a parsed matcher printed and parsed again is the same matcher.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.matchers import (
    MAX_MATCHER_LENGTH,
    Matcher,
    MatcherError,
    matches_all,
    parse_matcher,
)


@pytest.mark.parametrize(("text", "name", "op", "value"), [
    ('alertname="HighMemoryUsage"', "alertname", "=", "HighMemoryUsage"),
    ("alertname=HighMemoryUsage", "alertname", "=", "HighMemoryUsage"),
    ('severity =~ "critical|warning"', "severity", "=~", "critical|warning"),
    ('team!=""', "team", "!=", ""),
    ('env!~"dev.*"', "env", "!~", "dev.*"),
    ('{service="api"}', "service", "=", "api"),
    (r'msg="say \"hi\"\n"', "msg", "=", 'say "hi"\n'),
    (r'instance=~"db\d+"', "instance", "=~", r"db\d+"),
    ('"odd.name"="x"', "odd.name", "=", "x"),
])
def test_parses_alertmanager_syntax(text: str, name: str, op: str, value: str) -> None:
    m = parse_matcher(text)
    assert (m.name, m.op, m.value) == (name, op, value)


def test_equality_and_inequality() -> None:
    m = parse_matcher('alertname="HighMemoryUsage"')
    assert m.matches({"alertname": "HighMemoryUsage"})
    assert not m.matches({"alertname": "HighMemoryUsage2"})
    assert not parse_matcher('alertname!="HighMemoryUsage"').matches(
        {"alertname": "HighMemoryUsage"})


def test_regex_is_anchored_on_both_ends() -> None:
    m = parse_matcher('severity=~"critical|warning"')
    assert m.matches({"severity": "critical"}) and m.matches({"severity": "warning"})
    assert not m.matches({"severity": "critical-ish"})
    assert not m.matches({"severity": "not-warning"})
    assert parse_matcher('severity!~"critical|warning"').matches({"severity": "info"})


def test_a_missing_label_matches_as_the_empty_string() -> None:
    assert parse_matcher('team=""').matches({})
    assert not parse_matcher('team!=""').matches({})
    assert parse_matcher('team=~"|ops"').matches({})
    assert not parse_matcher('team="ops"').matches({})


def test_dot_does_not_cross_newlines_as_in_alertmanager() -> None:
    assert not parse_matcher('msg=~".*"').matches({"msg": "a\nb"})
    assert parse_matcher('msg=~"(?s).*"').matches({"msg": "a\nb"})


def test_catastrophic_pattern_for_backtracking_engines_is_linear() -> None:
    m = parse_matcher('v=~"(a+)+$"')
    # Python's re would take years on this; RE2 answers at once (no timing asserted).
    assert not m.matches({"v": "a" * 5000 + "!"})
    assert m.matches({"v": "a" * 5000})


def test_matches_all_needs_every_matcher() -> None:
    ms = (parse_matcher('a="1"'), parse_matcher('b=~"x|y"'))
    assert matches_all(ms, {"a": "1", "b": "y"})
    assert not matches_all(ms, {"a": "1", "b": "z"})
    assert matches_all((), {"anything": "goes"})


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "empty matcher"),
    ("   ", "empty matcher"),
    ('="x"', "label name"),
    ('1abc="x"', "label name"),
    ("alertname", "expected one of"),
    ('alertname=="x"', "unexpected"),
    ('alertname="x', "missing closing quote"),
    ('alertname="x" extra', "unexpected"),
    ('a="x", b="y"', "unexpected"),
    ('a=~"(unclosed"', "invalid regular expression"),
    ('a=~"(?=lookahead)"', "invalid regular expression"),
    ('a="trailing\\', "backslash"),
    ('""="x"', "label name is empty"),
])
def test_malformed_matchers_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(MatcherError, match=None) as info:
        parse_matcher(text)
    assert fragment in str(info.value)


def test_overlong_matcher_is_refused() -> None:
    with pytest.raises(MatcherError, match="longer than"):
        parse_matcher('a="' + "x" * MAX_MATCHER_LENGTH + '"')


@settings(max_examples=3_000, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_matcher_error(text: str) -> None:
    try:
        m = parse_matcher(text)
    except MatcherError:
        return
    assert isinstance(m, Matcher)
    m.matches({"a": text})  # never raises


@settings(max_examples=1_000, deadline=None)
@given(st.sampled_from(["a", "alertname", "_x9", "Service_Name"]),
       st.sampled_from(["=", "!="]), st.text(max_size=40))
def test_printed_matcher_parses_back_to_itself(name: str, op: str, value: str) -> None:
    m = parse_matcher(f"{name}{op}" + '"' + value.replace("\\", "\\\\").replace('"', '\\"')
                      .replace("\n", "\\n") + '"')
    assert m.value == value
    again = parse_matcher(str(m))
    assert (again.name, again.op, again.value) == (m.name, m.op, m.value)
