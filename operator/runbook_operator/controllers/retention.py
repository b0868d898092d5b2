"""Retention: delete the finished executions a Runbook's history limits let go.

Why it exists: which ones is decided by ``engine/retention.py``; this module only
reads the store and deletes. ``Retention`` is a mixin of ``ExecutionReconciler``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kubernetes.client.exceptions import ApiException

from runbook_operator.api.common import EXECUTIONS, GROUP, VERSION
from runbook_operator.engine import retention
from runbook_operator.k8s.client import retrying

if TYPE_CHECKING:
    from runbook_operator.k8s.client import Clients
    from runbook_operator.k8s.store import Store

log = logging.getLogger("runbook_operator.executions")

PLURAL = EXECUTIONS


class Retention:
    """Deletes what ``engine.retention`` selects (a mixin of ``ExecutionReconciler``)."""

    if TYPE_CHECKING:
        clients: Clients
        store: Store

    def apply_retention(self, namespace: str, runbook: str) -> None:
        """Delete what the Runbook's history limits let go (``engine.retention``)."""
        rb = self.store.runbooks.get((namespace, runbook))
        for name in retention.expired(((rb or {}).get("spec") or {}).get("history"),
                                      namespace, runbook, list(self.store.executions.values())):
            self.delete_execution(namespace, name)

    @retrying
    def delete_execution(self, namespace: str, name: str) -> None:
        try:
            self.clients.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
            log.info("retention: deleted execution %s/%s", namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                raise
