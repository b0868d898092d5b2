"""Retry arithmetic: when may attempt ``n + 1`` start after attempt ``n`` failed.

Jitter is drawn from a hash of (execution uid, step, attempt) rather than a
random generator, so the delay is the same on every pass and after a restart:
a restart mid-wait neither skips nor shortens it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from runbook_operator.api.common import parse_duration
from runbook_operator.api.runbook import Backoff, Retry


def unit_jitter(seed: str) -> float:
    """A value in [-1, 1], fixed for a given seed."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / float(2**64 - 1) * 2.0 - 1.0


def delay(backoff: Backoff, failed_attempt: int, seed: str) -> timedelta:
    """The wait after failed attempt ``failed_attempt`` (1-based).

    ``initial * factor**(n-1)`` capped at ``max``, then scaled by ``1 + jitter*u``
    with ``u`` in [-1, 1]; never negative.
    """
    initial = parse_duration(backoff.initial).total_seconds()
    cap = parse_duration(backoff.max).total_seconds()
    exponent = max(0, failed_attempt - 1)
    try:
        base = min(initial * backoff.factor**exponent, cap)
    except OverflowError:
        base = cap
    seconds = max(0.0, base * (1.0 + backoff.jitter * unit_jitter(seed)))
    return timedelta(seconds=seconds)


def should_retry(retry: Retry | None, attempt: int, exit_code: int | None, timed_out: bool) -> bool:
    """Whether a failed ``attempt`` (1-based) earns another one under ``retry``."""
    if retry is None or attempt > retry.limit:
        return False
    if retry.on is None:
        return True
    if timed_out:
        return retry.on.timeouts
    return retry.on.exit_codes is not None and exit_code in retry.on.exit_codes


def next_attempt_at(retry: Retry, failed_attempt: int, failed_at: datetime, seed: str) -> datetime:
    return failed_at + delay(retry.backoff, failed_attempt, seed)
