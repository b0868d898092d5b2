"""Engine benchmark: N executions of a fan-out/join DAG against the floor, on one cluster.

    python bench/engine.py [--executions 100] [--branches 4] [--kubeconfig PATH]
                           [--concurrent-job-syncs N] [--old-floor] [--profile OUT.svg]
                           [--duration 5s] [--unstaged]

Runs on the local control plane (``RBO_CLUSTER_DIR``'s, started afresh for the run
unless --reuse-cluster, or --kubeconfig names a running cluster). Phases in the
same run, each in its own namespace:

1. the operator: N RunbookExecutions created at once of a runbook
   ``start -> b1..bK -> join`` (K+2 steps), run to completion;
2. the floor: a minimal driver with no engine that creates the same Jobs, reacting
   to its pod watch (a step's pod terminated) and creating Jobs concurrently from
   a thread pool, as fast as the control plane takes them;
3. with --old-floor, also the previous floor once: Jobs created one at a time from
   the watch thread, on the Job's Complete condition;
4. with --unstaged, the operator again with ``--prestage=false`` (no pre-staged
   Jobs), to price staging against the same floor.

With --duration every step pod (the operator's and the floor's) runs that long
(the kwok annotation ``kwok.runbooks.dev/duration``), as real remediation steps
do; by default pods end at once, the worst case for staging (the lead time is
only the dependencies' own run).

Why: the on-call engineer waits from a step's container exiting to the next
step's pod existing and running. So next to the Job -> Job figure (dependency's
Job Complete -> dependent Job created) it reports pod -> pod latency: dependency's
step pod seen terminated -> dependent's pod created, and -> dependent's container
started; and pod terminated -> dependent Job created (the driver's own part). All
times are local receipt times of watches in this process. It prints
executions per minute (first creation -> last step pod terminated), apiserver
requests per step by verb and resource (deltas of ``apiserver_request_total``),
Events per step, operator CPU and peak RSS, and the conditions: cores, load
average, the controller-manager's flags. Kwok finishes every pod at once, so the
figures measure the control loops, not the workload.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
Listener = Callable[[str, dict[str, str]], None]


def load() -> str:
    """The 1/5/15-minute load average, printed with every figure (others share the cores)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# -- observation -------------------------------------------------------------------------


def _watch(list_fn: Any, namespace: str, stop: threading.Event, ready: threading.Event,
           handle: Callable[[Any], None]) -> None:
    """Feed every watch event of ``list_fn`` in ``namespace`` to ``handle`` until stopped."""
    rv = list_fn(namespace).metadata.resource_version
    ready.set()
    while not stop.is_set():
        try:
            for ev in kubernetes.watch.Watch().stream(
                    list_fn, namespace, resource_version=rv, timeout_seconds=10,
                    _preload_content=True):
                obj = ev["object"]
                rv = obj.metadata.resource_version
                handle(obj)
                if stop.is_set():
                    return
        except ApiException as exc:
            if exc.status == 410:
                rv = list_fn(namespace).metadata.resource_version
            else:
                raise


@dataclass
class JobClock:
    """Local receipt times of Job creations and completions, from one watch."""

    created: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    listeners: list[Listener] = field(default_factory=list)

    def run(self, api: kubernetes.client.ApiClient, namespace: str, ready: threading.Event) -> None:
        batch = kubernetes.client.BatchV1Api(api)
        _watch(batch.list_namespaced_job, namespace, self.stop, ready, self.handle)

    def handle(self, job: Any) -> None:
        now = time.monotonic()
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


@dataclass
class PodClock:
    """Local receipt times of step pods: created, container started, terminated."""

    created: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    terminated: dict[str, float] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    listeners: list[Listener] = field(default_factory=list)

    def run(self, api: kubernetes.client.ApiClient, namespace: str, ready: threading.Event) -> None:
        core = kubernetes.client.CoreV1Api(api)
        _watch(core.list_namespaced_pod, namespace, self.stop, ready, self.handle)

    def handle(self, pod: Any) -> None:
        now = time.monotonic()
        name = pod.metadata.name
        states = [cs.state for cs in (pod.status.container_statuses or []) if cs.state]
        started = any(st.running or st.terminated for st in states)
        terminated = pod.status.phase in ("Succeeded", "Failed") and \
            any(st.terminated for st in states)
        with self.lock:
            self.created.setdefault(name, now)
            self.labels.setdefault(name, pod.metadata.labels or {})
            if started:
                self.started.setdefault(name, now)
            newly = terminated and name not in self.terminated
            if newly:
                self.terminated[name] = now
        if newly:
            for listener in self.listeners:
                listener(name, pod.metadata.labels or {})


def transition_latencies(created: dict[str, float], finished: dict[str, float],
                         labels: dict[str, dict[str, str]], deps: dict[str, list[str]],
                         keys: tuple[str, str],
                         finished_labels: dict[str, dict[str, str]] | None = None
                         ) -> list[float]:
    """For every dependent object: its ``created`` time minus the last ``finished`` time of
    its dependencies' objects (named in ``finished_labels``, default ``labels``).
    ``keys`` are the (execution, step) label names."""
    by_step: dict[tuple[str, str], str] = {}
    for name, lab in (labels if finished_labels is None else finished_labels).items():
        by_step[(lab.get(keys[0], ""), lab.get(keys[1], ""))] = name
    out = []
    for name, lab in labels.items():
        execution, step = lab.get(keys[0], ""), lab.get(keys[1], "")
        if not step or not deps.get(step) or name not in created:
            continue
        finishes = [finished.get(by_step.get((execution, d), "")) for d in deps[step]]
        if None in finishes:
            continue
        out.append(created[name] - max(f for f in finishes if f is not None))
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


@dataclass
class Watches:
    """A Job watch and a pod watch on one namespace."""

    jobs: JobClock = field(default_factory=JobClock)
    pods: PodClock = field(default_factory=PodClock)

    def start(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        for clock in (self.jobs, self.pods):
            ready = threading.Event()
            threading.Thread(target=clock.run, args=(api, namespace, ready), daemon=True).start()
            if not ready.wait(30):
                raise RuntimeError("a watch did not start within 30 s")

    def stop(self) -> None:
        self.jobs.stop.set()
        self.pods.stop.set()

    def figures(self, deps: dict[str, list[str]], keys: tuple[str, str]) -> dict[str, Any]:
        j, p = self.jobs, self.pods
        return {
            "job_job": transition_latencies(j.created, j.finished, j.labels, deps, keys),
            "pod_job": transition_latencies(j.created, p.terminated, j.labels, deps, keys,
                                            p.labels),
            "pod_created": transition_latencies(p.created, p.terminated, p.labels, deps, keys),
            "pod_started": transition_latencies(p.started, p.terminated, p.labels, deps, keys),
        }


# -- the drivers ---------------------------------------------------------------------------


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


DURATION = "kwok.runbooks.dev/duration"


def job_template(namespace: str, name: str, labels: dict[str, str],
                 duration: str | None = None) -> dict[str, Any]:
    annotations = {DURATION: duration} if duration else {}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600, "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "step", "image": "busybox:1.37", "command": ["true"]}]}}}}


FLOOR_KEYS = ("bench/execution", "bench/step")
OPERATOR_KEYS = ("runbooks.dev/execution", "runbooks.dev/step")


def run_floor(api: kubernetes.client.ApiClient, n: int, branches: int,
              old: bool = False, duration: str | None = None) -> dict[str, Any]:
    """The floor: the same Jobs in the same DAG order from watch events, no engine.

    The floor acts on the step pod's termination and creates Jobs from a pool of 16
    threads, as fast as the control plane takes them; ``old`` is the previous floor:
    one Job at a time from the watch thread, on the Job's Complete condition.
    """
    ns = make_namespace(api, "bench-floor")
    batch = kubernetes.client.BatchV1Api(api)
    deps = dag(branches)
    dependants: dict[str, list[str]] = defaultdict(list)
    for step, ds in deps.items():
        for d in ds:
            dependants[d].append(step)
    watches = Watches()
    done_steps: dict[str, set[str]] = defaultdict(set)
    finished_exec: dict[str, float] = {}
    lock = threading.Lock()
    pool = None if old else ThreadPoolExecutor(max_workers=16)

    def create(execution: str, step: str) -> None:
        labels = {FLOOR_KEYS[0]: execution, FLOOR_KEYS[1]: step}
        body = job_template(ns, f"{execution}-{step}-1", labels, duration)
        if pool is None:
            batch.create_namespaced_job(ns, body)
        else:
            pool.submit(batch.create_namespaced_job, ns, body)

    def on_finished(_: str, labels: dict[str, str]) -> None:
        execution, step = labels.get(FLOOR_KEYS[0]), labels.get(FLOOR_KEYS[1])
        if not execution or not step:
            return
        with lock:
            if step in done_steps[execution]:
                return
            done_steps[execution].add(step)
            ready = [s for s in dependants[step] if set(deps[s]) <= done_steps[execution]]
            if len(done_steps[execution]) == len(deps):
                finished_exec[execution] = time.monotonic()
        for s in ready:
            create(execution, s)

    (watches.jobs if old else watches.pods).listeners.append(on_finished)
    watches.start(api, ns)
    load_before = load()
    t0 = time.monotonic()
    for i in range(n):
        create(f"floor-{i}", "start")
    deadline = time.monotonic() + 900
    while len(finished_exec) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    elapsed = max(watches.pods.terminated.values(), default=time.monotonic()) - t0
    if old:
        elapsed = max(finished_exec.values(), default=time.monotonic()) - t0
    load_after = load()
    watches.stop()
    if pool is not None:
        pool.shutdown(wait=True)
    return {"namespace": ns, "finished": len(finished_exec), "elapsed": elapsed,
            "load": f"{load_before} -> {load_after}", **watches.figures(deps, FLOOR_KEYS)}


def run_operator(api: kubernetes.client.ApiClient, op: OperatorProcess, n: int,
                 branches: int, duration: str | None = None) -> dict[str, Any]:
    ns = make_namespace(api, "bench-engine")
    custom = kubernetes.client.CustomObjectsApi(api)
    deps = dag(branches)
    steps = [{"name": s, "image": "busybox:1.37", "command": ["true"],
              "dependsOn": d,
              **({"podMetadata": {"annotations": {DURATION: duration}}} if duration else {})}
             for s, d in deps.items()]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": "fan"},
        "spec": {"parallelism": branches + 1, "steps": steps}})
    time.sleep(1.0)
    watches = Watches()
    watches.start(api, ns)
    assert op.proc is not None
    cpu0, _ = process_usage(op.proc.pid)
    before = request_counts(api)
    load_before = load()
    t0 = time.monotonic()
    executions = [f"run-{i}" for i in range(n)]
    for e in executions:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"name": e}, "spec": {"runbookRef": {"name": "fan"}}})
    # The end of the work is every join pod's termination, seen by the pod watch: no
    # LIST of the executions (each carries its frozen spec and history) while the
    # control plane is measured; the phases are read once the work is done.
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        with watches.pods.lock:
            joins = sum(1 for name in watches.pods.terminated
                        if watches.pods.labels[name].get(OPERATOR_KEYS[1]) == "join")
        if joins >= n:
            break
        time.sleep(0.2)
    elapsed = max(watches.pods.terminated.values(), default=time.monotonic()) - t0
    load_after = load()
    phases: dict[str, str | None] = {}
    while len(phases) < n and time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                     "runbookexecutions")["items"]
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items
                  if (i.get("status") or {}).get("phase") in ("Succeeded", "Failed",
                                                              "Cancelled")}
        time.sleep(0.5)
    finished = phases
    time.sleep(2.0)  # let the final status writes and Events land before counting requests
    after = request_counts(api)
    cpu1, rss = process_usage(op.proc.pid)
    watches.stop()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    ours = [e for e in kubernetes.client.CoreV1Api(api).list_namespaced_event(ns).items
            if (e.source and e.source.component) == "runbook-operator"]
    # Each staged Job's pod is lifted once (the apiserver's PATCH pods count also has
    # the Job controller's finalizer removals, one per pod).
    staged = sum(1 for j in kubernetes.client.BatchV1Api(api).list_namespaced_job(ns).items
                 if j.spec.template.spec.scheduling_gates)
    return {"namespace": ns, "finished": len(finished), "elapsed": elapsed,
            "phases": phases, "requests": delta, "cpu": cpu1 - cpu0, "rss": rss,
            "events": len(ours), "staged": staged, "occurrences": sum(e.count or 1 for e in ours),
            "load": f"{load_before} -> {load_after}", **watches.figures(deps, OPERATOR_KEYS)}


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


def wait_established(cluster: LocalCluster) -> None:
    """Wait on the API's own Established condition of every CRD, with a retry."""
    last = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "crd", "-o",
                              "jsonpath={range .items[*]}{.metadata.name}="
                              "{.status.conditions[?(@.type=='Established')].status} {end}",
                              check=False)
        last = out.stderr or out.stdout
        pairs = out.stdout.split()
        if out.returncode == 0 and pairs and all(p.endswith("=True") for p in pairs):
            return
        time.sleep(0.5)
    raise RuntimeError(f"CRDs not Established within 120 s; the API last said: {last}")


def job_syncs_flag(concurrent_job_syncs: int | None) -> list[str]:
    return [f"--concurrent-job-syncs={concurrent_job_syncs}"] if concurrent_job_syncs else []


def bench_cluster(kubeconfig: str | None, concurrent_job_syncs: int | None,
                  reuse: bool = False) -> tuple[str, list[str] | None]:
    """The kubeconfig to use and the controller-manager's flags (None: not known).

    Without --kubeconfig: ``RBO_CLUSTER_DIR``'s local cluster (default
    /tmp/rbo-bench), started afresh with CRDs: the Jobs and pods of earlier runs
    would otherwise be listed by the operator at its start, in the measured
    window. With ``reuse`` a running one is kept unless its controller-manager
    does not run with the asked ``--concurrent-job-syncs``.
    """
    if kubeconfig is not None:
        return kubeconfig, None
    cluster = LocalCluster(state_dir=Path(os.environ.get("RBO_CLUSTER_DIR", "/tmp/rbo-bench")))
    wanted = job_syncs_flag(concurrent_job_syncs)
    if cluster.is_up():
        running = [a for a in cluster.controller_manager_args() or []
                   if a.startswith("--concurrent-job-syncs")]
        if running != wanted or not reuse:
            print(f"# restarting {cluster.state_dir} afresh, controller-manager flags {wanted}",
                  file=sys.stderr)
            cluster.down()
    if not cluster.is_up():
        os.environ["RBO_CONTROLLER_MANAGER_FLAGS"] = " ".join(wanted)
        cluster.up()
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    wait_established(cluster)
    return str(cluster.kubeconfig), cluster.controller_manager_args()


def controller_manager_summary(args: list[str] | None) -> str:
    if args is None:
        return "controller-manager flags unknown (--kubeconfig cluster)"
    flags = dict(a.split("=", 1) for a in args if "=" in a)
    return (f"controller-manager: concurrent-job-syncs "
            f"{flags.get('--concurrent-job-syncs', '5 (default)')}, "
            f"kube-api-qps {flags.get('--kube-api-qps', '20 (default)')}, "
            f"kube-api-burst {flags.get('--kube-api-burst', '30 (default)')}")


def start_profiler(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording the operator for the operator phase (None: py-spy not installed)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(exe, os.X_OK):
        print("# py-spy not found: no profile", file=sys.stderr)
        return None
    fmt = "raw" if out.endswith(".txt") else "flamegraph"  # raw: collapsed stacks
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100",
                             "--output", out, "--format", fmt, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--kubeconfig", help="a running cluster (default: start the local one)")
    parser.add_argument("--finished", type=int, default=0,
                        help="first run this many one-step executions to the end (RSS with "
                             "history)")
    parser.add_argument("--no-events", action="store_true",
                        help="run the operator with --no-events (to price Kubernetes Events)")
    parser.add_argument("--concurrent-job-syncs", type=int, default=None,
                        help="run the local cluster's controller-manager with this many "
                             "concurrent Job syncs (default: its own default, 5)")
    parser.add_argument("--old-floor", action="store_true",
                        help="also run the previous floor: serial creates on Job Complete")
    parser.add_argument("--floor-first", action="store_true",
                        help="run the floor before the operator (default: after)")
    parser.add_argument("--reuse-cluster", action="store_true",
                        help="keep a running local cluster and what earlier runs left in it "
                             "(default: restart it afresh)")
    parser.add_argument("--duration", metavar="GO-DURATION",
                        help="every step pod runs this long (e.g. 5s; default: ends at once)")
    parser.add_argument("--unstaged", action="store_true",
                        help="also run the operator with --prestage=false")
    parser.add_argument("--profile", metavar="SVG|TXT",
                        help="record the operator phase with py-spy into this flame graph "
                             "(.txt: collapsed stacks)")
    args = parser.parse_args(argv)

    kubeconfig, cm_args = bench_cluster(args.kubeconfig, args.concurrent_job_syncs,
                                       args.reuse_cluster)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    log_dir = Path(tempfile.mkdtemp(prefix="rbo-bench-operator-"))
    op = OperatorProcess(Path(kubeconfig), log_dir,
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
    # The first phase on a fresh cluster meets a colder control plane: --floor-first
    # swaps the order, so the ratio can be read both ways.
    floor = run_floor(api, args.executions, args.branches, duration=args.duration) \
        if args.floor_first else None
    profiler = None
    try:
        assert op.proc is not None
        if args.profile:
            profiler = start_profiler(op.proc.pid, args.profile)
        engine = run_operator(api, op, args.executions, args.branches, args.duration)
    finally:
        if profiler is not None:
            profiler.send_signal(2)  # SIGINT: py-spy writes the flame graph and exits
            profiler.wait(timeout=60)
        op.stop()
    results = [("operator", engine)]
    if floor is None:
        floor = run_floor(api, args.executions, args.branches, duration=args.duration)
    results.append(("floor", floor))
    if args.old_floor:
        results.append(("old floor", run_floor(api, args.executions, args.branches, old=True,
                                               duration=args.duration)))
    unstaged = None
    if args.unstaged:
        off = OperatorProcess(Path(kubeconfig), log_dir, ["--prestage=false"]
                              + (["--no-events"] if args.no_events else []))
        off.start()
        try:
            unstaged = run_operator(api, off, args.executions, args.branches, args.duration)
        finally:
            off.stop()
        results.append(("unstaged", unstaged))

    total_steps = args.executions * steps_per
    print(f"# engine benchmark: {args.executions} executions x {steps_per} steps "
          f"(start -> {args.branches} branches -> join), all created at once"
          + (", operator --no-events" if args.no_events else "")
          + f"; step pods run {args.duration or '0s (end at once)'}; operator --prestage=true"
          + (" (and unstaged: --prestage=false)" if args.unstaged else ""))
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok (pods finish at once)")
    print(f"# {controller_manager_summary(cm_args)}")
    print("# floor: Jobs created from 16 threads on the step pod's termination; old floor: "
          "one at a time from the watch thread on Job Complete; phase order: "
          + ("floor, operator" if args.floor_first else "operator, floor"))
    for label, r in results:
        per_min = r["finished"] / r["elapsed"] * 60 if r["elapsed"] > 0 else 0.0
        r["per_min"] = per_min
        print(f"{label:9s} finished {r['finished']}/{args.executions} in {r['elapsed']:.1f} s: "
              f"{per_min:.0f} executions/min ({r['load']})")
        print(f"          pod terminated -> next pod created   {percentiles(r['pod_created'])}")
        print(f"          pod terminated -> next pod started   {percentiles(r['pod_started'])}")
        print(f"          pod terminated -> next Job created   {percentiles(r['pod_job'])}")
        print(f"          Job Complete   -> next Job created   {percentiles(r['job_job'])}")
    for label, r in results[1:]:
        if label == "unstaged":
            continue
        ratio = engine["per_min"] / r["per_min"] if r["per_min"] else 0.0
        p50 = statistics.median(engine["pod_created"] or [0]) / \
            (statistics.median(r["pod_created"] or [1]) or 1)
        print(f"operator vs {label}: throughput {ratio:.2f}x, pod -> pod created p50 {p50:.2f}x")
    if args.finished:
        print(f"with {args.finished} finished executions held by the operator "
              f"(run to the end first, in {preload:.0f} s; then the operator restarted)")
    if unstaged is not None:
        floor_p50 = statistics.median(floor["pod_created"] or [1]) or 1
        print(f"unstaged vs floor: throughput "
              f"{unstaged['per_min'] / (floor['per_min'] or 1):.2f}x, pod -> pod created p50 "
              f"{statistics.median(unstaged['pod_created'] or [0]) / floor_p50:.2f}x; CPU "
              f"{unstaged['cpu'] / total_steps * 1000:.1f} ms/step")
    print(f"operator CPU {engine['cpu']:.1f} s ({engine['cpu'] / total_steps * 1000:.1f} ms/step), "
          f"peak RSS {engine['rss'] / 2**20:.0f} MiB")
    print("apiserver requests per step during the operator phase (all clients):")
    interesting = ("runbookexecutions", "runbookexecutions/status", "jobs", "events", "pods",
                   "runbooks", "secrets")
    for (verb, resource), value in sorted(engine["requests"].items()):
        if resource in interesting and value > 0:
            print(f"  {verb:7s} {resource:26s} {value / total_steps:6.2f}")
    writes = engine["staged"] + sum(v for (verb, res), v in engine["requests"].items()
                                    if verb in ("POST", "PATCH", "PUT", "DELETE")
                                    and res in ("runbookexecutions/status", "jobs"))
    patches = sum(v for (verb, res), v in engine["requests"].items()
                  if verb in ("PATCH", "PUT") and res == "events")
    print(f"operator writes per step (POST/DELETE jobs + PATCH status + one gate lift per "
          f"staged Job ({engine['staged']}), excluding Events): {writes / total_steps:.2f}")
    print(f"operator Events per step: {engine['events'] / total_steps:.2f} objects "
          f"({engine['occurrences'] / total_steps:.2f} occurrences counted in them); "
          f"Event writes per step ~{(engine['events'] + patches) / total_steps:.2f} "
          f"(its POSTs + every client's PATCH/PUT of events)")
    failed = [n for n, p in engine["phases"].items() if p != "Succeeded"]
    if failed:
        print(f"WARNING: {len(failed)} executions did not succeed: {failed[:5]}")
    if args.profile:
        print(f"profile of the operator phase: {args.profile}")
    return 0  # a local cluster is left running; `python hack/cluster.py down` stops it


if __name__ == "__main__":
    sys.exit(main())
