"""Prometheus sources: the only places a query step may send its PromQL.

A Runbook names a source; the cluster admin defines what the name means (operator
flag ``--query-source``, chart value ``querySources``): its URL, a bearer token
file, a CA file and the namespaces whose Runbooks may use it. A Runbook author can
therefore never make the operator call an address of their choosing (SSRF), nor
borrow a source meant for another team. The URL passes the notifier's policy
(``engine.notify.url_problem``: http(s) only, no link-local or cloud-metadata
address), checked again on the resolved address by the shell.

Flag syntax, one source per flag::

    --query-source name=prometheus,url=http://prometheus.monitoring:9090,\
tokenFile=/var/run/secrets/prom/token,caFile=/etc/prom/ca.crt,namespaces=ops|payments

``namespaces`` absent or ``*``: every namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runbook_operator.engine.notify import url_problem

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_KEYS = frozenset({"name", "url", "tokenFile", "caFile", "namespaces"})


class SourceError(ValueError):
    """A source definition the operator refuses to start with."""


@dataclass(frozen=True)
class Source:
    """One Prometheus the cluster admin named."""

    name: str
    url: str
    token_file: str | None = None
    ca_file: str | None = None
    namespaces: frozenset[str] | None = None
    """None: every namespace may use it."""

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces

    def query_url(self) -> str:
        """The instant-query endpoint under the source's URL (its path prefix kept)."""
        return self.url.rstrip("/") + "/api/v1/query"

    def describe(self) -> str:
        """For logs: the name and host only (a URL may carry credentials in userinfo)."""
        return f"{self.name} ({urlsplit(self.url).hostname})"


def parse_source(text: str) -> Source:
    """A ``--query-source`` value; raises ``SourceError`` saying what is wrong."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise SourceError(f"query source: {key!r} is not one of {', '.join(sorted(_KEYS))}")
        if key in fields:
            raise SourceError(f"query source: {key} given twice")
        fields[key] = value.strip()
    name = fields.get("name", "")
    if not NAME.match(name):
        raise SourceError(f"query source: name {name!r} is not a DNS label")
    url = fields.get("url", "")
    problem = url_problem(url)
    if problem:
        raise SourceError(f"query source {name}: {problem}")
    if urlsplit(url).username or urlsplit(url).password:
        raise SourceError(f"query source {name}: credentials in the URL are refused; "
                          "use tokenFile")
    spaces = fields.get("namespaces")
    namespaces = None if spaces in (None, "", "*") else \
        frozenset(n.strip() for n in spaces.split("|") if n.strip())
    return Source(name, url, fields.get("tokenFile") or None, fields.get("caFile") or None,
                  namespaces)


def parse_sources(texts: Iterable[str]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    for text in texts:
        source = parse_source(text)
        if source.name in sources:
            raise SourceError(f"query source {source.name} is defined twice")
        sources[source.name] = source
    return sources


def refusal(sources: Mapping[str, Source], name: str, namespace: str) -> tuple[str, str] | None:
    """(reason, message) when a step in ``namespace`` may not query source ``name``."""
    source = sources.get(name)
    if source is None:
        known = ", ".join(sorted(sources)) or "none are configured"
        return ("UnknownSource", f"query source {name!r} is not one the cluster admin named "
                f"(known: {known})")
    if not source.allows(namespace):
        return ("SourceNotAllowed", f"query source {name!r} may not be used from namespace "
                f"{namespace!r}")
    return None
