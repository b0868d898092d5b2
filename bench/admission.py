"""What the chart's admission policies cost a request, on the local control plane.

    RBO_CLUSTER_DIR=/tmp/c python bench/admission.py [--requests 300] [--rounds 2]

The ValidatingAdmissionPolicies (charts/runbook-operator/files/
admission-policies.yaml) run CEL, and one an authorizer check, inside the API
server on every Runbook write, RunbookExecution update, and Job or pod create. This
times, with the policies off and on in alternating rounds (off, on, off, on), three
requests as the admin (standing for the operator in the step-jobs policy): a
dry-run Runbook create (runbook-writers: an authorizer check), a dry-run step Job
create with the operator's marks (step-jobs), and a label patch of an execution
(immutable-runs compares the spec). Prints p50 and p95 per request kind and round;
never asserts. Starts RBO_CLUSTER_DIR's local cluster afresh with the CRDs
(bench/engine.py's bench_cluster) and removes the policies at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from cluster import LocalCluster  # noqa: E402
from engine import bench_cluster  # noqa: E402

G, V = "runbooks.dev", "v1alpha1"
POLICIES = REPO / "charts" / "runbook-operator" / "files" / "admission-policies.yaml"


def timed(call: Callable[[int], Any], n: int) -> tuple[float, float]:
    for i in range(20):  # warm the connection and the API server's caches
        call(i)
    times = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    kubeconfig, _ = bench_cluster(None, None)  # RBO_CLUSTER_DIR's, afresh, with the CRDs
    cluster = LocalCluster(state_dir=Path(kubeconfig).parent)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    ns = f"bench-admission-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    custom.create_namespaced_custom_object(G, V, ns, "runbookexecutions", {
        "apiVersion": f"{G}/{V}", "kind": "RunbookExecution", "metadata": {"name": "x"},
        "spec": {"runbookRef": {"name": "none"}, "params": {"a": 1}}})
    policies = yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                               # the bench's own identity stands for the operator's
                               "items": yaml.safe_load(POLICIES.read_text().replace(
                                   "${OPERATOR}", "rbo-admin"))})

    def create_runbook(i: int) -> Any:
        return custom.create_namespaced_custom_object(G, V, ns, "runbooks", {
            "apiVersion": f"{G}/{V}", "kind": "Runbook", "metadata": {"name": f"r{i}"},
            "spec": {"steps": [{"name": "a", "image": "busybox"}]}}, dry_run="All")

    batch = kubernetes.client.BatchV1Api(api)
    owner = custom.get_namespaced_custom_object(G, V, ns, "runbookexecutions", "x")

    def create_step_job(i: int) -> Any:
        # What the operator creates for every step: a Job with its marks, which the
        # step-jobs policy lets through for the operator's identity only.
        marks = {"runbooks.dev/execution": "x", "runbooks.dev/step": f"s{i}"}
        return batch.create_namespaced_job(ns, {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"x-s{i}-1", "labels": marks, "ownerReferences": [{
                "apiVersion": f"{G}/{V}", "kind": "RunbookExecution", "name": "x",
                "uid": owner["metadata"]["uid"], "controller": True}]},
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": marks},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "step", "image": "busybox"}]}}}},
            dry_run="All")

    def patch_execution(i: int) -> Any:
        return custom.patch_namespaced_custom_object(G, V, ns, "runbookexecutions", "x",
                                                     {"metadata": {"labels": {"n": str(i)}}})

    try:
        for _ in range(args.rounds):
            for state in ("off", "on"):
                verb = ("apply",) if state == "on" else ("delete", "--ignore-not-found")
                cluster.kubectl(*verb, "-f", "-", input=policies)
                time.sleep(3)  # the API server picks policies up from a watch
                figures = {name: timed(call, args.requests) for name, call in
                           (("runbook create (dry run)", create_runbook),
                            ("step Job create (dry run)", create_step_job),
                            ("execution patch", patch_execution))}
                print(f"policies {state:3}: " + "; ".join(
                    f"{name} p50 {p50:.2f} ms p95 {p95:.2f} ms"
                    for name, (p50, p95) in figures.items()))
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=policies)
        core.delete_namespace(ns)


if __name__ == "__main__":
    main()
