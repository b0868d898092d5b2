#!/usr/bin/env python3
"""Takeover of leadership under load: the leader SIGKILLed with executions in flight.

What the user feels after a node dies: the time from the leader's SIGKILL to the
new leader's first status write (a step's end recorded, a next Job started), with
``--executions`` runs of a three-step chain in flight (steps of ``--step-seconds``
through kwok), ``--replicas`` replicas with ``--leader-elect``. The floor, measured
in the same run: the time until another replica holds the Lease (the Lease duration
is its design floor; nothing can write before it). Also printed: the new leader's
own rebuild (``runbook_operator_takeover_seconds``), and that every execution then
succeeded with one Job per step.

    RBO_CLUSTER_DIR=/tmp/rbo-bench python bench/takeover.py --executions 100

A fresh local cluster is started (see ``engine.bench_cluster``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

from engine import GROUP, VERSION, bench_cluster, load, make_namespace
from operator_process import OperatorProcess  # hack/, put on sys.path by engine

FINAL = ("Succeeded", "Failed", "Cancelled")


def holder(api: kubernetes.client.ApiClient, namespace: str, lease: str) -> str | None:
    try:
        spec = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(
            lease, namespace).spec
    except kubernetes.client.exceptions.ApiException:
        return None
    return str(spec.holder_identity) if spec.holder_identity else None


def first_change(api: kubernetes.client.ApiClient, namespace: str, out: list[float],
                 ready: threading.Event) -> None:
    """When the first execution changes after a listing made now (the watch's order)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    version = custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "runbookexecutions", limit=1)["metadata"]["resourceVersion"]
    ready.set()
    watch = kubernetes.watch.Watch()
    for _ in watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, namespace,
                          "runbookexecutions", resource_version=version,
                          timeout_seconds=600):
        out.append(time.monotonic())
        watch.stop()
        return


def takeover_seconds(port: int) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("runbook_operator_takeover_seconds "):
                return float(line.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    assert __doc__ is not None
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--kill-after", type=float, default=10.0,
                        help="seconds after the last create to SIGKILL the leader")
    args = parser.parse_args(argv)

    kubeconfig, _ = bench_cluster(None, None)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    ns = make_namespace(api, "bench-takeover")
    lease = f"rbo-{uuid.uuid4().hex[:6]}"
    logs = Path(tempfile.mkdtemp(prefix="rbo-takeover-"))
    procs = {f"r{i}": OperatorProcess(Path(kubeconfig), logs / f"r{i}", [
        "--leader-elect", f"--leader-elect-namespace={ns}", f"--leader-elect-name={lease}",
        f"--leader-elect-identity=r{i}"]) for i in range(args.replicas)}
    for proc in procs.values():
        proc.start()
    custom = kubernetes.client.CustomObjectsApi(api)
    duration = f"{int(args.step_seconds * 1000)}ms"
    step = {"image": "busybox:1.37", "command": ["true"],
            "podMetadata": {"annotations": {"kwok.runbooks.dev/duration": duration}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": "chain"},
        "spec": {"steps": [{"name": "a", **step}, {"name": "b", "dependsOn": ["a"], **step},
                           {"name": "c", "dependsOn": ["b"], **step}]}})
    deadline = time.monotonic() + 120
    while (leader := holder(api, ns, lease)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leader is not None, "no replica took the Lease"
    time.sleep(2.0)  # the Runbook validated: not part of any measured interval
    names = [f"run-{i:04d}" for i in range(args.executions)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, "runbookexecutions", {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
                "metadata": {"name": name}, "spec": {"runbookRef": {"name": "chain"}}}),
            names))
    time.sleep(args.kill_after)  # the runs get under way: this is the load at the kill
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions")
    in_flight = sum(1 for item in listing["items"]
                    if (item.get("status") or {}).get("phase") not in FINAL)
    condition = load()
    killed = time.monotonic()
    procs[leader].kill()
    writes: list[float] = []
    ready = threading.Event()
    threading.Thread(target=first_change, args=(api, ns, writes, ready), daemon=True).start()
    ready.wait(30)
    new = None
    while time.monotonic() < killed + 300:
        new = holder(api, ns, lease)
        if new not in (None, leader):
            break
        time.sleep(0.05)
    held = time.monotonic() - killed
    while not writes and time.monotonic() < killed + 300:
        time.sleep(0.05)
    first = writes[0] - killed if writes else None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                     "runbookexecutions")["items"]
        if all((i.get("status") or {}).get("phase") in FINAL for i in items):
            break
        time.sleep(1.0)
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions")["items"]
    succeeded = sum(1 for i in items if (i.get("status") or {}).get("phase") == "Succeeded")
    jobs = kubernetes.client.BatchV1Api(api).list_namespaced_job(ns).items
    rebuild = takeover_seconds(procs[str(new)].port) if new else None
    for proc in procs.values():
        if proc.proc is not None:
            os.kill(proc.proc.pid, signal.SIGCONT)
        proc.stop()
    print(f"takeover: {args.replicas} replicas, {in_flight}/{args.executions} executions in "
          f"flight at the SIGKILL (3 steps of {args.step_seconds:g} s each), {condition}")
    print(f"  floor: another replica holds the Lease  {held:6.1f} s after the SIGKILL")
    print(f"  first status write by the new leader     "
          f"{first if first is not None else float('nan'):6.1f} s after the SIGKILL")
    print(f"  the new leader's rebuild from the API   {rebuild or float('nan'):6.2f} s")
    print(f"  then: {succeeded}/{len(items)} Succeeded, {len(jobs)} Jobs for "
          f"{3 * len(items)} steps")
    return 0 if succeeded == len(items) == args.executions and len(jobs) == 3 * len(items) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
