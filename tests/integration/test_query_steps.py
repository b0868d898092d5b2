"""Query steps against a real Prometheus scraping an exporter whose value the test moves.

    exporter (127.0.0.1, values set by the test) -> Prometheus (scrapes every 1 s)
        <- the operator's query steps (--query-source name=prometheus,...)

Cases:
- a verify step succeeds only after the value drops and stays down ``count`` checks;
- a verify step fails at ``failureLimit`` (QueryFailed) while the value stays high;
- a later step branches on the measured value (``steps.measure.outputs.value``);
- Prometheus stopped mid-run: the checks are retried per ``retry``, then the step
  fails SourceUnavailable, which opens the CircuitPolicy's circuit: the next run's
  query step fails CircuitOpen without a check;
- a source not allowed in the namespace fails SourceNotAllowed and its server never
  receives a request;
- SIGKILL of the operator between checks: the run of consecutive successes is
  neither lost nor doubled (every check of a steady low value is a success, so the
  step ends with exactly ``count`` checks);
- a hostile parameter value (``"} or vector(1) #`` and a newline) reaches Prometheus
  as a label value: the query matches nothing instead of answering 1.

The session's operator is restarted with the sources for this module and restored
after it.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from alerting import Exporter, Prometheus, alerting_bin
from kube import Kube, step, wait_for

from operator_process import OperatorProcess

METRIC = "ai_response_latency_seconds"
RESTRICTED_NS = "nobody-may-use-this"


class Recorder:
    """An HTTP server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self) -> None:
        self.requests = 0
        recorder = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests += 1
                self.send_response(500)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return alerting_bin()


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    with Exporter() as e:
        yield e


@pytest.fixture(scope="module")
def prometheus(bin_dir: Path, exporter: Exporter,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    exporter.set(METRIC, {"service": "warmup"}, 0)
    with Prometheus(bin_dir, tmp_path_factory.mktemp("prom"), exporter=exporter) as p:
        yield p


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


@pytest.fixture(scope="module")
def query_operator(operator: OperatorProcess, prometheus: Prometheus,
                   recorder: Recorder) -> Iterator[OperatorProcess]:
    before = list(operator.extra_args)
    operator.stop()
    operator.extra_args = [*before,
                           f"--query-source=name=prometheus,url={prometheus.url}",
                           f"--query-source=name=restricted,url={recorder.url},"
                           f"namespaces={RESTRICTED_NS}"]
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        operator.extra_args = before
        operator.start()


def latency(exporter: Exporter, service: str, seconds: float) -> None:
    exporter.set(METRIC, {"service": service}, seconds)


def seen(prometheus: Prometheus, service: str, value: float) -> None:
    """Wait until Prometheus has scraped ``value`` for ``service`` (a check before that
    would find no series)."""
    expr = urllib.parse.urlencode({"query": f'{METRIC}{{service="{service}"}}'})

    def probe() -> bool | None:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{expr}", timeout=5) as r:
            result = json.load(r)["data"]["result"]
        return (bool(result) and float(result[0]["value"][1]) == value) or None
    wait_for(f"Prometheus to see {service} = {value}", probe, timeout=60)


def verify_step(**query: Any) -> dict[str, Any]:
    return {"name": "verify", "type": "query", "timeout": "3m", "query": {
        "source": "prometheus", "expr": f"max({METRIC}{{service=$service}})",
        "successCondition": "has(result.value) && result.value < 5.0",
        "interval": "1s", **query}}


def spec(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"params": [{"name": "service"}], "steps": list(steps)}


def query_status(kube: Kube, name: str, step_name: str = "verify") -> dict[str, Any]:
    st = (kube.execution(name).get("status") or {}).get("steps", {}).get(step_name, {})
    return dict(st.get("query") or {})


def test_verify_succeeds_after_the_value_drops_and_stays_down(
        kube: Kube, query_operator: OperatorProcess, exporter: Exporter) -> None:
    service = f"{kube.ns}-a"
    latency(exporter, service, 9.0)
    kube.ready_runbook("recover", spec(verify_step(count=3)))
    kube.execute("run", "recover", {"service": service})
    wait_for("two checks of the high value",
             lambda: query_status(kube, "run").get("checks", 0) >= 2 or None, timeout=60)
    assert query_status(kube, "run").get("successes", 0) == 0
    latency(exporter, service, 1.0)
    done = kube.wait_finished("run")
    st = done["status"]["steps"]["verify"]
    assert done["status"]["phase"] == "Succeeded"
    assert (st["reason"], st["query"]["successes"]) == ("QuerySucceeded", 3)
    assert st["query"]["checks"] >= 5
    assert st["outputs"]["value"] == 1.0
    assert st["outputs"]["series"] == [{"labels": {}, "value": 1, "valueText": "1.0"}]  # max()


def test_verify_fails_at_failure_limit(kube: Kube, query_operator: OperatorProcess,
                                       exporter: Exporter) -> None:
    service = f"{kube.ns}-b"
    latency(exporter, service, 9.0)
    kube.ready_runbook("recover", spec(verify_step(
        count=3, failureCondition="has(result.value) && result.value > 8.0", failureLimit=2)))
    kube.execute("run", "recover", {"service": service})
    done = kube.wait_finished("run")
    st = done["status"]["steps"]["verify"]
    assert done["status"]["phase"] == "Failed"
    assert (st["phase"], st["reason"], st["query"]["failures"]) == ("Failed", "QueryFailed", 2)
    assert "2/2 failed" in st["message"]


def test_a_later_step_branches_on_the_measured_value(
        kube: Kube, query_operator: OperatorProcess, exporter: Exporter) -> None:
    service = f"{kube.ns}-c"
    latency(exporter, service, 7.5)
    measure = {"name": "measure", "type": "query", "query": {
        "source": "prometheus", "expr": f"max({METRIC}{{service=$service}})",
        "successCondition": "has(result.value)", "interval": "1s"}}
    kube.ready_runbook("branch", spec(
        measure,
        step("failover", after=["measure"], when="double(steps.measure.outputs.value) > 5.0"),
        step("leave", after=["measure"], when="double(steps.measure.outputs.value) <= 5.0")))
    kube.execute("run", "branch", {"service": service})
    done = kube.wait_finished("run")
    steps = done["status"]["steps"]
    assert done["status"]["phase"] == "Succeeded"
    assert steps["measure"]["outputs"]["value"] == 7.5
    assert steps["failover"]["phase"] == "Succeeded"
    assert (steps["leave"]["phase"], steps["leave"]["reason"]) == ("Skipped", "WhenFalse")


def test_prometheus_stopped_mid_run_retries_then_the_circuit_opens(
        kube: Kube, query_operator: OperatorProcess, exporter: Exporter, bin_dir: Path,
        tmp_path: Path) -> None:
    service = f"{kube.ns}-d"
    latency(exporter, service, 9.0)
    kube.circuit_policy("prom", minimumCalls=1)
    # Its own Prometheus: stopping it must not take the module's down.
    own = Prometheus(bin_dir, tmp_path / "prom", exporter=exporter)
    own.start()
    try:
        query_operator.stop()
        query_operator.extra_args = [*query_operator.extra_args,
                                     f"--query-source=name=own,url={own.url}"]
        query_operator.start()
        kube.ready_runbook("recover", spec({
            **verify_step(count=3, source="own"), "circuit": {"policy": "prom"},
            "retry": {"limit": 2, "backoff": {"initial": "1s", "factor": 1, "jitter": 0}}}))
        kube.execute("run", "recover", {"service": service})
        wait_for("a check answered by Prometheus",
                 lambda: query_status(kube, "run").get("checks", 0) >= 1 or None, timeout=60)
        own.stop()
        done = kube.wait_finished("run")
        st = done["status"]["steps"]["verify"]
        assert (st["phase"], st["reason"]) == ("Failed", "SourceUnavailable")
        assert st["query"]["errors"] == 3  # the first failure and its two retries
        assert "2 retries used" in st["message"]
        # That failed call opened the circuit: the next run does not ask at all.
        wait_for("the circuit Open", lambda: kube.circuits("prom").get("default", {})
                 .get("state") == "Open" or None, timeout=60)
        kube.execute("run2", "recover", {"service": service})
        again = kube.wait_finished("run2")["status"]["steps"]["verify"]
        assert (again["phase"], again["reason"]) == ("Failed", "CircuitOpen")
        assert "query" not in again  # no check was made
    finally:
        own.stop()
        query_operator.extra_args = query_operator.extra_args[:-1]
        query_operator.stop()
        query_operator.start()


def test_a_source_not_allowed_in_the_namespace_is_refused_before_any_query(
        kube: Kube, query_operator: OperatorProcess, recorder: Recorder) -> None:
    before = recorder.requests
    kube.ready_runbook("sneaky", spec(verify_step(source="restricted")))
    kube.execute("run", "sneaky", {"service": "x"})
    done = kube.wait_finished("run")
    st = done["status"]["steps"]["verify"]
    assert (st["phase"], st["reason"]) == ("Failed", "SourceNotAllowed")
    assert kube.ns in st["message"]
    assert recorder.requests == before


def test_sigkill_between_checks_neither_loses_nor_doubles_the_count(
        kube: Kube, query_operator: OperatorProcess, exporter: Exporter,
        prometheus: Prometheus) -> None:
    service = f"{kube.ns}-e"
    latency(exporter, service, 1.0)  # low from the start: every check is a success
    seen(prometheus, service, 1.0)
    kube.ready_runbook("recover", spec(verify_step(count=6, interval="2s")))
    kube.execute("run", "recover", {"service": service})
    wait_for("two successes in a row",
             lambda: query_status(kube, "run").get("successes", 0) >= 2 or None, timeout=60)
    query_operator.kill()
    kept = query_status(kube, "run")
    assert kept["successes"] == kept["checks"] >= 2
    query_operator.start()
    done = kube.wait_finished("run")
    q = done["status"]["steps"]["verify"]["query"]
    assert done["status"]["phase"] == "Succeeded"
    # Not lost (the kept successes count toward 6) and not doubled (no check twice).
    assert q["successes"] == q["checks"] == 6


def test_a_hostile_parameter_is_a_label_value_not_promql(
        kube: Kube, query_operator: OperatorProcess, exporter: Exporter) -> None:
    """Were ``"} or vector(1) #`` spliced in as text, Prometheus would answer 1."""
    latency(exporter, f"{kube.ns}-f", 9.0)
    hostile = '"} or vector(1) #\n{a=~".*'
    measure = {"name": "measure", "type": "query", "query": {
        "source": "prometheus", "expr": f"max({METRIC}{{service=$service}})",
        "successCondition": "result.empty"}}
    kube.ready_runbook("probe", spec(measure))
    kube.execute("run", "probe", {"service": hostile})
    done = kube.wait_finished("run")
    st = done["status"]["steps"]["measure"]
    assert (done["status"]["phase"], st["reason"]) == ("Succeeded", "QuerySucceeded")
    assert st["outputs"]["empty"] is True and "value" not in st["outputs"]
