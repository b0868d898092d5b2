"""The log pipeline: every line is redacted JSON with the correlation fields bound;
LogThrottle lets one line per interval through and counts the ones it held back."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from runbook_operator.engine.redact import Redactor
from runbook_operator.observability.logs import (
    LogThrottle,
    bind,
    configure_logging,
    get_logger,
    log_context,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave the root logger and structlog as the other tests expect them."""
    import structlog

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    out = []
    for line in buf.getvalue().splitlines():
        record = json.loads(line)
        assert isinstance(record, dict)
        assert TIMESTAMP.match(record["timestamp"]), record
        assert {"level", "logger", "event"} <= record.keys(), record
        out.append(record)
    return out


NO_POSTING = kopf.OperatorSettings()
NO_POSTING.posting.enabled = False  # kopf's own Event poster stays quiet on this record


def test_every_line_is_json_with_correlation_and_without_secrets() -> None:
    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    log = get_logger("runbook_operator.executions")
    with log_context(namespace="ops", runbook="restart", execution="restart-x1", step="drain",
                     attempt=2, trace_id="a" * 32, span_id="b" * 16):
        log.info("step started", password="hunter2", params={"db": {"apiKey": "k1"}})
        logging.getLogger("urllib3.connectionpool").warning(
            "sent %s to %s", "Authorization: Bearer t0k3n", "https://bob:pa55@api.example")
        logging.getLogger("kopf.objects").info(
            "Handler succeeded.",
            extra={"k8s_ref": {"kind": "RunbookExecution", "name": "restart-x1",
                               "namespace": "ops"},
                   "settings": NO_POSTING, "k8s_skip": False})
        try:
            raise RuntimeError("auth failed: password=hunter2")
        except RuntimeError:
            log.exception("call failed")
            logging.getLogger("aiohttp.client").exception("stdlib %s", "call failed")
    log.debug("outside %s", "any context")

    records = lines(buf)
    assert [r["logger"] for r in records] == [
        "runbook_operator.executions", "urllib3.connectionpool", "kopf.objects",
        "runbook_operator.executions", "aiohttp.client", "runbook_operator.executions"]
    assert [r["level"] for r in records] == ["info", "warning", "info", "error", "error",
                                             "debug"]
    correlated = {"namespace": "ops", "runbook": "restart", "execution": "restart-x1",
                  "step": "drain", "attempt": 2, "trace_id": "a" * 32, "span_id": "b" * 16}
    for record in records[:5]:
        assert correlated.items() <= record.items(), record
    assert "namespace" not in records[5] and records[5]["event"] == "outside any context"
    assert records[0]["password"] == "[REDACTED]"
    assert records[0]["params"] == {"db": {"apiKey": "[REDACTED]"}}
    assert records[1]["event"] == \
        "sent Authorization: Bearer [REDACTED] to https://bob:[REDACTED]@api.example"
    assert records[2]["object"] == {"kind": "RunbookExecution", "name": "restart-x1",
                                    "namespace": "ops"}
    assert "settings" not in records[2] and "k8s_skip" not in records[2]
    for record in records[3:5]:
        assert "Traceback" in record["exception"]
        assert "RuntimeError: auth failed: password=[REDACTED]" in record["exception"]
    assert records[4]["event"] == "stdlib call failed"
    assert list(records[0])[:4] == ["timestamp", "level", "logger", "event"]
    for secret in ("hunter2", "k1", "t0k3n", "pa55"):
        assert secret not in buf.getvalue()


def test_level_filters_both_worlds() -> None:
    buf = io.StringIO()
    configure_logging("json", "warning", stream=buf)
    get_logger("a").info("dropped")
    logging.getLogger("b").info("dropped")
    get_logger("a").warning("kept")
    assert [r["event"] for r in lines(buf)] == ["kept"]


def test_literal_secrets_of_a_redactor() -> None:
    buf = io.StringIO()
    configure_logging("json", stream=buf, redactor=Redactor(["s3cr3t-param"]))
    get_logger("a").info("rendered s3cr3t-param", output={"x": "id s3cr3t-param"})
    logging.getLogger("b").info("%s", "s3cr3t-param")
    assert "s3cr3t-param" not in buf.getvalue()
    assert len(lines(buf)) == 2


def test_odd_objects_are_rendered_and_redacted() -> None:
    class Conn:
        def __repr__(self) -> str:
            return "Conn(password=hunter2)"

    buf = io.StringIO()
    configure_logging("json", stream=buf)
    get_logger("a").info("connected", conn=Conn(), raw=b"token=abc", tags={"x"})
    (record,) = lines(buf)
    assert record["conn"] == "Conn(password=[REDACTED])"
    assert record["raw"] == "token=[REDACTED]"
    assert record["tags"] == ["x"]


def test_context_reaches_tasks_and_threads() -> None:
    buf = io.StringIO()
    configure_logging("json", stream=buf)
    log = get_logger("a")

    async def main() -> None:
        with log_context(execution="e1"):
            await asyncio.to_thread(log.info, "in to_thread")
            await asyncio.create_task(_log_async(log))
        log.info("after")

    asyncio.run(main())
    bind(namespace="ns")
    import contextvars

    ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, args=(log.info, "in thread"))
    t.start()
    t.join()
    records = lines(buf)
    assert [(r["event"], r.get("execution"), r.get("namespace")) for r in records] == [
        ("in to_thread", "e1", None), ("in task", "e1", None), ("after", None, None),
        ("in thread", None, "ns")]


async def _log_async(log: Any) -> None:
    log.info("in task")


def test_nested_contexts_restore_outer_values() -> None:
    buf = io.StringIO()
    configure_logging("json", stream=buf)
    log = get_logger("a")
    with log_context(execution="e1", step="a"):
        with log_context(step="b", attempt=1):
            log.info("inner")
        log.info("outer")
    records = lines(buf)
    assert (records[0]["step"], records[0]["attempt"]) == ("b", 1)
    assert records[1]["step"] == "a" and "attempt" not in records[1]


def test_console_format_is_for_humans() -> None:
    buf = io.StringIO()
    configure_logging("console", stream=buf)
    with log_context(runbook="restart"):
        get_logger("runbook_operator").info("started", token="abc")
    text = buf.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
    assert "started" in text and "runbook=restart" in text
    assert "token=[REDACTED]" in text and "abc" not in text


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", stream=first)
    configure_logging("json", stream=second)
    logging.getLogger("x").warning("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_log_throttle_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    throttle = LogThrottle(interval=60.0)
    assert throttle.allow(1000.0) == 0
    assert [throttle.allow(1000.0 + t) for t in (0.0, 1.0, 59.9)] == [None, None, None]
    assert throttle.allow(1060.0) == 3
    assert throttle.allow(1061.0) is None
    assert throttle.allow(5000.0) == 1
