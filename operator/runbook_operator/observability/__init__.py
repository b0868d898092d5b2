"""Observability: redacted structured logs, Prometheus metrics and OpenTelemetry traces.

``logs`` gives the whole process one JSON log pipeline with correlation fields,
``metrics`` owns the Prometheus series that ``deploy/monitoring/`` charts and alerts
on, ``tracing`` the spans of executions and step attempts. All of them redact
through ``engine.redact``. The submodules are imported explicitly
(``from runbook_operator.observability.logs import ...``) so importing one does not
pull in the others' dependencies.
"""
