"""Observability: redacted structured logs and Prometheus metrics.

``redact`` keeps secrets out of everything the operator emits, ``logs`` gives the
whole process one JSON log pipeline with correlation fields, ``metrics`` owns the
Prometheus series that ``deploy/monitoring/`` charts and alerts on. The submodules
are imported explicitly (``from runbook_operator.observability.logs import ...``)
so importing one does not pull in the others' dependencies.
"""
