"""Admission of a starting execution under its Runbook's ``spec.concurrency``.

Why it exists: starting, queueing, refusing or replacing by concurrency is a
decision of ``engine/concurrency.py``; this module gathers what it needs from the
store (the peers: running and queued executions of the same runbook and key),
and carries out what it decided (a cancel requested of a replaced run).
``Admission`` is a mixin of ``ExecutionReconciler``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from runbook_operator.api.execution import (
    RunbookExecution,
    RunbookExecutionStatus,
    RunbookRefStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.concurrency import Peer, admitted, concurrency_key, decide
from runbook_operator.engine.params import resolve_params
from runbook_operator.engine.severity import severity_of
from runbook_operator.engine.start import failed_status
from runbook_operator.k8s.client import retrying
from runbook_operator.k8s.store import Key

if TYPE_CHECKING:
    from runbook_operator.k8s.store import Store


class Admission:
    """Concurrency admission of a starting execution (a mixin of ``ExecutionReconciler``)."""

    if TYPE_CHECKING:
        store: Store
        clock: Callable[[], datetime]

        def _patch(self, namespace: str, name: str, payload: dict[str, Any]
                   ) -> dict[str, Any]: ...

    def admit_concurrency(self, body: dict[str, Any], execution: RunbookExecution,
                          spec: RunbookSpec, status: RunbookExecutionStatus
                          ) -> RunbookExecutionStatus:
        """Start, queue, refuse, or replace the running ones (``spec.concurrency``)."""
        assert spec.concurrency is not None
        namespace, name = execution.metadata.namespace or "", execution.metadata.name
        runbook = execution.spec.runbook_ref.name
        params, _ = resolve_params(spec.params, execution.spec.params)
        key, problem = concurrency_key(spec.concurrency, params)
        if problem is not None:
            return failed_status("ExpressionError", problem, self.clock(),
                                 status.runbook or RunbookRefStatus(name=runbook))
        me = Peer(name, False, execution.metadata.creation_timestamp or "",
                  severity_of(execution.spec.to_k8s()))
        decision = decide(spec.concurrency, me, self.peers(namespace, runbook, key, name))
        for other in decision.replace:
            self.request_cancel(namespace, other, f"replaced by {name}", "Replaced")
        return admitted(decision, status, key, self.clock(), runbook)

    def peers(self, namespace: str, runbook: str, key: str, me: str) -> list[Peer]:
        """Running and queued executions of the same runbook and key, from the store."""
        out = []
        for (ns, name), other in list(self.store.executions.items()):
            status = other.get("status") or {}
            if ns != namespace or name == me or status.get("concurrencyKey") != key or \
                    ((other.get("spec") or {}).get("runbookRef") or {}).get("name") != runbook:
                continue
            phase = status.get("phase")
            if phase in ("Running", "WaitingForApproval", "Queued"):
                out.append(Peer(name, phase != "Queued",
                                (other.get("metadata") or {}).get("creationTimestamp", ""),
                                severity_of(other.get("spec"))))
        return out

    def queued_peers(self, namespace: str, runbook: str) -> list[Key]:
        return [k for k, other in list(self.store.executions.items())
                if k[0] == namespace and (other.get("status") or {}).get("phase") == "Queued"
                and ((other.get("spec") or {}).get("runbookRef") or {}).get("name") == runbook]

    @retrying
    def request_cancel(self, namespace: str, name: str, why: str, reason: str) -> None:
        """Ask a running execution to cancel itself, through its status (never its spec).

        It ends ``Cancelled`` with ``reason`` and ``why`` as its message.
        """
        try:
            self._patch(namespace, name, {"status": {"cancelRequested": why,
                                                     "cancelReason": reason}})
        except ApiException as exc:
            if exc.status != 404:
                raise
