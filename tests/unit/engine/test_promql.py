"""PromQL parameters are string literals only, and parse errors say where."""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from runbook_operator.engine.promql import (
    InjectionError,
    parse,
    parse_problem,
    placeholders,
    quote,
    quote_meta,
    render,
)

TEMPLATES = [
    'sum(rate(http_requests_total{code=~"5..",service=$service}[5m]))'
    ' / sum(rate(http_requests_total{service=$service}[5m]))',
    "up{job=$service} == 1",
    'label_replace(up, "dst", $service, "job", "(.*)")',
    'count(up{instance=~$service}) # $service in a comment stays text\n > 0',
]


def _shape(expr: promql_parser.Expr) -> tuple[list[Any], list[str]]:
    """The tree's structure (node types, operators, label names and match ops) and,
    apart, every string value in it (literals and matcher values)."""
    shape: list[Any] = []
    strings: list[str] = []

    def visit(node: Any) -> None:
        kind = type(node).__name__
        shape.append(kind)
        if isinstance(node, promql_parser.StringLiteral):
            strings.append(node.val)
        elif isinstance(node, promql_parser.NumberLiteral):
            shape.append(node.val)
        elif isinstance(node, promql_parser.VectorSelector):
            shape.append(node.name)
            for m in node.matchers.matchers:
                shape.append((m.name, str(m.op)))
                strings.append(m.value)
            shape.append(len(node.matchers.or_matchers))
        elif isinstance(node, promql_parser.MatrixSelector):
            shape.append(str(node.range))
        elif isinstance(node, promql_parser.Call):
            shape.append(node.func.name)
        elif isinstance(node, promql_parser.BinaryExpr | promql_parser.AggregateExpr):
            shape.append(str(node.op))

    promql_parser.walk(expr, pre_visit=visit)
    return shape, strings


HOSTILE = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from([*'"\'`{}[]()\\\n\r\t#$ ,=~!', "\u2028", "é", "😀"])),
    st.sampled_from(['"} or vector(1) #', "\"}) or vector(1) or up{a=\"", "\\", "\\\"",
                     "\n# comment\n", "$service", "`", "'", "\x00", "\u00a0",
                     "\U0001d518\U0001d52b\U0001d526"]),
)


@settings(max_examples=300, deadline=None)
@given(value=HOSTILE, template=st.sampled_from(TEMPLATES))
@example(value='"} or vector(1) #', template=TEMPLATES[1])
@example(value="a\nb\"c\\d{e}", template=TEMPLATES[0])
def test_a_parameter_never_changes_the_query_structure(value: str, template: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        with pytest.raises(InjectionError):
            render(template, {"service": value})
        return
    reference_shape, reference_strings = _shape(parse(render(template, {"service": "SVC"})))
    shape, strings = _shape(parse(render(template, {"service": value})))
    assert shape == reference_shape
    # The value arrives whole, exactly where the placeholder was, and nowhere else;
    # after =~ as a regular expression that matches the value and only it.
    arrived = quote_meta(value) if "=~$service" in template else value
    assert strings == [arrived if s == "SVC" else s for s in reference_strings]
    if "=~$service" in template:
        assert re.fullmatch(arrived, value, flags=re.DOTALL)


@given(st.text())
def test_quote_reads_back_as_the_value(value: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        with pytest.raises(InjectionError):
            quote(value)
        return
    literal = parse(quote(value))
    assert isinstance(literal, promql_parser.StringLiteral)
    assert literal.val == value


def test_quote_escapes_everything_outside_printable_ascii() -> None:
    assert quote('a"b\\c\nd😀é') == '"a\\"b\\\\c\\u000ad\\U0001f600\\u00e9"'


def test_placeholders_in_literals_and_comments_are_text() -> None:
    expr = 'up{a=$s, b="$t", c=\'$u\'} # $v\n + on() up{d=$w}'
    assert placeholders(expr) == ["s", "w"]
    rendered = render(expr, {"s": "1", "w": "2"})
    assert rendered == 'up{a="1", b="$t", c=\'$u\'} # $v\n + on() up{d="2"}'


def test_a_regex_matcher_value_matches_literally() -> None:
    assert render("up{a=~$s, b!~ $s, c=$s}", {"s": ".*"}) == \
        'up{a=~"\\\\.\\\\*", b!~ "\\\\.\\\\*", c=".*"}'


def test_unknown_placeholder_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        render("up{a=$missing}", {})


def test_non_string_values_become_their_text() -> None:
    assert render("up{a=$n, b=$f, c=$t}", {"n": 3, "f": 0.5, "t": True}) == \
        'up{a="3", b="0.5", c="true"}'


@pytest.mark.parametrize(("expr", "line", "column", "fragment"), [
    ("sum(rate(x[5m])) bar", 1, 18, "invalid"),
    ("x{a=}", 1, 5, "invalid"),
    ("rate(x[5z])", 1, 8, "5z"),
    ("foo bar", 1, 5, "invalid"),
    ("sum(", 1, 5, "unclosed"),
    ('up{job="a"}\n  and on() foo(', 2, 16, "unclosed"),
    ("nofunc(x)", 1, 1, "nofunc"),
])
def test_parse_problem_names_the_position(expr: str, line: int, column: int,
                                          fragment: str) -> None:
    problem = parse_problem(expr)
    assert problem is not None
    assert (problem.line, problem.column) == (line, column)
    assert fragment in problem.message
    assert f"line {line}, column {column}" in str(problem)


def test_valid_queries_have_no_problem() -> None:
    for template in TEMPLATES:
        assert parse_problem(render(template, {"service": "x"})) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_problem_never_raises(text: str) -> None:
    problem = parse_problem(text)
    if problem is not None:
        assert 0 <= problem.offset <= len(text)
        assert problem.line >= 1 and problem.column >= 1
