"""Counts kopf's watch-stream restarts for ``runbook_operator_watch_restarts_total``.

kopf keeps its watches alive itself and has no hook for "this stream restarted":
it says so only in DEBUG lines of ``kopf._cogs.clients.watching``. A filter on that
logger reads those two lines, counts them by resource, and lets them through only
when the operator logs at DEBUG, so turning the counter on costs no log volume.
Two causes are counted: the apiserver answered ``410 Gone`` (the resourceVersion
expired; kopf lists again) and no event or bookmark arrived within
``watching.inactivity_timeout`` (the stream is presumed dead; kopf reconnects).

If a kopf release rewords these lines the counter stays at 0; the integration test
``test_watch_restarts_are_counted`` then fails.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

__all__ = ["WATCHING_LOGGER", "WatchRestartCounter", "install"]

WATCHING_LOGGER = "kopf._cogs.clients.watching"
"""The logger kopf's watch streams log to."""

_RESTARTS = (
    re.compile(r"^Restarting the watch-stream for (?P<resource>[^\s.]+)"),
    re.compile(r"^Watch-stream for (?P<resource>[^\s.]+)\S* .*is inactive, reconnecting"),
)


class WatchRestartCounter(logging.Filter):
    """A logging filter that calls ``count(resource)`` for each restart kopf logs."""

    def __init__(self, count: Callable[[str], None], pass_debug: bool) -> None:
        super().__init__()
        self.count = count
        """Called with the resource's plural name, e.g. ``jobs``."""
        self.pass_debug = pass_debug
        """Let the DEBUG records through (the operator logs at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.DEBUG:
            message = record.getMessage()
            for pattern in _RESTARTS:
                match = pattern.match(message)
                if match:
                    self.count(match["resource"])
                    break
            return self.pass_debug
        return True


def install(count: Callable[[str], None], log_level: str) -> WatchRestartCounter:
    """Attach a counter to kopf's watching logger and let it produce DEBUG records."""
    logger = logging.getLogger(WATCHING_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, WatchRestartCounter)]:
        logger.removeFilter(old)
    counter = WatchRestartCounter(count, pass_debug=log_level.upper() == "DEBUG")
    logger.addFilter(counter)
    logger.setLevel(logging.DEBUG)
    return counter
