"""The web view's weight and its live-update delay, against the watch API's own.

    python bench/ui.py                      # the bundle only (no cluster)
    RBO_CLUSTER_DIR=/tmp/c python bench/ui.py --latency [--changes 100]

Bundle: the bytes a browser loads (page, script, style, icon), raw and gzipped.

Latency (``--latency``): starts RBO_CLUSTER_DIR's local cluster afresh with the
CRDs (bench/engine.py's bench_cluster; no operator), creates one
RunbookExecution, opens the web view (`kubectl-runbook ui`, its own process) and
reads its executions event stream, and beside it a plain watch of the API server
(the floor: what any client of the watch API sees). Then it patches a label of the
execution ``--changes`` times, one at a time, and times from sending the PATCH to the
change arriving (a) on the plain watch and (b) on the web view's stream.
Prints p50/p95 of both and their difference (what the relay adds); never asserts.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
sys.path.insert(0, str(REPO / "bench"))

from runbook_operator.cli.ui import server  # noqa: E402


def bundle() -> None:
    names = ["index.html", *server.STATIC]
    raw = {name: len(server.asset(name)) for name in names}
    packed = len(gzip.compress(b"".join(server.asset(n) for n in names), 9))
    print("# bundle: every byte the browser loads from the web view")
    for name in names:
        print(f"{name:12} {raw[name]:7d} B")
    print(f"{'total':12} {sum(raw.values()):7d} B   gzip -9 of all: {packed} B")


def sse_lines(url: str, path: str, out: queue.Queue[tuple[float, dict[str, Any]]]) -> None:
    parts = urlsplit(url)
    token = parts.query.split("token=", 1)[1]
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=600)
    conn.request("GET", f"{path}?token={token}")
    response = conn.getresponse()
    event = ""
    while True:
        line = response.readline()
        if not line:
            return
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            event = text[7:]
        elif text.startswith("data: ") and event == "upsert":
            out.put((time.perf_counter(), json.loads(text[6:])))


def latency(changes: int, kubeconfig: str | None) -> None:
    from engine import bench_cluster
    from runbook_operator.cli import rest

    config, _ = bench_cluster(kubeconfig, None)
    ns = f"bench-ui-{uuid.uuid4().hex[:6]}"
    cluster = rest.load(config, ns)
    cluster.open("POST", "/api/v1/namespaces", body={"metadata": {"name": ns}}).read()
    path = rest.custom_path("runbookexecutions", ns)
    cluster.open("POST", path, body={
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
        "metadata": {"name": "bench"}, "spec": {"runbookRef": {"name": "none"}}}).read()
    binary = Path(sys.executable).parent / "kubectl-runbook"
    proc = subprocess.Popen([str(binary), "ui", "-n", ns, "--no-browser", "--kubeconfig",
                             config], stdout=subprocess.PIPE, text=True)
    try:
        url = next(line.strip() for line in proc.stdout or [] if line.startswith("http://"))
        relayed: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        watched: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=sse_lines, args=(url, "/api/stream/executions", relayed),
                         daemon=True).start()

        def watch() -> None:
            for line in cluster.lines(path, timeout=600, watch="1"):
                body = json.loads(line).get("object") or {}
                watched.put((time.perf_counter(), {
                    "resourceVersion": body.get("metadata", {}).get("resourceVersion")}))
        threading.Thread(target=watch, daemon=True).start()
        time.sleep(2)  # both streams open (bench setup, not a test synchronisation)
        floor: list[float] = []
        ui: list[float] = []
        for n in range(changes):
            sent = time.perf_counter()
            done = cluster.merge_patch(rest.custom_path("runbookexecutions", ns, "bench"),
                                       {"metadata": {"labels": {"n": str(n)}}})
            version = done["metadata"]["resourceVersion"]
            for source, into in ((watched, floor), (relayed, ui)):
                while True:
                    at, seen = source.get(timeout=30)
                    if seen.get("resourceVersion") == version:
                        into.append((at - sent) * 1000)
                        break
        print(f"# {changes} label patches, one at a time; ms from sending the PATCH to "
              "the change arriving; local control plane on this machine")
        for name, values in (("watch API (floor)", floor), ("web view SSE", ui)):
            q = statistics.quantiles(values, n=20)
            print(f"{name:18} p50 {statistics.median(values):6.1f} ms  p95 {q[18]:6.1f} ms")
        print(f"{'relay adds':18} p50 {statistics.median(ui) - statistics.median(floor):6.1f} ms")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        cluster.open("DELETE", f"/api/v1/namespaces/{ns}").read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--kubeconfig")
    args = parser.parse_args()
    bundle()
    if args.latency:
        latency(args.changes, args.kubeconfig)


if __name__ == "__main__":
    main()
