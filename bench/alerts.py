"""Alert receiver benchmark: a burst of webhook posts, against a floor, on one cluster.

    python bench/alerts.py [--posts 1000] [--unique 200] [--per-post 5] [--clients 8]
                           [--decoys 500] [--kubeconfig PATH]

Runs on the local control plane (started for the run unless --kubeconfig names a
running cluster), with the operator as a real process serving its receiver.
Each round posts ``--posts`` Alertmanager v4 notifications of ``--per-post`` alerts
from ``--clients`` threads at once: ``--unique`` distinct occurrences across four
runbooks (each sent at least once), the rest repeats of them, as an HA pair and
``repeat_interval`` produce. It prints posts per second and the handling time per
post as the client sees it (p50/p95/p99), how many executions exist afterwards (it
must be ``--unique``) and the receiver's own counts by outcome.

Rounds, in one run, each in a fresh namespace:

1. the receiver, with only the four runbooks that have triggers;
2. the receiver again, with ``--decoys`` more Runbooks with triggers for other
   alerts (handling time should not grow with the number of Runbooks);
3. the floor: a minimal driver with no receiver creating the same executions
   straight through the API (one create per delivered alert, 409 for repeats) from
   the same number of clients: what any receiver must pay.

Steps are approval steps, so executions start but no Job runs: the figures measure
the receiver and the API server, not the workload. Figures only; nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "operator"))

from engine import bench_cluster, make_namespace  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402
from runbook_operator.engine.alerts import (  # noqa: E402
    occurrence_name,
    parse_notification,
)

GROUP, VERSION = "runbooks.dev", "v1alpha1"
RUNBOOKS = ("mem", "errors", "ai", "db")


def workload(namespace: str, posts: int, unique: int, per_post: int,
             seed: int = 9) -> list[dict[str, Any]]:
    alerts = [{"status": "firing",
               "labels": {"alertname": f"Bench{RUNBOOKS[i % 4]}", "namespace": namespace,
                          "service": f"svc-{i}"},
               "annotations": {"value": "0.97"},
               "startsAt": f"2026-12-01T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
               "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
               "fingerprint": f"{i:08x}"} for i in range(unique)]
    rng = random.Random(seed)

    def notification(batch: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": "4", "status": "firing", "receiver": "runbook-operator",
                "groupKey": '{}:{alertname="bench"}', "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {},
                "externalURL": f"http://am-{rng.randint(0, 1)}", "truncatedAlerts": 0,
                "alerts": batch}

    first = [notification(alerts[i:i + per_post]) for i in range(0, unique, per_post)]
    rest = [notification(rng.sample(alerts, min(per_post, unique)))
            for _ in range(max(0, posts - len(first)))]
    bodies = first + rest
    rng.shuffle(bodies)
    return bodies


def runbook(namespace: str, name: str, alertname: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"triggers": {"alerts": [{"match": [f'alertname="{alertname}"',
                                                        f'namespace="{namespace}"'],
                                              "params": {"service": "alert.labels.service"}}]},
                     "params": [{"name": "service"}],
                     "steps": [{"name": "hold", "type": "approval"}]}}


def wait_indexed(op: OperatorProcess, namespace: str) -> None:
    """Post until every bench runbook is matched (the operator has seen them)."""
    probe = {"version": "4", "status": "firing", "receiver": "r", "groupKey": "probe",
             "alerts": [{"status": "resolved", "labels": {"alertname": f"Bench{r}",
                                                          "namespace": namespace},
                         "startsAt": "2000-01-01T00:00:00Z", "fingerprint": "0"}
                        for r in RUNBOOKS]}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, answer = post(op, probe)
        if status == 200 and answer.get("outcomes", {}).get("unmatched", 0) == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("the operator never indexed the bench runbooks")


def post(op: OperatorProcess, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        op.alerts_url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {op.alerts_token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def timed(fn: Any, bodies: list[dict[str, Any]], clients: int
          ) -> tuple[float, list[float], list[Any]]:
    def one(body: dict[str, Any]) -> tuple[float, Any]:
        started = time.perf_counter()
        result = fn(body)
        return time.perf_counter() - started, result

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, bodies))
    return time.perf_counter() - started, [r[0] for r in results], [r[1] for r in results]


def percentiles(values: list[float]) -> str:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"


def count_executions(api: kubernetes.client.ApiClient, namespace: str) -> int:
    items = kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "runbookexecutions")["items"]
    return len(items)


def receiver_round(api: kubernetes.client.ApiClient, op: OperatorProcess,
                   args: argparse.Namespace, decoys: int) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    namespace = make_namespace(api, "bench-alerts")
    for i in range(decoys):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "runbooks",
                                               runbook(namespace, f"decoy-{i}", f"Decoy{i}"))
    for name in RUNBOOKS:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "runbooks",
                                               runbook(namespace, name, f"Bench{name}"))
    wait_indexed(op, namespace)
    bodies = workload(namespace, args.posts, args.unique, args.per_post)
    elapsed, times, answers = timed(lambda b: post(op, b), bodies, args.clients)
    outcomes: dict[str, int] = {}
    codes: dict[int, int] = {}
    for status, answer in answers:
        codes[status] = codes.get(status, 0) + 1
        for key, value in answer.get("outcomes", {}).items():
            outcomes[key] = outcomes.get(key, 0) + value
    return {"elapsed": elapsed, "times": times, "outcomes": outcomes, "codes": codes,
            "executions": count_executions(api, namespace), "namespace": namespace}


def floor_round(api: kubernetes.client.ApiClient, args: argparse.Namespace) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    namespace = make_namespace(api, "bench-alerts-floor")
    for name in RUNBOOKS:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "runbooks",
                                               runbook(namespace, name, f"Bench{name}"))
    bodies = workload(namespace, args.posts, args.unique, args.per_post)

    def deliver(body: dict[str, Any]) -> int:
        created = 0
        for alert in parse_notification(json.dumps(body).encode()).alerts:
            rb = alert.labels["alertname"].removeprefix("Bench")
            name = occurrence_name(rb, alert.fingerprint, alert.starts_ns)
            try:
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                       "runbookexecutions", {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
                    "metadata": {"name": name},
                    "spec": {"runbookRef": {"name": rb},
                             "params": {"service": alert.labels["service"]}}})
                created += 1
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return created

    elapsed, times, created = timed(deliver, bodies, args.clients)
    return {"elapsed": elapsed, "times": times, "created": sum(created),
            "executions": count_executions(api, namespace), "namespace": namespace}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--unique", type=int, default=200)
    parser.add_argument("--per-post", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--decoys", type=int, default=500)
    parser.add_argument("--kubeconfig", help="a running cluster (default: start the local one)")
    args = parser.parse_args(argv)

    kubeconfig, _ = bench_cluster(args.kubeconfig, None)  # the Job controller as it comes
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    op = OperatorProcess(Path(kubeconfig), Path("/tmp/rbo-bench-alerts-operator"),
                         alerts_token=f"bench-{uuid.uuid4().hex}")
    op.start()
    try:
        rounds = [("receiver", receiver_round(api, op, args, 0))]
        if args.decoys:
            rounds.append((f"receiver, +{args.decoys} runbooks",
                           receiver_round(api, op, args, args.decoys)))
    finally:
        op.stop()
    floor = floor_round(api, args)

    print(f"# alert receiver benchmark: {args.posts} posts x {args.per_post} alerts, "
          f"{args.unique} unique occurrences over {len(RUNBOOKS)} runbooks, "
          f"{args.clients} clients at once")
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok; operator and API "
          "server on the same machine as the clients")
    for label, r in rounds:
        print(f"{label:28s} {args.posts / r['elapsed']:7.0f} posts/s; per post "
              f"{percentiles(r['times'])}; executions {r['executions']}/{args.unique}; "
              f"HTTP {r['codes']}; outcomes {r['outcomes']}")
    print(f"{'floor (direct API creates)':28s} {args.posts / floor['elapsed']:7.0f} posts/s; "
          f"per post {percentiles(floor['times'])}; executions "
          f"{floor['executions']}/{args.unique}")
    ratio = floor["elapsed"] / rounds[0][1]["elapsed"]
    print(f"receiver throughput vs floor: {ratio:.2f}x")
    return 0  # a local cluster is left running; `python hack/cluster.py down` stops it


if __name__ == "__main__":
    sys.exit(main())
