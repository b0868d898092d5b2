"""engine.names: Job names and label values for names up to 253 characters.

Cases:
- label_value: names of 63 characters are kept; 64 and 253 are shortened to 63
  with a hash, end in an alphanumeric, and two names that share their head get
  different values; deterministic;
- job_name: `<execution>-<step>-<attempt>` of exactly 63 characters is kept, of 64
  shortened with a hash to 63 with the attempt at the end; a 253-character
  execution name gives distinct Job names per step and attempt;
- generate_prefix leaves room for the server's random suffix;
- hypothesis: any object name (DNS subdomain, 1..253 characters, dots and dashes
  anywhere inside) gives a valid label value, Job names that are DNS subdomains
  and label values of at most 63 characters for every step name and attempt, and distinct names
  give distinct label values.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_operator.engine.names import generate_prefix, job_name, label_value

LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def test_label_values() -> None:
    for n in (1, 62, 63):
        assert label_value("a" * n) == "a" * n
    for n in (64, 100, 253):
        value = label_value("a" * n)
        assert len(value) == 63 and LABEL.match(value)
        assert value == label_value("a" * n)
    assert label_value("x" * 70 + "-1") != label_value("x" * 70 + "-2")
    assert LABEL.match(label_value("a" * 51 + "-" * 20 + "b"))


def test_job_names_at_the_limit() -> None:
    execution = "e" * (63 - len("-step-1"))
    assert job_name(execution, "step", 1) == f"{execution}-step-1"
    longer = job_name(execution + "e", "step", 1)
    assert len(longer) == 63 and longer.endswith("-1")
    names = {job_name("x" * 253, s, a) for s in ("a", "b") for a in (1, 2, 10)}
    assert len(names) == 6 and all(len(n) <= 63 for n in names)


def test_generate_prefix() -> None:
    assert generate_prefix("run", "-params-") == "run-params-"
    assert len(generate_prefix("r" * 253, "-params-")) == 248


DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
dns_labels = st.builds(lambda first, rest: (first + rest)[:63].rstrip("-"),
                      st.sampled_from(ALNUM), st.text(ALNUM + "-", max_size=70))
object_names = st.lists(dns_labels, min_size=1, max_size=6).map(
    lambda parts: ".".join(parts)[:253].rstrip("-."))
step_names = st.builds(lambda first, rest: (first + rest)[:63].rstrip("-") or first,
                       st.sampled_from(ALNUM), st.text(ALNUM + "-", max_size=70))


@settings(max_examples=2_000, deadline=None, database=None)
@given(object_names, object_names, step_names, st.integers(1, 51))
def test_any_name_gives_valid_labels_and_job_names(name: str, other: str, step: str,
                                                    attempt: int) -> None:
    value = label_value(name)
    assert len(value) <= 63 and LABEL.match(value), value
    assert (value == label_value(other)) == (name == other)
    job = job_name(name, step, attempt)
    # A DNS subdomain (the Job's name) that is also a label value (its pods' job-name).
    assert len(job) <= 63 and LABEL.match(job), job
    assert all(DNS_LABEL.match(part) for part in job.split(".")), job
    assert job.endswith(f"-{attempt}")
