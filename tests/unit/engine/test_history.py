"""Appending to a raw execution status's history (engine/history.py).

Cases: an entry is appended after the existing ones; a missing or malformed
history starts empty; at the bound the oldest entries go and historyDropped counts
them on top of what was already dropped; the input status is not changed.
"""

from __future__ import annotations

from runbook_operator.api.execution import MAX_HISTORY
from runbook_operator.engine.history import appended


def test_appends_after_existing_entries() -> None:
    status = {"history": [{"event": "A"}]}
    assert appended(status, {"event": "B"}) == {"history": [{"event": "A"}, {"event": "B"}]}
    assert status == {"history": [{"event": "A"}]}


def test_missing_or_malformed_history_starts_empty() -> None:
    assert appended({}, {"event": "B"}) == {"history": [{"event": "B"}]}
    assert appended({"history": "junk"}, {"event": "B"}) == {"history": [{"event": "B"}]}


def test_at_the_bound_the_oldest_go_and_are_counted() -> None:
    full = {"history": [{"n": i} for i in range(MAX_HISTORY)], "historyDropped": 7}
    patch = appended(full, {"n": "new"})
    assert len(patch["history"]) == MAX_HISTORY
    assert patch["history"][0] == {"n": 1} and patch["history"][-1] == {"n": "new"}
    assert patch["historyDropped"] == 8
