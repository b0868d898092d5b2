"""Timestamps in status: RFC 3339 UTC strings with milliseconds, parsed back exactly."""

from __future__ import annotations

from datetime import UTC, datetime


def fmt(moment: datetime) -> str:
    """``2026-11-27T10:57:37.123Z``; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse(text: str | None) -> datetime | None:
    """Parse RFC 3339 (``Z`` or an offset, with or without fraction); None stays None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
