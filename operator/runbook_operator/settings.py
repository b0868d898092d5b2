"""Operator settings: one dataclass, filled from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass, field

from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.query_sources import Source, parse_sources


@dataclass
class OperatorSettings:
    """How the operator process runs."""

    namespaces: list[str] = field(default_factory=list)
    """Namespaces to watch; empty means the whole cluster."""
    kubeconfig: str | None = None
    """Path of a kubeconfig; default: in-cluster config, else ``$KUBECONFIG``."""
    health_address: str = "0.0.0.0"
    """Where the liveness endpoint listens."""
    health_port: int = 8080
    """Port of ``/healthz``."""
    log_format: str = "json"
    """``json`` (one object per line) or ``console`` (for humans at a terminal)."""
    log_level: str = "INFO"
    """Root log level."""
    events: bool = True
    """Post a Kubernetes Event per transition (the status history is kept either way)."""
    workers: int = 8
    """Executions reconciled at once (threads: each pass waits on the apiserver)."""
    job_ttl_seconds: int = 3600
    """``ttlSecondsAfterFinished`` of step Jobs: finished pods do not pile up."""
    watch_inactivity_timeout: float = 70.0
    """Seconds without any watch event or bookmark before a stream is presumed dead and
    reopened (kopf's default; the apiserver sends a bookmark about once a minute)."""
    list_chunk_size: int = 100
    """Objects per page of the initial listings (and relistings): memory at start grows
    with one page, not with every execution and Job the cluster holds."""
    privileged_namespaces: list[str] = field(default_factory=list)
    """Namespaces whose Runbooks may have privileged steps (root, privileged, added
    capabilities...); none by default."""
    runner_service_accounts: list[str] = field(default_factory=lambda: ["runbook-runner"])
    """Service accounts step pods may run as; default: the chart's runner account."""
    max_reconcile_failures: int = 5
    """The same error this many times in a row fails an execution (InternalError)."""
    prestage: bool = True
    """Create a step's first Job gated once its dependencies have started, and lift the
    gate when they end (``engine.staging``); off for a ResourceQuota counting gated pods."""

    alerts_address: str = "0.0.0.0"
    """Where the Alertmanager webhook receiver listens."""
    alerts_port: int = 9095
    """Port of the receiver (``POST /alerts``), separate from health and metrics."""
    alerts_token_file: str | None = None
    """File holding the bearer token Alertmanager must send (a mounted Secret key); re-read
    when it changes. None: the receiver is off, never open."""
    alerts_max_body_bytes: int = 1 << 20
    """Webhook bodies larger than this are refused with 413."""

    leader_elect: bool = False
    """Act only while holding the Lease ``leader_elect_namespace/leader_elect_name``, so
    that several replicas can run (all watch and serve; one reconciles)."""
    leader_elect_namespace: str = "default"
    """Namespace of the leader-election Lease (the chart: the release namespace)."""
    leader_elect_name: str = "runbook-operator"
    """Name of the leader-election Lease."""
    leader_elect_identity: str = ""
    """This replica's identity in the Lease (the chart: the pod name); default: host name
    and process id."""

    query_sources: list[str] = field(default_factory=list)
    """``--query-source`` values: the Prometheus sources query steps may name
    (``engine.query_sources``); a bad one stops the operator at start."""

    def sources(self) -> dict[str, Source]:
        """The named Prometheus sources; raises ``SourceError`` on a bad definition."""
        return parse_sources(self.query_sources)

    def security(self) -> SecurityPolicy:
        """The allowances the engine's pod-security checks are given."""
        return SecurityPolicy(privileged_namespaces=frozenset(self.privileged_namespaces),
                              runner_accounts=frozenset(self.runner_service_accounts))
