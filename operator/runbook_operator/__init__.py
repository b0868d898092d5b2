"""Runbook Operator: operational runbooks as Kubernetes objects.

Layers import only downward: ``cli`` and ``controllers`` (the imperative shell)
use ``k8s``, ``observability``, ``triggers`` and ``notify``; all of them use
``engine`` (pure decisions, no I/O, time passed in) and ``api`` (the pydantic
models, the one source of truth for the CRDs).
"""

__version__ = "0.1.0"
