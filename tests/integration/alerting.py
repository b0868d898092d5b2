"""Real Prometheus and Alertmanager for tests of alert-driven executions.

The operator's webhook receiver must accept what Alertmanager really sends: its
payload version 4, its grouping, its resolved notifications, its retries and the
duplicates an HA pair produces. A hand-written payload only shows what its author
believed, so these tests run the upstream programs (built by
hack/build-alerting.sh, or found in ``RBO_ALERTING_BIN``) on 127.0.0.1 with
generated configurations, fed by an in-process exporter whose values the test sets:

    exporter -> Prometheus (deploy/alerting rules, every ``for:`` 0s) -> Alertmanager
             -> webhook (the operator, or the WebhookSink below)

Everything here is plain Python, no pytest: each class is a context manager that
starts on enter and stops on exit, and keeps its process's log file for failure
reports (``log_path``, ``tail()``). Waits are bounded polls (:func:`poll`).

Usage::

    with Exporter() as exporter, WebhookSink(token) as sink, \\
            Alertmanager(bin_dir, tmp / "am", webhook_url=sink.url,
                         token_file=token_file) as am, \\
            Prometheus(bin_dir, tmp / "prom", exporter=exporter,
                       alertmanagers=[am.address]):
        exporter.set("container_memory_working_set_bytes", labels, 950)
        sink.wait_for(lambda b: b["status"] == "firing")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-alerting.sh"
SHIPPED_RULES = REPO_ROOT / "deploy" / "alerting" / "prometheus-rules.yaml"
RECEIVER = "runbook-operator"  # the receiver's name in deploy/alerting/alertmanager.yaml

T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------

def alerting_bin() -> Path:
    """The directory holding prometheus, alertmanager and amtool.

    ``RBO_ALERTING_BIN`` if set, else hack/build-alerting.sh's last line (it builds
    them first when the cache is cold: minutes).
    """
    given = os.environ.get("RBO_ALERTING_BIN")
    if given:
        return Path(given)
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"hack/build-alerting.sh failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (Alertmanager's gossip uses both)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def poll(probe: Callable[[], T | None], timeout: float, what: str,
         interval: float = 0.1) -> T:
    """``probe()``'s first truthy result, retried until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http_json(url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """GET (or POST ``body`` as JSON to) ``url`` and decode the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def rules_without_for(source: Path, dest: Path, for_: str = "0s") -> Path:
    """Write ``source``'s rule groups to ``dest`` with every alert's ``for:`` set to ``for_``.

    The shipped rules wait minutes before firing; a test cannot.
    """
    doc = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


# -- the exporter ----------------------------------------------------------------------

def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exporter:
    """``/metrics`` in the Prometheus text format on 127.0.0.1, with values the test sets.

    Series are untyped samples; a histogram is its ``_bucket`` series with ``le``
    labels (plus ``_sum``/``_count`` if a rule needs them).
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                with exporter._lock:
                    exporter.scrapes += 1
                self.send_response(200)
                # Prometheus 3 refuses a scrape without a content type it knows.
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """``host:port``, as a Prometheus static target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def set(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Expose ``name{labels} value`` from the next scrape on."""
        with self._lock:
            self._series[(name, tuple(sorted(labels.items())))] = float(value)

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Stop exposing ``name{labels}`` (every series of ``name`` when labels is None)."""
        with self._lock:
            for key in list(self._series):
                if key[0] == name and (labels is None or key[1] == tuple(sorted(labels.items()))):
                    del self._series[key]

    def render(self) -> str:
        with self._lock:
            items = sorted(self._series.items())
        lines = []
        for (name, labels), value in items:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{inner}}} {_number(value)}" if inner
                         else f"{name} {_number(value)}")
        return "".join(line + "\n" for line in lines)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="alerting-exporter")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- the webhook sink ------------------------------------------------------------------

@dataclass(frozen=True)
class Notification:
    """One webhook request as received: its path, headers and decoded JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)


class WebhookSink:
    """A webhook receiver on 127.0.0.1 that keeps what Alertmanager sends.

    Requests without ``Authorization: Bearer <token>`` get 401 and are counted in
    ``rejected``, not kept. ``status`` (default 200) is the answer to accepted ones:
    set it to 500 to see Alertmanager retry.
    """

    def __init__(self, token: str, path: str = "/alerts") -> None:
        self.token = token
        self.path = path
        self.status = 200
        self.received: list[Notification] = []
        self.rejected = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != sink.path:
                    self.send_error(404)
                    return
                if self.headers.get("Authorization") != f"Bearer {sink.token}":
                    with sink._lock:
                        sink.rejected += 1
                    self.send_error(401)
                    return
                note = Notification(self.path, dict(self.headers.items()), json.loads(raw))
                with sink._lock:
                    sink.received.append(note)
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [n.body for n in self.received]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                 count: int = 1) -> list[dict[str, Any]]:
        """The first ``count`` bodies ``match`` accepts, waiting up to ``timeout`` seconds."""
        def found() -> list[dict[str, Any]] | None:
            hits = [b for b in self.bodies() if match(b)]
            return hits[:count] if len(hits) >= count else None
        return poll(found, timeout, f"{count} matching webhook notification(s); "
                    f"got {len(self.bodies())} in all, {self.rejected} rejected")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="alerting-webhook-sink")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- processes -------------------------------------------------------------------------

class _Process:
    """A child process writing to ``log_path``, ready when ``/-/ready`` answers 200."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        """``host:port`` of the HTTP API."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        self.wait_ready(timeout)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        def probe() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code}; see {self.log_path}:\n"
                                   f"{self.tail()}")
            return self.ready()
        try:
            poll(probe, timeout, f"{self.name} on {self.address} to be ready", interval=0.1)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; see {self.log_path}:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye to peers, like a node dying."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class Prometheus(_Process):
    """The real Prometheus server scraping ``exporter`` every second and evaluating
    ``rules`` (the shipped deploy/alerting rules, every ``for:`` set to ``rule_for``)
    every second, sending its alerts to ``alertmanagers`` (``host:port`` each).

    ``resend_delay`` is how often a still-firing alert is sent again (Prometheus'
    default is 1m; 1s here, so an Alertmanager started later hears of it at once).
    """

    name = "prometheus"

    def __init__(self, bin_dir: Path, workdir: Path, *, exporter: Exporter | str,
                 alertmanagers: Sequence[str] = (), rules: Path = SHIPPED_RULES,
                 rule_for: str = "0s", interval: str = "1s", resend_delay: str = "1s",
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.binary = bin_dir / "prometheus"
        self.target = exporter.target if isinstance(exporter, Exporter) else exporter
        self.alertmanagers = list(alertmanagers)
        self.rules = rules
        self.rule_for = rule_for
        self.interval = interval
        self.resend_delay = resend_delay
        self.extra_args = list(extra_args)
        self.config_path = workdir / "prometheus.yml"
        self.rules_path = workdir / "rules.yaml"

    def write_config(self) -> None:
        rules_without_for(self.rules, self.rules_path, self.rule_for)
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "rule_files": [self.rules_path.name],
            "scrape_configs": [{"job_name": "exporter",
                                "static_configs": [{"targets": [self.target]}]}],
        }
        if self.alertmanagers:
            config["alerting"] = {"alertmanagers": [
                {"api_version": "v2", "static_configs": [{"targets": self.alertmanagers}]}]}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        return [str(self.binary), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}",
                # generatorURL of its alerts: this address, not the host's name.
                f"--web.external-url={self.url}",
                f"--rules.alert.resend-delay={self.resend_delay}",
                *self.extra_args]

    def start(self, timeout: float = 60.0) -> None:
        """Start, and return once it has scraped the exporter and knows every
        Alertmanager: about 5 s, as its discovery hands targets to the scrape loop
        at most every 5 s. From then on an exporter value set by the test is seen
        within a second or two, and a firing alert sent at once.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        super().start(timeout)
        try:
            poll(lambda: self.target_health() == "up", timeout,
                 f"prometheus to scrape {self.target}", interval=0.2)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; see {self.log_path}:\n{self.tail()}") from None
        if self.alertmanagers:
            wanted = {f"http://{a}/api/v2/alerts" for a in self.alertmanagers}
            try:
                poll(lambda: wanted <= self.active_alertmanagers(), timeout,
                     f"prometheus to know alertmanagers {sorted(wanted)}", interval=0.2)
            except TimeoutError as e:
                raise TimeoutError(f"{e}; see {self.log_path}:\n{self.tail()}") from None

    def target_health(self) -> str | None:
        """The exporter target's health (``up``, ``down``, ``unknown``), None before discovery."""
        data = http_json(f"{self.url}/api/v1/targets?state=active")["data"]
        for target in data["activeTargets"]:
            if target["labels"].get("instance") == self.target:
                return str(target["health"])
        return None

    def active_alertmanagers(self) -> set[str]:
        """The Alertmanager URLs it sends to now (``/api/v1/alertmanagers``)."""
        data = http_json(f"{self.url}/api/v1/alertmanagers")["data"]
        return {a["url"] for a in data["activeAlertmanagers"]}

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (``/api/v1/query``)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return list(http_json(url)["data"]["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (``/api/v1/alerts``)."""
        return list(http_json(f"{self.url}/api/v1/alerts")["data"]["alerts"])


@dataclass
class Route:
    """The generated Alertmanager route: one webhook receiver for every alert."""

    group_by: Sequence[str] = ("alertname", "service")
    group_wait: str = "0s"
    group_interval: str = "1s"
    repeat_interval: str = "1h"


class Alertmanager(_Process):
    """The real Alertmanager sending every alert to ``webhook_url`` (receiver
    ``runbook-operator``, ``send_resolved: true``, ``max_alerts: 0``, a bearer token
    read from ``token_file``) with ``route``'s grouping and timers.

    Alone (``cluster_port`` None) its gossip is off. In a pair, see :func:`alertmanager_pair`.
    """

    name = "alertmanager"

    def __init__(self, bin_dir: Path, workdir: Path, *, webhook_url: str, token_file: Path,
                 route: Route | None = None, peer_name: str = "am0",
                 cluster_port: int | None = None, peers: Sequence[str] = (),
                 extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir)
        self.binary = bin_dir / "alertmanager"
        self.webhook_url = webhook_url
        self.token_file = token_file
        self.route = route or Route()
        self.peer_name = peer_name
        self.cluster_port = cluster_port
        self.peers = list(peers)
        self.extra_args = list(extra_args)
        self.config_path = workdir / "alertmanager.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"alertmanager-{self.peer_name}-{self.starts}.log"

    @property
    def cluster_address(self) -> str | None:
        return None if self.cluster_port is None else f"127.0.0.1:{self.cluster_port}"

    def write_config(self) -> None:
        config = {
            "route": {"receiver": RECEIVER, "group_by": list(self.route.group_by),
                      "group_wait": self.route.group_wait,
                      "group_interval": self.route.group_interval,
                      "repeat_interval": self.route.repeat_interval},
            "receivers": [{"name": RECEIVER, "webhook_configs": [{
                "url": self.webhook_url, "send_resolved": True, "max_alerts": 0,
                "http_config": {"authorization": {
                    "type": "Bearer", "credentials_file": str(self.token_file)}}}]}],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        args = [str(self.binary), f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address={self.address}",
                # The payload's externalURL: tells the members of a pair apart.
                f"--web.external-url={self.url}"]
        if self.cluster_address is None:
            args.append("--cluster.listen-address=")
        else:
            args += [f"--cluster.listen-address={self.cluster_address}",
                     f"--cluster.advertise-address={self.cluster_address}",
                     f"--cluster.peer-name={self.peer_name}",
                     "--cluster.settle-timeout=0s",
                     *(f"--cluster.peer={p}" for p in self.peers)]
        return [*args, *self.extra_args]

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        super().start(timeout)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """The alerts it holds (``GET /api/v2/alerts``), e.g. ``alerts(active="true")``."""
        query = ("?" + urllib.parse.urlencode(filters)) if filters else ""
        return list(http_json(f"{self.url}/api/v2/alerts{query}"))

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Send alerts as Prometheus would (``POST /api/v2/alerts``), no Prometheus needed."""
        http_json(f"{self.url}/api/v2/alerts", list(alerts))

    def status(self) -> dict[str, Any]:
        """``GET /api/v2/status``: config, uptime and ``cluster`` (name, peers, status)."""
        return dict(http_json(f"{self.url}/api/v2/status"))

    def peer_names(self) -> set[str]:
        return {p["name"] for p in self.status()["cluster"].get("peers") or []}


def alertmanager_pair(bin_dir: Path, workdir: Path, *, webhook_url: str, token_file: Path,
                      route: Route | None = None, peered: bool = True,
                      extra_args: Sequence[str] = ()) -> tuple[Alertmanager, Alertmanager]:
    """Two Alertmanagers, ``am0`` and ``am1``, not started (start them, or use
    :func:`running`). Peered, they gossip silences and the notification log and
    the second waits its turn before sending; unpeered, each sends on its own, as
    after a partition.
    """
    ports = [free_port(), free_port()] if peered else [None, None]
    members = []
    for i, port in enumerate(ports):
        other = ports[1 - i]
        members.append(Alertmanager(
            bin_dir, workdir / f"am{i}", webhook_url=webhook_url, token_file=token_file,
            route=route, peer_name=f"am{i}", cluster_port=port,
            peers=[f"127.0.0.1:{other}"] if other is not None else [],
            extra_args=extra_args))
    return members[0], members[1]


@contextlib.contextmanager
def running(*processes: _Process | Exporter | WebhookSink) -> Iterator[None]:
    """Start ``processes`` in order; stop those started in reverse order on exit."""
    with contextlib.ExitStack() as stack:
        for p in processes:
            stack.enter_context(p)
        yield


def zero_time(timestamp: str) -> bool:
    """Whether an Alertmanager timestamp is Go's zero time (a firing alert's ``endsAt``)."""
    return timestamp.startswith("0001-01-01T00:00:00")

