"""What query steps cost the operator: one check's overhead, and 100 verify steps polling.

    python bench/query.py [--checks 2000] [--executions 100] [--interval 5] [--seconds 30]

1. One check's overhead, the request excluded: the operator's part of a check (the
   shell's due-check scan, parameter rendering, reading a one-series answer, the CEL
   conditions, the metric) plus the planner pass that applies it, timed per check
   (p50, p95), against a floor measured in the same run: the same planner pass
   with no check due.
2. 100 concurrent verify steps polling every 5 s: executions each with one query
   step (count 1000: it does not finish within the run) checked by 8 worker threads (the
   operator's default ``--workers``) against a stub Prometheus on 127.0.0.1 that
   answers a fixed one-series vector (a subprocess: its CPU is not counted). Prints
   the operator process's CPU seconds per wall second, and the same loop with the
   request replaced by a prepared answer (the floor: the engine alone).

No cluster: the status is kept in memory between passes (what the API write costs
is bench/engine.py's subject). Never asserts; prints figures with their conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from runbook_operator.api.execution import RunbookExecutionSpec  # noqa: E402
from runbook_operator.api.runbook import RunbookSpec  # noqa: E402
from runbook_operator.controllers.queries import QueryChecks  # noqa: E402
from runbook_operator.engine.params import resolve_params  # noqa: E402
from runbook_operator.engine.planner import plan  # noqa: E402
from runbook_operator.engine.plans import Observation  # noqa: E402
from runbook_operator.engine.query import Check, read_response  # noqa: E402
from runbook_operator.engine.query_sources import Source, parse_source  # noqa: E402
from runbook_operator.engine.start import start_execution  # noqa: E402
from runbook_operator.observability.metrics import Metrics  # noqa: E402

ANSWER = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {"namespace": "production", "service": "api"}, "value": [1.0, "0.42"]}]}})

SPEC: dict[str, Any] = {
    "params": [{"name": "namespace", "default": "production"},
               {"name": "service", "default": "api"}],
    "steps": [{"name": "verify", "type": "query", "query": {
        "source": "prometheus",
        "expr": "max(container_memory_working_set_bytes{namespace=$namespace, "
                "container=$service} / on (namespace, pod, container) "
                "kube_pod_container_resource_limits{resource=\"memory\"})",
        "successCondition": "has(result.value) && result.value < 0.8",
        "failureCondition": "has(result.value) && result.value >= 0.95",
        "interval": "5s", "count": 1000, "failureLimit": 1000}}],
}

STUB = textwrap.dedent("""
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    body = sys.argv[1].encode()
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    s = ThreadingHTTPServer(("127.0.0.1", 0), H)
    print(s.server_address[1], flush=True)
    s.serve_forever()
""")


class Host(QueryChecks):
    """The reconciler's query half, with a clock and its own metrics."""

    def __init__(self, sources: dict[str, Source], clock: Callable[[], datetime],
                 fetch: Callable[..., Check] | None = None) -> None:
        self.query_sources = sources
        self.clock = clock
        self.metrics = Metrics()
        if fetch is not None:
            self.query_fetch = fetch  # type: ignore[assignment]


def observation(spec: RunbookSpec, raw: dict[str, Any], name: str, now: datetime) -> Observation:
    runbook = {"metadata": {"name": "rb", "generation": 1}, "spec": raw}
    exec_spec = RunbookExecutionSpec.model_validate({"runbookRef": {"name": "rb"}})
    status = start_execution(exec_spec, runbook, "production", now)
    params, _ = resolve_params(spec.params, {})
    return Observation(name=name, namespace="production", uid=f"uid-{name}", spec=spec,
                       params=params, status=status, jobs={}, now=now, runbook="rb")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def overhead(checks: int) -> None:
    spec = RunbookSpec.model_validate(SPEC)
    now = datetime(2026, 12, 8, tzinfo=UTC)

    def fetch(source: Source, expr: str, timeout: float, clock: Callable[[], datetime]) -> Check:
        # The request excluded: the answer's bytes are read as the real client would.
        return Check("Result", clock(), read_response(ANSWER.encode()))

    host = Host({"prometheus": parse_source("name=prometheus,url=http://127.0.0.1:1")},
                lambda: now, fetch)
    obs = observation(spec, SPEC, "ex", now)
    first = plan(obs)  # the step starts; a check is due
    obs = replace(obs, status=first.status)
    with_check, floor = [], []
    for i in range(checks):
        t0 = time.perf_counter()
        made = host.query_checks("production", "rb", spec, obs.params, obs.status)
        result = plan(replace(obs, checks=made))
        with_check.append(time.perf_counter() - t0)
        assert result.status.steps["verify"].query is not None
        t0 = time.perf_counter()
        plan(replace(obs, now=now - timedelta(seconds=1)))  # no check due: the floor
        floor.append(time.perf_counter() - t0)
        if i == 0:
            assert made, "no check was due"
    us = 1e6
    print(f"one check, request excluded ({checks} checks, 1-series answer, 2 CEL conditions):")
    print(f"  check + planner pass : p50 {statistics.median(with_check) * us:8.1f} us   "
          f"p95 {pct(with_check, 0.95) * us:8.1f} us")
    print(f"  floor (pass, no check): p50 {statistics.median(floor) * us:8.1f} us   "
          f"p95 {pct(floor, 0.95) * us:8.1f} us")
    print(f"  overhead of a check  : p50 "
          f"{(statistics.median(with_check) - statistics.median(floor)) * us:8.1f} us")


def polling(executions: int, interval: float, seconds: float, real_requests: bool,
            url: str) -> tuple[float, int]:
    """CPU seconds per wall second of ``executions`` verify steps polled for ``seconds``."""
    spec = RunbookSpec.model_validate({**SPEC, "steps": [{**SPEC["steps"][0], "query": {
        **SPEC["steps"][0]["query"], "interval": f"{interval:g}s"}}]})
    source = parse_source(f"name=prometheus,url={url}")

    def prepared(src: Source, expr: str, timeout: float, clock: Callable[[], datetime]) -> Check:
        return Check("Result", clock(), read_response(ANSWER.encode()))

    host = Host({"prometheus": source}, lambda: datetime.now(UTC),
                None if real_requests else prepared)
    now = datetime.now(UTC)
    runs = []
    due: list[datetime] = []
    for i in range(executions):
        obs = observation(spec, spec.to_k8s(), f"ex-{i}", now)
        runs.append(replace(obs, status=plan(obs).status))
        due.append(now)
    checks = 0

    def one(i: int) -> int:
        """One reconcile of execution i, as the operator makes it when it wakes."""
        obs = replace(runs[i], now=datetime.now(UTC))
        made = host.query_checks("production", "rb", spec, obs.params, obs.status)
        result = plan(replace(obs, checks=made))
        runs[i] = replace(obs, status=result.status)
        due[i] = result.wake_at or obs.now + timedelta(seconds=interval)
        return len(made)

    with ThreadPoolExecutor(max_workers=8) as pool:
        cpu0, wall0 = time.process_time(), time.monotonic()
        end = wall0 + seconds
        while time.monotonic() < end:
            now = datetime.now(UTC)
            ready = [i for i in range(executions) if due[i] <= now]
            checks += sum(pool.map(one, ready))
            wait = (min(due) - datetime.now(UTC)).total_seconds()
            time.sleep(max(0.0, min(wait, end - time.monotonic())))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return cpu / wall, checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 shared cores)")
    overhead(args.checks)
    stub = subprocess.Popen([sys.executable, "-c", STUB, ANSWER], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert stub.stdout is not None
        url = f"http://127.0.0.1:{stub.stdout.readline().strip()}"
        for real in (True, False):
            share, checks = polling(args.executions, args.interval, args.seconds, real, url)
            what = "stub Prometheus on 127.0.0.1" if real else "request excluded (floor)"
            print(f"{args.executions} verify steps, every {args.interval:g} s, "
                  f"{args.seconds:g} s, 8 workers, {what}: {checks} checks, "
                  f"operator CPU {share * 100:.1f} % of a core")
    finally:
        stub.terminate()
        stub.wait()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
