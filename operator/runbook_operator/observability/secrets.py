"""The process' one redactor: every running execution's secret values.

Why it exists here and not in the engine: it is state of the operator process, which
the shell mutates (a replica learns a run's secrets from its watch event, forgets
them when the run ends), while ``engine.redact`` stays pure. Logs, Events, status
messages and span attributes all go through it.
"""

from __future__ import annotations

from runbook_operator.engine.redact import Redactor

SECRETS = Redactor()
"""Learns and forgets literal secrets per owner (an execution's key)."""
