"""Command-line entry points: ``runbook-operator`` and ``kubectl-runbook``."""
