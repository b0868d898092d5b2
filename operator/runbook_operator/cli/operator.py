"""``runbook-operator``: run the operator, or write the CRDs.

    runbook-operator run [--namespace NS ...] [--kubeconfig PATH]
    runbook-operator crds [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from runbook_operator.engine.query_sources import SourceError
from runbook_operator.settings import OperatorSettings


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``runbook-operator`` (docs/reference/operator.md is made from it)."""
    parser = argparse.ArgumentParser(prog="runbook-operator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("-n", "--namespace", action="append", default=[],
                     help="namespace to watch (repeatable); default: all namespaces")
    run.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, $KUBECONFIG)")
    run.add_argument("--health-port", type=int, default=8080, help="port of /healthz and /metrics")
    run.add_argument("--log-format", choices=["json", "console"], default="json",
                     help="one JSON object per line, or console lines for a terminal")
    run.add_argument("--log-level", default="INFO",
                     help="root log level: DEBUG, INFO, WARNING, ERROR (default INFO)")
    run.add_argument("--workers", type=int, default=8,
                     help="executions reconciled at once (default 8)")
    run.add_argument("--no-events", action="store_true",
                     help="post no Kubernetes Events (each execution's status history stays)")
    run.add_argument("--watch-inactivity-timeout", type=float, default=70.0, metavar="SECONDS",
                     help="reopen a watch that has been silent this long (default 70)")
    run.add_argument("--list-chunk-size", type=int, default=100, metavar="N",
                     help="objects per page of the initial listings (default 100)")
    run.add_argument("--allow-privileged-namespace", action="append", default=[], metavar="NS",
                     help="let Runbooks in NS have privileged steps (repeatable; default: none)")
    run.add_argument("--runner-service-account", action="append", default=None,
                     metavar="NAME", help="a service account step pods may run as "
                     "(repeatable; default: runbook-runner)")
    run.add_argument("--prestage", type=_flag, default=True, metavar="true|false",
                     help="create a step's first Job gated once its dependencies have "
                     "started, and lift the gate when they end (default true; false for "
                     "a ResourceQuota that counts gated pods)")
    run.add_argument("--max-reconcile-failures", type=int, default=5, metavar="N",
                     help="fail an execution whose reconcile raised the same error N times "
                     "in a row (default 5)")
    run.add_argument("--alerts-port", type=int, default=9095, metavar="PORT",
                     help="port of the Alertmanager webhook receiver, POST /alerts (default 9095)")
    run.add_argument("--alerts-address", default="0.0.0.0", metavar="ADDRESS",
                     help="address the receiver listens on (default 0.0.0.0)")
    run.add_argument("--alerts-token-file", metavar="PATH",
                     help="file holding the bearer token Alertmanager sends (a mounted "
                     "Secret key); without it the receiver is off")
    run.add_argument("--alerts-max-body-bytes", type=int, default=1 << 20, metavar="N",
                     help="refuse webhook bodies larger than N bytes with 413 (default 1 MiB)")
    run.add_argument("--leader-elect", action="store_true",
                     help="run as one of several replicas: act only while holding a Lease")
    run.add_argument("--leader-elect-namespace", default=os.environ.get("POD_NAMESPACE",
                                                                        "default"),
                     metavar="NS", help="namespace of the Lease (default: $POD_NAMESPACE, "
                     "else default)")
    run.add_argument("--leader-elect-name", default="runbook-operator", metavar="NAME",
                     help="name of the Lease (default runbook-operator)")
    run.add_argument("--leader-elect-identity", default=os.environ.get("POD_NAME", ""),
                     metavar="ID", help="this replica's identity (default: $POD_NAME, else "
                     "host name and pid)")
    run.add_argument("--query-source", action="append", default=[], metavar="SPEC",
                     help="a Prometheus query steps may use: name=N,url=U[,tokenFile=F]"
                     "[,caFile=F][,namespaces=a|b] (repeatable; none: query steps fail "
                     "UnknownSource)")
    crds = sub.add_parser("crds", help="write the CRD YAML generated from the API models")
    crds.add_argument("-o", "--output", default="crds", help="directory (default: crds)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    if args.command == "crds":
        from runbook_operator.api.crdgen import write_all

        for path in write_all(Path(args.output)):
            print(path)
        return 0

    settings = OperatorSettings(
        namespaces=args.namespace, kubeconfig=args.kubeconfig, health_port=args.health_port,
        log_format=args.log_format, log_level=args.log_level, events=not args.no_events,
        workers=args.workers, watch_inactivity_timeout=args.watch_inactivity_timeout,
        list_chunk_size=args.list_chunk_size,
        privileged_namespaces=args.allow_privileged_namespace,
        runner_service_accounts=args.runner_service_account or ["runbook-runner"],
        max_reconcile_failures=args.max_reconcile_failures, prestage=args.prestage,
        alerts_port=args.alerts_port, alerts_address=args.alerts_address,
        alerts_token_file=args.alerts_token_file,
        alerts_max_body_bytes=args.alerts_max_body_bytes,
        leader_elect=args.leader_elect, leader_elect_namespace=args.leader_elect_namespace,
        leader_elect_name=args.leader_elect_name,
        leader_elect_identity=args.leader_elect_identity,
        query_sources=args.query_source,
    )
    try:
        settings.sources()  # a bad --query-source stops here, with what is wrong
    except SourceError as exc:
        parser.error(str(exc))
    return run_operator(settings)


def _flag(text: str) -> bool:
    """``true`` or ``false`` (a flag whose default is on: ``--prestage=false``)."""
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
    return value == "true"


def run_operator(settings: OperatorSettings) -> int:
    from runbook_operator.controllers.main import ClusterUnreachable, check_cluster, serve
    from runbook_operator.observability.logs import configure_logging

    configure_logging(settings.log_format, settings.log_level)  # type: ignore[arg-type]
    try:
        configuration = check_cluster(settings)
    except ClusterUnreachable as exc:
        print(f"runbook-operator: cannot reach the Kubernetes API: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings, configuration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
