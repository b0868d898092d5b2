"""Query sources: only the cluster admin's names, with the notifier's URL policy."""

from __future__ import annotations

import pytest

from runbook_operator.engine.query_sources import (
    SourceError,
    parse_source,
    parse_sources,
    refusal,
)


def test_a_full_source() -> None:
    source = parse_source("name=prometheus,url=http://prom.monitoring:9090/prefix/,"
                          "tokenFile=/t,caFile=/ca,namespaces=ops|payments")
    assert source.query_url() == "http://prom.monitoring:9090/prefix/api/v1/query"
    assert (source.token_file, source.ca_file) == ("/t", "/ca")
    assert source.allows("ops") and not source.allows("dev")
    assert parse_source("name=p,url=https://p").allows("anything")


@pytest.mark.parametrize(("text", "said"), [
    ("name=p,url=http://169.254.169.254/", "link-local"),
    ("name=p,url=file:///etc/passwd", "http and https"),
    ("name=p,url=http://[fd00:ec2::254]/", "metadata"),
    ("name=p,url=http://user:pw@prom/", "credentials"),
    ("name=P!,url=http://prom/", "DNS label"),
    ("name=p,url=http://prom/,color=red", "not one of"),
    ("name=p,url=http://prom/,url=http://other/", "twice"),
    ("name=p,url=http://pro m/", "whitespace"),
])
def test_bad_sources_are_refused_at_start(text: str, said: str) -> None:
    with pytest.raises(SourceError, match=said):
        parse_source(text)


def test_the_refusal_never_quotes_a_url() -> None:
    with pytest.raises(SourceError) as caught:
        parse_source("name=p,url=http://169.254.169.254/secret-path")
    assert "secret-path" not in str(caught.value)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(SourceError, match="twice"):
        parse_sources(["name=p,url=http://a", "name=p,url=http://b"])


def test_refusal_names_unknown_and_not_allowed_sources() -> None:
    sources = parse_sources(["name=prometheus,url=http://prom,namespaces=ops"])
    assert refusal(sources, "prometheus", "ops") is None
    reason, message = refusal(sources, "prometheus", "dev") or ("", "")
    assert reason == "SourceNotAllowed" and "'dev'" in message
    reason, message = refusal(sources, "http://evil", "ops") or ("", "")
    assert reason == "UnknownSource" and "prometheus" in message
