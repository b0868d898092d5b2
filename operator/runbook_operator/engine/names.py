"""Deterministic names of the objects an execution creates.

A Job's name is a function of (execution, step, attempt) alone, so creating it
twice is harmless (the second create gets 409) and a restarted operator finds
the Jobs of the previous process. Names fit the 63 characters a Job name may
have (it becomes a label value on its pods).
"""

from __future__ import annotations

import hashlib

MAX_NAME = 63


def job_name(execution: str, step: str, attempt: int) -> str:
    """``<execution>-<step>-<attempt>``, shortened with a hash when too long."""
    full = f"{execution}-{step}-{attempt}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    tail = f"-{digest}-{attempt}"
    head = full[: MAX_NAME - len(tail)].rstrip("-.")
    return head + tail
