"""Schedules and notifications benchmark: slot lateness and delivery latency.

    python bench/schedules_notify.py [--runbooks 5] [--seconds 30] [--executions 50]
                                     [--kubeconfig PATH]

On the local control plane (started unless --kubeconfig names a running cluster),
with the operator as a real process. Two rounds, each in a fresh namespace:

1. schedules: ``--runbooks`` Runbooks each scheduled every second (``* * * * * *``)
   for ``--seconds``; lateness = when the operator decided a slot (its JSON log line)
   minus the slot's time, p50/p95/max; and whether every slot in the window has
   exactly one execution (names are derived from slots, so duplicates are impossible
   by construction; a missing slot would show);
2. notifications: ``--executions`` runs at once of a one-step (wait) Runbook that
   notifies a webhook sink on 127.0.0.1 on Succeeded; latency = the sink receiving
   the request minus the run's ``finishedAt``, p50/p95/max, and the attempts.

Steps are wait steps (no Job), so the figures measure the operator, not kwok.
Figures only; nothing asserted.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "bench"))

from engine import bench_cluster, make_namespace  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

GROUP, VERSION = "runbooks.dev", "v1alpha1"
WAIT = [{"name": "tick", "type": "wait", "wait": {"duration": "100ms"}}]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def runbook(custom: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook", "metadata": {"name": name},
        "spec": spec})


def schedules(api: Any, operator: OperatorProcess, runbooks: int, seconds: int
              ) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    ns = make_namespace(api, "bench-sched")
    names = [f"every-second-{i}" for i in range(runbooks)]
    for name in names:
        runbook(custom, ns, name, {"schedule": {"cron": "* * * * * *"}, "steps": WAIT})
    start = time.time()
    time.sleep(seconds)
    for name in names:  # stop them, then count
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "runbooks", name,
                                              {"spec": {"schedule": {"suspend": True}}})
    end = time.time()
    time.sleep(2)
    lateness = []
    for line in operator.log_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "schedule decision" and record.get("namespace") == ns:
            lateness.append(ts(record["timestamp"]) - ts(record["slot"]))
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                 "runbookexecutions")["items"]
    slots: dict[str, list[int]] = {n: [] for n in names}
    for item in items:
        slot = ts(item["spec"]["triggeredBy"]["schedule"]["scheduledTime"])
        slots[item["spec"]["runbookRef"]["name"]].append(int(slot))
    gaps = 0
    for found in slots.values():
        inside = sorted(s for s in found if start + 3 < s < end - 1)
        gaps += sum(b - a - 1 for a, b in itertools.pairwise(inside))
    return {"runbooks": runbooks, "seconds": seconds, "executions": len(items),
            "decisions": len(lateness), "missing_slots_in_window": gaps,
            "lateness_ms": {"p50": round(pct(lateness, 50) * 1000),
                            "p95": round(pct(lateness, 95) * 1000),
                            "max": round(max(lateness) * 1000)} if lateness else None}


class Sink(BaseHTTPRequestHandler):
    received: ClassVar[dict[str, float]] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        doc = json.loads(body)
        Sink.received.setdefault(doc["execution"]["name"], time.time())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def notifications(api: Any, executions: int) -> dict[str, Any]:
    custom = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)
    ns = make_namespace(api, "bench-notify")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    core.create_namespaced_secret(ns, {"metadata": {"name": "hook"}, "data": {
        "url": base64.b64encode(url.encode()).decode()}})
    runbook(custom, ns, "notified", {"steps": WAIT, "notifications": [
        {"on": ["Succeeded"], "webhook": {"urlSecretRef": {"name": "hook", "key": "url"}}}]})
    time.sleep(2)
    for i in range(executions):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "runbookexecutions", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
            "metadata": {"name": f"notified-{i}"}, "spec": {"runbookRef": {"name": "notified"}}})
    deadline = time.time() + 180
    while time.time() < deadline and len(Sink.received) < executions:
        time.sleep(0.5)
    time.sleep(3)  # the Delivered records
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns,
                                                 "runbookexecutions")["items"]
    latency, attempts = [], []
    for item in items:
        st = item.get("status") or {}
        name = item["metadata"]["name"]
        if name in Sink.received and st.get("finishedAt"):
            latency.append(Sink.received[name] - ts(st["finishedAt"]))
        attempts += [r.get("attempts", 0) for r in st.get("notifications") or []]
    server.shutdown()
    return {"executions": executions, "delivered": len(Sink.received),
            "attempts_total": sum(attempts),
            "latency_ms": {"p50": round(pct(latency, 50) * 1000),
                           "p95": round(pct(latency, 95) * 1000),
                           "max": round(max(latency) * 1000)} if latency else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runbooks", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--executions", type=int, default=50)
    parser.add_argument("--kubeconfig", help="a running cluster (default: start the local one)")
    args = parser.parse_args(argv)
    kubeconfig, _ = bench_cluster(args.kubeconfig, None)  # the Job controller as it comes
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    with tempfile.TemporaryDirectory() as logs:
        operator = OperatorProcess(Path(kubeconfig), Path(logs))
        operator.start()
        try:
            result = {"schedules": schedules(api, operator, args.runbooks, args.seconds),
                      "notifications": notifications(api, args.executions)}
        finally:
            operator.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
