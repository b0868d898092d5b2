"""The watch-restart counter on kopf's watching logger.

Cases: kopf's "410 Gone" restart line and its inactivity line are counted by the
resource's plural (namespaced and cluster-wide); other DEBUG lines are not; the
counted DEBUG records are dropped unless the operator logs at DEBUG; records above
DEBUG always pass; installing twice keeps one counter. The lines are formatted
with kopf's own ``Resource`` as kopf formats them; the integration test
``test_watch_restarts_are_counted`` proves it against a running kopf.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from kopf._cogs.structs.references import Resource

from runbook_operator.controllers import watches

JOBS = Resource("batch", "v1", "jobs")
EXECUTIONS = Resource("runbooks.dev", "v1alpha1", "runbookexecutions")


@pytest.fixture
def kopf_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(watches.WATCHING_LOGGER)
    level, filters = logger.level, list(logger.filters)
    yield logger
    logger.setLevel(level)
    logger.filters[:] = filters


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_restarts_are_counted_by_resource(kopf_logger: logging.Logger) -> None:
    counted: list[str] = []
    watches.install(counted.append, "INFO")
    kopf_logger.debug(f"Restarting the watch-stream for {JOBS} in 'ops'.")
    kopf_logger.debug(f"Restarting the watch-stream for {EXECUTIONS} cluster-wide.")
    kopf_logger.debug(f"Watch-stream for {JOBS} in 'ops' is inactive, reconnecting.")
    kopf_logger.debug(f"Watch-stream for {EXECUTIONS} cluster-wide is inactive, reconnecting.")
    kopf_logger.debug(f"Starting the watch-stream for {JOBS} in 'ops'.")
    assert counted == ["jobs", "runbookexecutions", "jobs", "runbookexecutions"]


def test_debug_lines_pass_only_at_debug(kopf_logger: logging.Logger) -> None:
    records = Records()
    kopf_logger.addHandler(records)
    try:
        watches.install(lambda _: None, "INFO")
        kopf_logger.debug(f"Restarting the watch-stream for {JOBS} in 'ops'.")
        kopf_logger.error("Request attempt #1/9 failed; will retry")
        assert records.messages == ["Request attempt #1/9 failed; will retry"]
        counted: list[str] = []
        watches.install(counted.append, "debug")  # replaces the first counter
        kopf_logger.debug(f"Restarting the watch-stream for {JOBS} in 'ops'.")
        assert counted == ["jobs"]
        assert records.messages[-1].startswith("Restarting the watch-stream")
        assert sum(isinstance(f, watches.WatchRestartCounter) for f in kopf_logger.filters) == 1
    finally:
        kopf_logger.removeHandler(records)
