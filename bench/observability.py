"""What observability costs: the engine benchmark with metrics and tracing on, then off.

    python bench/observability.py [--executions 100] [--rounds 2] [--kubeconfig PATH]

The engine benchmark's workload (N executions of ``start -> 4 branches -> join``,
created at once, kwok finishing every pod at once) is run by a fresh operator in
alternating rounds, in the same run and on the same cluster:

- **off**: no ``OTEL_EXPORTER_OTLP_ENDPOINT`` (tracing off), nobody scrapes
  ``/metrics``;
- **on**: spans exported over OTLP/HTTP to a real receiver on 127.0.0.1 (the one
  the tests use; it decodes every request) with a 200 ms batch delay, and
  ``/metrics`` scraped every second (five times Prometheus' usual 5 s minimum).

Counters and histograms are recorded in both modes: they are plain increments in
the operator, and switching them off is not something we offer. The figure is
the median throughput of the "on" rounds over the median of the "off" rounds.
Rounds go off, on, on, off (repeated): each round leaves its executions behind for
the next operator to list, and this order puts that linear drift, and any other,
on both sides equally.
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
from pathlib import Path
from typing import Any

import kubernetes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "tests" / "unit" / "observability"))
sys.path.insert(0, str(REPO / "bench"))

from otlp_receiver import OtlpReceiver  # noqa: E402

from engine import bench_cluster, percentiles, run_operator  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402


def scrape_every(port: int, seconds: float, stop: threading.Event, sizes: list[int]) -> None:
    while not stop.wait(seconds):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                sizes.append(len(r.read()))
        except OSError:
            pass


def span_cost(receiver: OtlpReceiver, spans: int = 700) -> float:
    """CPU seconds per span: record and export ``spans`` step spans in this process."""
    from runbook_operator.observability.tracing import ExecutionInfo, configure_tracing

    os.environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                       "OTEL_BSP_SCHEDULE_DELAY": "200"})
    tracer = configure_tracing()
    start = time.process_time()
    for i in range(spans):
        info = ExecutionInfo.from_body({
            "metadata": {"uid": f"bench-{i}", "name": f"run-{i}", "namespace": "bench"},
            "spec": {"runbookRef": {"name": "fan"}}})
        tracer.step_span(info, "start", 1, phase="Succeeded", job=f"run-{i}-start-1",
                         exit_code=0, started_at="2026-01-01T00:00:00Z",
                         finished_at="2026-01-01T00:00:01Z", message="attempt 1 succeeded")
    tracer.force_flush()
    cost = (time.process_time() - start) / spans  # includes the receiver's decoding
    tracer.shutdown()
    return cost


def one_round(api: kubernetes.client.ApiClient, kubeconfig: Path, executions: int,
              on: bool, receiver: OtlpReceiver) -> dict[str, Any]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "200"} if on else {}
    op = OperatorProcess(kubeconfig, Path("/tmp/rbo-bench-operator"), env=env)
    op.start()
    stop, sizes = threading.Event(), list[int]()
    if on:
        threading.Thread(target=scrape_every, args=(op.port, 1.0, stop, sizes),
                         daemon=True).start()
    spans_before = len(receiver.spans)
    try:
        result = run_operator(api, op, executions, 4)
    finally:
        stop.set()
        op.stop()
    result["per_min"] = result["finished"] / result["elapsed"] * 60 if result["elapsed"] else 0
    result["spans"] = len(receiver.spans) - spans_before
    result["scrapes"] = len(sizes)
    result["scrape_bytes"] = max(sizes, default=0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each mode")
    parser.add_argument("--kubeconfig", help="a running cluster (default: start the local one)")
    args = parser.parse_args(argv)

    kubeconfig, _ = bench_cluster(args.kubeconfig, None)
    api = kubernetes.config.new_client_from_config(config_file=kubeconfig)

    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with OtlpReceiver() as receiver:
        per_span = span_cost(receiver)
        print(f"one step span recorded and exported over OTLP/HTTP: {per_span * 1000:.2f} ms "
              f"CPU (this process, receiver's decoding included)", flush=True)
        for i in range(args.rounds * 2):
            on = i % 4 in (1, 2)
            r = one_round(api, Path(kubeconfig), args.executions, on, receiver)
            results[on].append(r)
            print(f"round {i + 1} ({'on ' if on else 'off'}): {r['finished']}/"
                  f"{args.executions} in {r['elapsed']:.1f} s = {r['per_min']:.0f} exec/min; "
                  f"pod exit -> next pod created {percentiles(r['pod_created'])}; "
                  f"CPU {r['cpu']:.1f} s"
                  + (f"; {r['spans']} spans, {r['scrapes']} scrapes of up to "
                     f"{r['scrape_bytes'] // 1024} KiB" if on else ""), flush=True)

    print(f"# observability overhead: {args.executions} executions x 6 steps per round, "
          f"{args.rounds} rounds per mode, in the order off, on, on, off")
    print(f"# machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, local control plane with kwok")
    off = statistics.median(r["per_min"] for r in results[False])
    on = statistics.median(r["per_min"] for r in results[True])
    cpu_off = statistics.median(r["cpu"] for r in results[False])
    cpu_on = statistics.median(r["cpu"] for r in results[True])
    print(f"throughput off {off:.0f} exec/min, on {on:.0f} exec/min: "
          f"{(1 - on / off) * 100:+.1f}% loss" if off else "no throughput measured")
    print(f"operator CPU off {cpu_off:.1f} s, on {cpu_on:.1f} s: "
          f"{(cpu_on / cpu_off - 1) * 100:+.1f}%" if cpu_off else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
