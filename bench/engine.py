"""Engine benchmark: N executions of a fan-out/join DAG against the floor, on one cluster.

    python bench/engine.py [--executions 100] [--branches 4] [--kubeconfig PATH]

Runs on the local control plane (started for the run unless --kubeconfig names a
running cluster). Two phases in the same run, each in its own namespace:

1. the operator: N RunbookExecutions created at once of a runbook
   ``start -> b1..bK -> join`` (K+2 steps), run to completion;
2. the floor: a minimal driver with no engine that creates the same Jobs in the
   same order, reacting to Job watch events.

For both it prints executions per minute and step transition latency
(dependency finished -> dependent Job created, both as seen by one Job watch in
this process), plus, for the operator, apiserver requests per step by verb and
resource (deltas of ``apiserver_request_total``), operator CPU seconds and peak
RSS. Kwok finishes every pod at once, so the figures measure the control loop,
not the workload.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

from cluster import LocalCluster  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

GROUP, VERSION = "runbooks.dev", "v1alpha1"


# -- observation -------------------------------------------------------------------------


@dataclass
class JobClock:
    """Local receipt times of Job creations and completions, from one watch."""

    created: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    listeners: list[Any] = field(default_factory=list)

    def run(self, api: kubernetes.client.ApiClient, namespace: str, ready: threading.Event) -> None:
        batch = kubernetes.client.BatchV1Api(api)
        rv = batch.list_namespaced_job(namespace).metadata.resource_version
        ready.set()
        while not self.stop.is_set():
            try:
                for ev in kubernetes.watch.Watch().stream(
                        batch.list_namespaced_job, namespace, resource_version=rv,
                        timeout_seconds=10, _preload_content=True):
                    now = time.monotonic()
                    job = ev["object"]
                    rv = job.metadata.resource_version
                    name = job.metadata.name
                    done = any(c.type == "Complete" and c.status == "True"
                               for c in (job.status.conditions or []))
                    with self.lock:
                        self.created.setdefault(name, now)
                        self.labels.setdefault(name, job.metadata.labels or {})
                        newly_done = done and name not in self.finished
                        if newly_done:
                            self.finished[name] = now
                    if newly_done:
                        for listener in self.listeners:
                            listener(name, job.metadata.labels or {})
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    rv = batch.list_namespaced_job(namespace).metadata.resource_version
                else:
                    raise


def transition_latencies(clock: JobClock, deps: dict[str, list[str]],
                         job_of: Any) -> list[float]:
    """For every dependent Job: its creation minus the last finish of its dependencies."""
    out = []
    for job, labels in clock.labels.items():
        step, execution = labels.get("bench/step"), labels.get("bench/execution")
        if not step or not deps.get(step):
            continue
        finishes = [clock.finished.get(job_of(execution, d)) for d in deps[step]]
        if None in finishes:
            continue
        out.append(clock.created[job] - max(f for f in finishes if f is not None))
    return out


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return (f"p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, "
            f"p99 {q[98] * 1000:.0f} ms (n={len(values)})")


def request_counts(api: kubernetes.client.ApiClient) -> dict[tuple[str, str], float]:
    """``apiserver_request_total`` summed by (verb, resource)."""
    # The client's connection pool carries the kubeconfig's client certificate.
    resp = api.rest_client.pool_manager.request("GET", api.configuration.host + "/metrics")
    text = resp.data.decode()
    counts: dict[tuple[str, str], float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_part, value = line.rsplit(" ", 1)
        labels = dict(kv.split("=", 1) for kv in labels_part[len("apiserver_request_total{"):-1]
                      .split(","))
        verb = labels.get("verb", "").strip('"')
        resource = labels.get("resource", "").strip('"')
        sub = labels.get("subresource", "").strip('"')
        counts[(verb, resource + (f"/{sub}" if sub else ""))] += float(value)
    return counts


def process_usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and peak RSS in bytes of a live process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


# -- the two drivers -----------------------------------------------------------------------


def dag(branches: int) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {"start": []}
    for i in range(branches):
        deps[f"b{i}"] = ["start"]
    deps["join"] = [f"b{i}" for i in range(branches)]
    return deps


def make_namespace(api: kubernetes.client.ApiClient, prefix: str) -> str:
    core = kubernetes.client.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except ApiException:
            time.sleep(0.1)
    raise RuntimeError("default service account never appeared")


def job_template(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600, "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "step", "image": "busybox:1.37", "command": ["true"]}]}}}}


def run_floor(api: kubernetes.client.ApiClient, n: int, branches: int) -> dict[str, Any]:
    """The floor: create the same Jobs in the same order from watch events, nothing else."""
    ns = make_namespace(api, "bench-floor")
    batch = kubernetes.client.BatchV1Api(api)
    deps = dag(branches)
    dependants: dict[str, list[str]] = defaultdict(list)
    for step, ds in deps.items():
        for d in ds:
            dependants[d].append(step)
    clock = JobClock()
    done_steps: dict[str, set[str]] = defaultdict(set)
    finished_exec: dict[str, float] = {}
    lock = threading.Lock()

    def name(execution: str, step: str) -> str:
        return f"{execution}-{step}-1"

    def create(execution: str, step: str) -> None:
        labels = {"bench/execution": execution, "bench/step": step}
        batch.create_namespaced_job(ns, job_template(ns, name(execution, step), labels))

    def on_finished(job: str, labels: dict[str, str]) -> None:
        execution, step = labels["bench/execution"], labels["bench/step"]
        with lock:
            done_steps[execution].add(step)
            ready = [s for s in dependants[step] if set(deps[s]) <= done_steps[execution]]
            if len(done_steps[execution]) == len(deps):
                finished_exec[execution] = time.monotonic()
        for s in ready:
            create(execution, s)

    clock.listeners.append(on_finished)
    ready = threading.Event()
    watcher = threading.Thread(target=clock.run, args=(api, ns, ready), daemon=True)
    watcher.start()
    ready.wait(10)
    t0 = time.monotonic()
    executions = [f"floor-{i}" for i in range(n)]
    for e in executions:
        create(e, "start")
    deadline = time.monotonic() + 600
    while len(finished_exec) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = max(finished_exec.values(), default=time.monotonic()) - t0
    clock.stop.set()
    return {"namespace": ns, "finished": len(finished_exec), "elapsed": elapsed,
            "latencies": transition_latencies(clock, deps, name)}


def run_operator(api: kubernetes.client.ApiClient, op: OperatorProcess, n: int,
                 branches: int) -> dict[str, Any]:
    ns = make_namespace(api, "bench-engine")
    custom = kubernetes.client.CustomObjectsApi(api)
    deps = dag(branches)
    steps = [{"name": s, "image": "busybox:1.37", "command": ["true"],
              "dependsOn": d}
             for s, d in deps.items()]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": "fan"},
        "spec": {"parallelism": branches + 1, "steps": steps}})
    time.sleep(1.0)
    clock = JobClock()
    ready = threading.Event()
    threading.Thread(target=clock.run, args=(api, ns, ready), daemon=True).start()
    ready.wait(10)
    assert op.proc is not None
    cpu0, _ = process_usage(op.proc.pid)
    before = request_counts(api)
    t0 = time.monotonic()
    executions = [f"run-{i}" for i in range(n)]
    for e in executions:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"name": e}, "spec": {"runbookRef": {"name": "fan"}}})
    finished: dict[str, float] = {}
    phases: dict[str, str] = {}
    deadline = time.monotonic() + 900
    while len(finished) < n and time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                     "runbookexecutions")["items"]
        now = time.monotonic()
        for item in items:
            phase = (item.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed", "Cancelled"):
                finished.setdefault(item["metadata"]["name"], now)
                phases[item["metadata"]["name"]] = phase
        time.sleep(0.5)
    # The last Job's completion is the end of the work; polling above only detects it.
    last_job = max(clock.finished.values(), default=time.monotonic())
    elapsed = last_job - t0
    time.sleep(2.0)  # let the final status writes land before counting requests
    after = request_counts(api)
    cpu1, rss = process_usage(op.proc.pid)
    clock.stop.set()

    def job_name(execution: str, step: str) -> str:
        return f"{execution}-{step}-1"

    # Relabel: the operator's pods carry bench/step; Jobs carry runbooks.dev labels.
    for job, labels in list(clock.labels.items()):
        clock.labels[job] = {"bench/step": labels.get("runbooks.dev/step", ""),
                             "bench/execution": labels.get("runbooks.dev/execution", "")}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {"namespace": ns, "finished": len(finished), "elapsed": elapsed,
            "phases": phases, "latencies": transition_latencies(clock, deps, job_name),
            "requests": delta, "cpu": cpu1 - cpu0, "rss": rss}


def preload_finished(api: kubernetes.client.ApiClient, n: int) -> float:
    """Run ``n`` one-step executions to the end, so the operator holds them while measured."""
    ns = make_namespace(api, "bench-history")
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": "one"},
        "spec": {"steps": [{"name": "only", "image": "busybox:1.37", "command": ["true"]}]}})
    time.sleep(1.0)
    t0 = time.monotonic()
    for i in range(n):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"name": f"old-{i}"}, "spec": {"runbookRef": {"name": "one"}}})
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                     "runbookexecutions")["items"]
        done = sum(1 for i in items
                   if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed"))
        if done >= n:
            break
        time.sleep(2.0)
    return time.monotonic() - t0


def bench_cluster(kubeconfig: str | None) -> str:
    """The kubeconfig to use: the given one, else the local cluster's (started with CRDs)."""
    if kubeconfig is not None:
        return kubeconfig
    cluster = LocalCluster(state_dir=Path(os.environ.get("RBO_CLUSTER_DIR", "/tmp/rbo-bench")))
    if not cluster.is_up():
        cluster.up()
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all")
    return str(cluster.kubeconfig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--kubeconfig", help="a running cluster (default: start the local one)")
    parser.add_argument("--finished", type=int, default=0,
                        help="first run this many one-step executions to the end (RSS with "
                             "history)")
    parser.add_argument("--no-events", action="store_true",
                        help="run the operator with --no-events (to price Kubernetes Events)")
    args = parser.parse_args(argv)

    kubeconfig = bench_cluster(args.kubeconfig)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    op = OperatorProcess(Path(kubeconfig), Path("/tmp/rbo-bench-operator"),
                         ["--no-events"] if args.no_events else [])
    op.start()
    steps_per = args.branches + 2
    preload = 0.0
    if args.finished:
        preload = preload_finished(api, args.finished)
        # A new process, as after a rollout: it lists the finished executions at start,
        # and its peak RSS is that of holding them, not of having run them.
        op.stop()
        op.start()
    try:
        engine = run_operator(api, op, args.executions, args.branches)
    finally:
        op.stop()
    floor = run_floor(api, args.executions, args.branches)

    total_steps = args.executions * steps_per
    print(f"# engine benchmark: {args.executions} executions x {steps_per} steps "
          f"(start -> {args.branches} branches -> join), all created at once"
          + (", operator --no-events" if args.no_events else ""))
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok (pods finish at once)")
    for label, r in (("operator", engine), ("floor", floor)):
        per_min = r["finished"] / r["elapsed"] * 60 if r["elapsed"] > 0 else 0.0
        r["per_min"] = per_min
        print(f"{label:9s} finished {r['finished']}/{args.executions} in {r['elapsed']:.1f} s: "
              f"{per_min:.0f} executions/min; transition latency {percentiles(r['latencies'])}")
    ratio = engine["per_min"] / floor["per_min"] if floor["per_min"] else 0.0
    print(f"throughput vs floor: {ratio:.2f}x")
    if args.finished:
        print(f"with {args.finished} finished executions held by the operator "
              f"(run to the end first, in {preload:.0f} s; then the operator restarted)")
    print(f"operator CPU {engine['cpu']:.1f} s ({engine['cpu'] / total_steps * 1000:.1f} ms/step), "
          f"peak RSS {engine['rss'] / 2**20:.0f} MiB")
    print("apiserver requests per step during the operator phase (all clients):")
    interesting = ("runbookexecutions", "runbookexecutions/status", "jobs", "events", "pods",
                   "runbooks", "secrets")
    for (verb, resource), value in sorted(engine["requests"].items()):
        if resource in interesting and value > 0:
            print(f"  {verb:7s} {resource:26s} {value / total_steps:6.2f}")
    writes = sum(v for (verb, res), v in engine["requests"].items()
                 if verb in ("POST", "PATCH", "PUT", "DELETE")
                 and res in ("runbookexecutions/status", "jobs"))
    print(f"operator writes per step (POST jobs + PATCH status, excluding Events): "
          f"{writes / total_steps:.2f}")
    failed = [n for n, p in engine["phases"].items() if p != "Succeeded"]
    if failed:
        print(f"WARNING: {len(failed)} executions did not succeed: {failed[:5]}")
    return 0  # a local cluster is left running; `python hack/cluster.py down` stops it


if __name__ == "__main__":
    sys.exit(main())
