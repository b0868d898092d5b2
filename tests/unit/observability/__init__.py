"""Tests of runbook_operator.observability and deploy/monitoring."""
