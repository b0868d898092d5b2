"""Deterministic names of the objects an execution creates.

A Job's name is a function of (execution, step, attempt) alone, so creating it
twice is harmless (the second create gets 409) and a restarted operator finds
the Jobs of the previous process. Names fit the 63 characters a Job name may
have (it becomes a label value on its pods).

Execution and Runbook names may have 253 characters, label values 63: a name
copied into a label is shortened with a hash of the whole name (the full name
goes into an annotation beside it), so two long names never share a label value.
"""

from __future__ import annotations

import hashlib

MAX_NAME = 63
MAX_LABEL_VALUE = 63
MAX_OBJECT_NAME = 253


def job_name(execution: str, step: str, attempt: int) -> str:
    """``<execution>-<step>-<attempt>``, shortened with a hash when too long."""
    full = f"{execution}-{step}-{attempt}"
    if len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    tail = f"-{digest}-{attempt}"
    head = full[: MAX_NAME - len(tail)].rstrip("-.")
    return head + tail


def label_value(name: str) -> str:
    """``name`` as a label value: itself up to 63 characters, else its head and a hash.

    Deterministic, so a label selector built from the same name finds every object.
    """
    if len(name) <= MAX_LABEL_VALUE:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    head = name[: MAX_LABEL_VALUE - len(digest) - 1].rstrip("-._")
    return f"{head}-{digest}"


def generate_prefix(name: str, suffix: str) -> str:
    """A ``generateName`` prefix ``<name><suffix>`` that leaves room for the server's 5
    random characters within an object name's 253."""
    room = MAX_OBJECT_NAME - 5 - len(suffix)
    return name[:room].rstrip("-.") + suffix
