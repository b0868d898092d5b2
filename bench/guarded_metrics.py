"""Does the event loop stay free while guarded executions hammer a failing target?

    RBO_CLUSTER_DIR=/tmp/rbo-bench python bench/guarded_metrics.py \
        [--executions 50] [--workers 8] [--interval 0.05] [--kubeconfig PATH]

Why it exists: a guarded pass used to hold one process-wide lock across its API
calls, and the event loop took the same lock, so ``/metrics`` and ``/healthz``
stalled while a guarded pass retried a POST (issue 11). This benchmark shows the
loop stays responsive: it starts a fresh operator on the local control plane
(kwok plays the pods), creates ``--executions`` executions at once of a runbook
whose one step is guarded by a CircuitPolicy (bulkhead of 10, opens when 60
calls have all failed, for 3 s, one HalfOpen trial) and fails every time
(exit code 1 after 1 s, three retries 1 s apart: the first 60 calls queue
for the bulkhead, the later ones are refused by the open circuit), and scrapes ``/metrics`` every
``--interval`` seconds from the first execution created to the last one finished.
It prints the scrape latency percentiles (target: p99 < 100 ms) with the
conditions: cores, load average, the operator's worker threads. Figures, never
assertions.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

sys.path.insert(0, str(REPO / "bench"))

from cluster import LocalCluster  # noqa: E402
from engine import load, make_namespace, wait_established  # noqa: E402  (bench/engine.py)
from operator_process import OperatorProcess  # noqa: E402

GROUP, VERSION = "runbooks.dev", "v1alpha1"
OUTCOME = "kwok.runbooks.dev/"
FINISHED = ("Succeeded", "Failed", "Cancelled")


def local_cluster(kubeconfig: str | None) -> str:
    """``--kubeconfig``, else RBO_CLUSTER_DIR's local control plane (started, CRDs applied)."""
    if kubeconfig is not None:
        return kubeconfig
    cluster = LocalCluster(state_dir=Path(os.environ.get("RBO_CLUSTER_DIR", "/tmp/rbo-bench")))
    if not cluster.is_up():
        cluster.up()
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    wait_established(cluster)
    return str(cluster.kubeconfig)


def create(custom: kubernetes.client.CustomObjectsApi, ns: str, plural: str, kind: str,
           name: str, spec: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name},
        "spec": spec})


def scrape(port: int, every: float, stop: threading.Event, latencies: list[float],
           errors: list[str]) -> None:
    url = f"http://127.0.0.1:{port}/metrics"
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
            latencies.append(time.perf_counter() - started)
        except OSError as exc:
            errors.append(str(exc))
        stop.wait(every)


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100, method="inclusive")
    return (f"p50 {q[49] * 1000:.1f} ms, p95 {q[94] * 1000:.1f} ms, "
            f"p99 {q[98] * 1000:.1f} ms, max {max(values) * 1000:.1f} ms (n={len(values)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--kubeconfig")
    args = parser.parse_args(argv)

    kubeconfig = local_cluster(args.kubeconfig)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    custom = kubernetes.client.CustomObjectsApi(api)
    ns = make_namespace(api, "bench-guarded")
    create(custom, ns, "circuitpolicies", "CircuitPolicy", "target", {
        "slidingWindow": {"type": "Count", "size": 100}, "minimumCalls": 60,
        "failureRateThreshold": 100, "openDuration": "3s", "halfOpen": {"permittedCalls": 1},
        "bulkhead": {"maxConcurrent": 10}})
    create(custom, ns, "runbooks", "Runbook", "flaky", {"steps": [{
        "name": "call", "image": "busybox:1.37", "command": ["sh", "-c", "exit 1"],
        "circuit": {"policy": "target", "onOpen": "Fail"},
        "retry": {"limit": 3, "backoff": {"initial": "1s", "factor": 1, "jitter": 0}},
        "podMetadata": {"annotations": {OUTCOME + "exit-code": "1",
                                        OUTCOME + "duration": "1s"}}}]})
    op = OperatorProcess(Path(kubeconfig), Path("/tmp/rbo-bench-guarded"),
                         extra_args=["--workers", str(args.workers)])
    op.start()
    time.sleep(2.0)  # the policy and runbook reach the operator's watches
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    scraper = threading.Thread(target=scrape, args=(op.port, args.interval, stop, latencies,
                                                    errors), daemon=True)
    load_before = load()
    phases: dict[str, str] = {}
    try:
        scraper.start()
        t0 = time.monotonic()
        names = [f"run-{i}" for i in range(args.executions)]
        for name in names:
            create(custom, ns, "runbookexecutions", "RunbookExecution", name,
                   {"runbookRef": {"name": "flaky"}})
        while time.monotonic() - t0 < args.timeout:
            listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                          "runbookexecutions")
            phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "")
                      for i in listed["items"]}
            if len(phases) == len(names) and all(p in FINISHED for p in phases.values()):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        scraper.join(timeout=60)
        op.stop()
    reasons: Counter[str] = Counter()
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                     "runbookexecutions")["items"]:
        step = ((item.get("status") or {}).get("steps") or {}).get("call") or {}
        reasons[f"{step.get('phase')}/{step.get('reason')}"] += 1
    print(f"# {args.executions} guarded executions against a failing target, /metrics "
          f"scraped every {args.interval * 1000:.0f} ms throughout")
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok; operator "
          f"--workers {args.workers} ({args.workers + 4} threads in its pool)")
    print(f"# {load_before} before, {load()} after")
    print(f"finished {sum(p in FINISHED for p in phases.values())}/{args.executions} "
          f"in {elapsed:.1f} s; steps: {dict(sorted(reasons.items()))}")
    print(f"/metrics latency: {quantiles(latencies)}; {len(errors)} failed scrapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
