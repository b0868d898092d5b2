"""What every handler of the web view needs: the API client, the scope, the guard's
values. One typed application key (aiohttp's ``AppKey``), so handlers read it typed.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from runbook_operator.cli.ui.kube import Api


@dataclass(frozen=True)
class State:
    api: Api
    namespace: str | None
    """The namespace the lists show; None with ``-A``."""
    token: str
    hosts: frozenset[str]
    """The ``host:port`` values a request's Host (and Origin) may name."""


STATE = web.AppKey("state", State)
