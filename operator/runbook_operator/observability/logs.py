"""One log pipeline for the whole process: structlog, JSON lines, redacted, correlated.

The operator's own code logs through structlog; kopf, the kubernetes client,
urllib3 and aiohttp log through the standard library. Both are routed through the
same processors (structlog's ``ProcessorFormatter`` on the root logger), so every
line is one JSON object with ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``
and ``event``, the correlation fields bound in the current context, and nothing
that looks like a secret.

Correlation fields live in :mod:`contextvars` (``structlog.contextvars``), so they
follow the code that binds them:

* across ``await`` and into tasks created inside the context (asyncio copies the
  context when it creates a task);
* into ``asyncio.to_thread(...)``, which copies the current context for the thread:
  bind *before* the call and the thread's logs carry the fields;
* into a plain thread or executor only if you carry it yourself:
  ``ctx = contextvars.copy_context(); pool.submit(ctx.run, fn, *args)``.

Usage::

    configure_logging("json", "INFO")
    log = get_logger(__name__)
    with log_context(namespace="ops", runbook="restart", execution="restart-x1"):
        log.info("step started", step="drain")
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from runbook_operator.engine.redact import Redactor
from runbook_operator.observability.secrets import SECRETS

__all__ = ["LogFormat", "bind", "configure_logging", "get_logger", "log_context", "unbind"]

LogFormat = Literal["json", "console"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# kopf's ObjectLogger puts its OperatorSettings (huge, not a fact about the event) and an
# internal flag on every record; its object reference is kept under kopf's JSON key.
_DROPPED_EXTRAS = frozenset({"settings", "k8s_skip"})
_RENAMED_EXTRAS = {"k8s_ref": "object"}
_PLAIN = (str, int, float, bool, type(None))
_HANDLER_NAME = "runbook-operator"
_LEADING = ("timestamp", "level", "logger", "event")


def configure_logging(fmt: LogFormat = "json", level: str = "INFO",
                      stream: TextIO | None = None,
                      redactor: Redactor | None = None) -> None:
    """Route structlog and the stdlib root logger through one redacting pipeline.

    ``fmt``: ``json`` (one object per line, for machines) or ``console`` (for a
    person at a terminal). ``level``: the root level, e.g. ``INFO`` or ``DEBUG``.
    ``stream``: where lines go (default: ``sys.stdout`` at call time).
    ``redactor``: the redactor of literal secrets (default: the process' one,
    :data:`~runbook_operator.observability.secrets.SECRETS`; shape-based redaction always
    applies). Calling it again replaces the previous configuration.
    """
    out = stream if stream is not None else sys.stdout
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _record_extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redaction(redactor),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (the ``logger`` field of its lines)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind(**fields: Any) -> None:
    """Add correlation fields to every line logged from the current context on."""
    structlog.contextvars.bind_contextvars(**fields)


def unbind(*names: str) -> None:
    """Remove correlation fields from the current context."""
    structlog.contextvars.unbind_contextvars(*names)


@contextmanager
def log_context(*, namespace: str | None = None, runbook: str | None = None,
                execution: str | None = None, step: str | None = None,
                attempt: int | None = None, trace_id: str | None = None,
                span_id: str | None = None, **extra: Any) -> Iterator[None]:
    """Bind correlation fields for the ``with`` block, restoring the previous ones after.

    Fields left as ``None`` are not bound (an outer context's value stays visible).
    """
    fields = {"namespace": namespace, "runbook": runbook, "execution": execution,
              "step": step, "attempt": attempt, "trace_id": trace_id, "span_id": span_id,
              **extra}
    tokens = structlog.contextvars.bind_contextvars(
        **{k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def _record_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Copy a stdlib record's ``extra=`` fields (kopf's object reference) into the event."""
    record = event_dict.get("_record")
    if record is None:
        return event_dict
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key in _DROPPED_EXTRAS or key.startswith("_"):
            continue
        event_dict.setdefault(_RENAMED_EXTRAS.get(key, key), value)
    return event_dict


def _redaction(redactor: Redactor | None) -> Processor:
    """The processor that redacts the whole event dict, just before rendering."""
    walk = (redactor if redactor is not None else SECRETS).value

    def processor(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        safe = walk(_plain(event_dict))
        if not isinstance(safe, dict):
            return {"event": str(safe)}
        head = {k: safe.pop(k) for k in _LEADING if k in safe}
        return head | safe

    return processor


def _plain(value: Any, depth: int = 0) -> Any:
    """JSON-like data only: other objects become their ``repr`` so it is redacted too."""
    if isinstance(value, _PLAIN):
        return value
    if depth > 32:
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: _plain(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


@dataclass
class LogThrottle:
    """At most one line per ``interval`` seconds for a line anyone can cause.

    An unauthenticated client can send requests as fast as it likes; a line per
    request would let it flood the log (and the disk of whoever ships it) while
    the metric already counts every one. Time is passed in, so this is pure.
    """

    interval: float = 60.0
    """Seconds between two lines that are let through."""
    _next: float = field(default=float("-inf"), init=False)
    _held: int = field(default=0, init=False)

    def allow(self, now: float) -> int | None:
        """How many lines were held back since the last one let through, or None
        if this one is held back too."""
        if now < self._next:
            self._held += 1
            return None
        held, self._held = self._held, 0
        self._next = now + self.interval
        return held
