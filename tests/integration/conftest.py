"""Fixtures for tests against a real local control plane (hack/cluster.py).

- `cluster` (session): a LocalCluster. With KUBECONFIG_RBO set, that already-running
  cluster is used as is; if the local cluster is already up (`python hack/cluster.py
  up`), it is reused and left running; otherwise it is started for the session and
  stopped at the end.
- `k8s_api` (session): a kubernetes.client.ApiClient for the cluster.
- `namespace` (function): a fresh namespace, deleted afterwards.
- `operator` (session): the operator as a real process, its Alertmanager receiver on
  (``operator.alerts_url``, token ``ALERTS_TOKEN``); `kube` (function): a
  helper on a fresh namespace; `traced` (function): in place of the session's
  operator, one exporting traces to a real OTLP/HTTP receiver on 127.0.0.1.

Every test under tests/integration is marked `integration`. When one fails, the
report gets the tail of each control-plane component's log.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "hack"))

from cluster import LocalCluster  # noqa: E402

INTEGRATION_DIR = Path(__file__).resolve().parent
_active_cluster: LocalCluster | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Attach component logs to failures: a failing integration test is often a
    # control-plane problem (kwok stage, controller), not a test problem.
    if report.failed and _active_cluster is not None:
        tails = _active_cluster.log_tails(25)
        text = [f"logs dir: {_active_cluster.logs_dir}"]
        text += [f"--- {name}.log (last 25 lines)\n{tail}" for name, tail in tails.items()]
        report.sections.append(("control-plane logs", "\n".join(text)))
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    global _active_cluster
    external = os.environ.get("KUBECONFIG_RBO")
    owned = False
    if external:
        # Only used, never started or stopped. If it is a hack/cluster.py state dir,
        # its logs/ sit beside the kubeconfig and failure reports include them.
        c = LocalCluster(state_dir=Path(external).resolve().parent)
        c.kubeconfig = Path(external)
    else:
        c = LocalCluster()
        # A cluster a developer already started is reused and left running.
        if not c.is_up():
            c.up()
            owned = True
    _active_cluster = c
    try:
        yield c
    finally:
        _active_cluster = None
        if owned:
            c.down()


@pytest.fixture(scope="session")
def k8s_api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def namespace(k8s_api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(k8s_api)
    name = f"rbo-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are rejected until the ServiceAccount controller creates `default`.
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


# -- the operator under test ---------------------------------------------------------

sys.path.insert(0, str(INTEGRATION_DIR))

from kube import Kube  # noqa: E402

from operator_process import OperatorProcess  # noqa: E402  (hack/, on the path above)

sys.path.insert(0, str(REPO_ROOT / "tests" / "unit" / "observability"))

from otlp_receiver import OtlpReceiver  # noqa: E402

ALERTS_TOKEN = f"alerts-{uuid.uuid4().hex}"
"""The bearer token of the session operator's Alertmanager receiver."""


@pytest.fixture(scope="session")
def crds(cluster: LocalCluster) -> None:
    """Install the generated CRDs and wait, on the API's own state, until established.

    ``kubectl wait`` right after an apply can exit 1 on a loaded machine (the CRD not
    yet in its cache); reading the CRDs' conditions again until they hold, and saying
    what the API answered when they never do, does not.
    """
    out = cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds"),
                          check=False)
    assert out.returncode == 0, f"kubectl apply of the CRDs failed: {out.stderr}"
    names = ["runbooks.runbooks.dev", "runbookexecutions.runbooks.dev",
             "circuitpolicies.runbooks.dev"]
    deadline = time.monotonic() + 120
    last = ""
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "crd", *names, "-o", "json", check=False)
        last = out.stderr or out.stdout
        if out.returncode == 0:
            items = json.loads(out.stdout).get("items") or []
            established = [
                any(c.get("type") == "Established" and c.get("status") == "True"
                    for c in (item.get("status") or {}).get("conditions") or [])
                for item in items]
            if len(items) == len(names) and all(established):
                return
            last = f"established: {dict(zip(names, established, strict=False))}"
        time.sleep(0.5)
    pytest.fail(f"the CRDs were not Established within 120 s; the API last said: {last}")


@pytest.fixture(scope="session")
def operator(cluster: LocalCluster, crds: None,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator process for the session (tests may kill and restart it).

    At the end, every line it logged in the whole run must be a JSON object with
    the pipeline's fields: a stray print or an unrouted library log fails here.
    """
    log_dir = tmp_path_factory.mktemp("operator")
    proc = OperatorProcess(cluster.kubeconfig, log_dir, alerts_token=ALERTS_TOKEN)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert_json_logs(log_dir)


def assert_json_logs(log_dir: Path) -> None:
    """Every line of every ``operator-*.log`` is a JSON log record."""
    bad = []
    for path in sorted(log_dir.glob("operator-*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
                ok = isinstance(record, dict) and \
                    {"timestamp", "level", "logger", "event"} <= record.keys()
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"{path.name}:{number}: {line[:200]}")
    assert not bad, "operator log lines that are not JSON records:\n" + "\n".join(bad[:20])


@pytest.fixture
def kube(k8s_api: client.ApiClient, namespace: str, operator: OperatorProcess,
         request: pytest.FixtureRequest) -> Iterator[Kube]:
    yield Kube(k8s_api, namespace)
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()  # a test that killed it must not take the rest down with it


@dataclass
class Traced:
    receiver: OtlpReceiver
    operator: OperatorProcess


@pytest.fixture
def traced(kube: Kube, cluster: LocalCluster, operator: OperatorProcess,
           tmp_path: Path) -> Iterator[Traced]:
    """An operator exporting to a real OTLP/HTTP receiver; the session's waits meanwhile."""
    with OtlpReceiver() as receiver:
        proc = OperatorProcess(cluster.kubeconfig, tmp_path / "traced", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "runbook-operator", "OTEL_BSP_SCHEDULE_DELAY": "200"})
        operator.stop()  # one operator at a time
        try:
            proc.start()
            yield Traced(receiver, proc)
        finally:
            proc.stop()
            operator.start()
    assert_json_logs(tmp_path / "traced")


@pytest.fixture
def kubectl(cluster: LocalCluster) -> Callable[..., str]:
    def run(*args: str) -> str:
        out = cluster.kubectl(*args)
        assert out.returncode == 0, out.stderr
        return str(out.stdout)
    return run


def pytest_exception_interact(node: pytest.Item, call: pytest.CallInfo[None],
                              report: pytest.TestReport) -> None:
    proc = getattr(node, "funcargs", {}).get("operator") if hasattr(node, "funcargs") else None
    if isinstance(proc, OperatorProcess):
        report.sections.append(("operator log", f"{proc.log_path}\n{proc.tail(60)}"))
