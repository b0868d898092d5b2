"""Scale run: 1,000 executions of a 10-step DAG in flight, and a SIGKILL in the middle.

    RBO_CLUSTER_DIR=/tmp/cluster-scale python bench/scale.py \\
        [--executions 1000] [--branches 8] [--kill-at 0.5] [--timeout 3600]

Why this exists: ``bench/engine.py`` measures step transitions with 100 executions
in flight; issue #11 also asks how the operator behaves with 1,000 in flight (its
memory, its throughput, its latency when the Job controller and the apiserver are
saturated) and how long it takes to pick the work up again after a crash, without
running any step twice. This script answers that in one run.

What it does, on ``RBO_CLUSTER_DIR``'s local control plane, started afresh by
``bench/engine.py``'s ``bench_cluster`` (kwok ends every pod at once):

1. starts the operator as a real subprocess (``hack/operator_process.py``) and
   creates N RunbookExecutions of ``start -> b0..bK-1 -> join`` (K+2 steps) at once;
2. when ``--kill-at`` of all the steps' pods have terminated, SIGKILLs the
   operator and starts a new one at once;
3. waits until every execution has a final phase.

It prints the completion time (first create -> last execution finished, as seen
by this script's watch), executions per minute, the operators' peak RSS, pod ->
pod latency (dependency's pod terminated -> dependent's pod created, as
``bench/engine.py`` defines it), the resume figures (new process started -> its
first Job created / first status write; -> every execution finished), a
pass/fail line for "no step ran twice" (exactly one Job per (execution, step),
attempt 1, and one pod for it), and the conditions: cores, load average before
and after, controller-manager flags, operator flags. All times are local receipt
times of this process's watches; under load the watches lag too.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import (
    GROUP,
    OPERATOR_KEYS,
    VERSION,
    JobClock,
    Watches,
    bench_cluster,
    controller_manager_summary,
    dag,
    load,
    make_namespace,
    percentiles,
    process_usage,
)
from operator_process import OperatorProcess  # hack/, put on sys.path by engine

FINAL = ("Succeeded", "Failed", "Cancelled")
ATTEMPT_LABEL = "runbooks.dev/attempt"


@dataclass
class RvJobClock(JobClock):
    """A :class:`JobClock` that also keeps each Job's resourceVersion at creation."""

    created_rv: dict[str, int] = field(default_factory=dict)

    def handle(self, job: Any) -> None:
        with self.lock:
            self.created_rv.setdefault(job.metadata.name, int(job.metadata.resource_version))
        super().handle(job)


@dataclass
class ExecutionClock:
    """Receipt times of status writes and final phases of RunbookExecutions, from one watch."""

    status_writes: list[tuple[float, int]] = field(default_factory=list)
    finished: dict[str, float] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    last_status: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, api: kubernetes.client.ApiClient, namespace: str,
            ready: threading.Event) -> None:
        custom = kubernetes.client.CustomObjectsApi(api)

        def list_fn(ns: str, **kw: Any) -> Any:
            return custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                        "runbookexecutions", **kw)

        rv = list_fn(namespace, limit=1)["metadata"]["resourceVersion"]
        ready.set()
        while not self.stop.is_set():
            try:
                for ev in kubernetes.watch.Watch().stream(
                        list_fn, namespace, resource_version=rv, timeout_seconds=10):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        raise ApiException(status=obj.get("code", 500))
                    rv = obj["metadata"]["resourceVersion"]
                    self.handle(obj)
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    rv = list_fn(namespace, limit=1)["metadata"]["resourceVersion"]
                else:
                    raise

    def handle(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        status = {k: v for k, v in (obj.get("status") or {}).items() if k != "kopf"}
        phase = status.get("phase")
        with self.lock:
            if status and status != self.last_status.get(name):
                self.status_writes.append((now, int(obj["metadata"]["resourceVersion"])))
            self.last_status[name] = status
            if phase:
                self.phases[name] = phase
            if phase in FINAL:
                self.finished.setdefault(name, now)


def duplicates(labels: dict[str, dict[str, str]], n_steps: int, executions: list[str],
               attempt_label: str | None) -> list[str]:
    """What breaks "exactly one object per (execution, step), attempt 1"."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    bad: list[str] = []
    for name, lab in labels.items():
        key = (lab.get(OPERATOR_KEYS[0], ""), lab.get(OPERATOR_KEYS[1], ""))
        seen[key].append(name)
        if attempt_label is not None and lab.get(attempt_label) != "1":
            bad.append(f"{name}: attempt {lab.get(attempt_label)}")
    bad += [f"{k}: {v}" for k, v in seen.items() if len(v) > 1]
    per_exec: dict[str, int] = defaultdict(int)
    for execution, _ in seen:
        per_exec[execution] += 1
    bad += [f"{e}: {per_exec.get(e, 0)} of {n_steps} steps" for e in executions
            if per_exec.get(e, 0) != n_steps]
    return bad


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=0.5,
                        help="SIGKILL the operator when this fraction of all steps' pods "
                             "has terminated")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="give up after this many seconds from the first create")
    args = parser.parse_args(argv)
    n, deps = args.executions, dag(args.branches)
    steps_per, total_steps = len(deps), args.executions * len(deps)

    load_start = load()
    kubeconfig, cm_args = bench_cluster(None, None)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    # The creating threads and the three watches share the client's connection pool.
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
    log_dir = Path(tempfile.mkdtemp(prefix="rbo-scale-operator-"))
    op_args: list[str] = []
    op = OperatorProcess(Path(kubeconfig), log_dir, op_args)
    op.start()

    ns = make_namespace(api, "bench-scale")
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": "fan"},
        "spec": {"parallelism": args.branches + 1, "steps": [
            {"name": s, "image": "busybox:1.37", "command": ["true"], "dependsOn": d}
            for s, d in deps.items()]}})
    time.sleep(1.0)
    watches = Watches(jobs=RvJobClock())
    watches.start(api, ns)
    execs = ExecutionClock()
    ready = threading.Event()
    threading.Thread(target=execs.run, args=(api, ns, ready), daemon=True).start()
    if not ready.wait(30):
        raise RuntimeError("the execution watch did not start within 30 s")

    load_before = load()
    names = [f"run-{i}" for i in range(n)]

    def create(name: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"name": name}, "spec": {"runbookRef": {"name": "fan"}}})

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, names))
    created_in = time.monotonic() - t0
    print(f"# {n} executions created in {created_in:.1f} s ({load()})", file=sys.stderr,
          flush=True)
    deadline = t0 + args.timeout

    # Phase 1: until --kill-at of the steps' pods have terminated.
    kill_after = int(args.kill_at * total_steps)
    while time.monotonic() < deadline:
        with watches.pods.lock:
            done = len(watches.pods.terminated)
        if done >= kill_after:
            break
        time.sleep(0.1)
    assert op.proc is not None
    cpu1, rss1 = process_usage(op.proc.pid)
    with watches.pods.lock:
        done_at_kill = len(watches.pods.terminated)
    with execs.lock:
        finished_at_kill = len(execs.finished)
    t_kill = time.monotonic()
    op.kill()
    print(f"# SIGKILL at {t_kill - t0:.1f} s: {done_at_kill}/{total_steps} step pods "
          f"terminated, {finished_at_kill}/{n} executions finished ({load()})",
          file=sys.stderr, flush=True)
    # What the old process wrote may reach the watches after the new one started: the
    # collection's resourceVersion now (one etcd, so one revision counter; comparing
    # them is fine for a benchmark) separates the old process's writes from the new's.
    rv_kill = int(kubernetes.client.BatchV1Api(api).list_namespaced_job(
        ns, limit=1).metadata.resource_version)
    t_restart = time.monotonic()
    op.start(timeout=300)
    t_healthy = time.monotonic()

    # Phase 2: until every execution has a final phase.
    while time.monotonic() < deadline:
        with execs.lock:
            if len(execs.finished) >= n:
                break
        time.sleep(0.2)
    t_end = time.monotonic()
    load_after = load()
    assert op.proc is not None
    cpu2, rss2 = process_usage(op.proc.pid)
    time.sleep(2.0)  # let the watches catch up before reading them
    op.stop()
    watches.stop()
    execs.stop.set()

    with watches.jobs.lock:
        assert isinstance(watches.jobs, RvJobClock)
        new_jobs = [t for name, t in watches.jobs.created.items()
                    if watches.jobs.created_rv.get(name, 0) > rv_kill]
        job_labels = dict(watches.jobs.labels)
    with execs.lock:
        writes_after = [t for t, rv in execs.status_writes if rv > rv_kill]
        finished = dict(execs.finished)
        phases = dict(execs.phases)
    with watches.pods.lock:
        pod_labels = dict(watches.pods.labels)
    first_job = min(new_jobs) - t_restart if new_jobs else None
    first_write = min(writes_after) - t_restart if writes_after else None
    last_finished = max(finished.values(), default=t_end)
    elapsed = last_finished - t0
    figures = watches.figures(deps, OPERATOR_KEYS)
    job_bad = duplicates(job_labels, steps_per, names, ATTEMPT_LABEL)
    pod_bad = duplicates(pod_labels, steps_per, names, None)
    succeeded = sum(1 for p in phases.values() if p == "Succeeded")

    def secs(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} s"

    print(f"# scale run: {n} executions x {steps_per} steps (start -> {args.branches} "
          f"branches -> join), all created at once (in {created_in:.1f} s, 16 threads); "
          f"SIGKILL at {args.kill_at:.0%} of the step pods terminated")
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok (pods finish at once); "
          f"other jobs may share the cores: see the load average")
    print(f"# load average: at start {load_start}; before the creates {load_before}; "
          f"at the end {load_after}")
    print(f"# {controller_manager_summary(cm_args)}")
    print(f"# operator flags: {' '.join(op_args) or '(defaults: --workers 8, Events on)'}")
    print(f"finished {len(finished)}/{n} ({succeeded} Succeeded) in {elapsed:.1f} s "
          f"(first create -> last execution finished): {len(finished) / elapsed * 60:.0f} "
          f"executions/min")
    print(f"pod terminated -> next pod created   {percentiles(figures['pod_created'])}")
    print(f"pod terminated -> next pod started   {percentiles(figures['pod_started'])}")
    print(f"pod terminated -> next Job created   {percentiles(figures['pod_job'])}")
    print(f"operator peak RSS {max(rss1, rss2) / 2**20:.0f} MiB (first process "
          f"{rss1 / 2**20:.0f} MiB, CPU {cpu1:.0f} s; after the restart {rss2 / 2**20:.0f} MiB, "
          f"CPU {cpu2:.0f} s)")
    print(f"SIGKILL at {t_kill - t0:.1f} s with {done_at_kill}/{total_steps} step pods "
          f"terminated, {finished_at_kill}/{n} executions finished, "
          f"{n - finished_at_kill} in flight")
    print(f"resume: new process started -> healthy {t_healthy - t_restart:.1f} s, "
          f"-> first Job created {secs(first_job)}, -> first status write {secs(first_write)}, "
          f"-> every execution finished {secs(last_finished - t_restart)}")
    ok = not job_bad and not pod_bad and len(finished) == n
    print(f"no step ran twice (one Job per (execution, step), attempt 1, one pod each): "
          f"{'PASS' if ok else 'FAIL'} ({len(job_labels)} Jobs, {len(pod_labels)} pods for "
          f"{total_steps} steps)")
    for line in (job_bad + pod_bad)[:10]:
        print(f"  {line}")
    print(f"operator logs: {log_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
