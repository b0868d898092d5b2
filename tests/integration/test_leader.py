"""Two operator replicas with leader election, on the local control plane.

Cases: of two replicas started with --leader-elect, exactly one holds the Lease and
runs the execution; the standby serves the alert receiver meanwhile (its watches
are live: the alert's runbook is found and the execution created); the leader is
SIGKILLed in the middle of a step, the standby takes the Lease over and finishes
the run, and every step ran exactly once (one Job each, attempt 1). The session's
operator (no election) is stopped during the test, so only the two replicas act.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube import Kube, step, wait_for
from kubernetes.client import CoordinationV1Api
from kubernetes.client.exceptions import ApiException

from cluster import LocalCluster
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(kube: Kube, cluster: LocalCluster, operator: OperatorProcess,
             tmp_path: Path) -> Iterator[dict[str, OperatorProcess]]:
    lease = f"rbo-{uuid.uuid4().hex[:6]}"
    procs = {name: OperatorProcess(
        cluster.kubeconfig, tmp_path / name, alerts_token="replica-token",
        extra_args=["--leader-elect", f"--leader-elect-namespace={kube.ns}",
                    f"--leader-elect-name={lease}", f"--leader-elect-identity={name}"])
        for name in ("a", "b")}
    operator.stop()  # only the replicas act during this test
    try:
        for proc in procs.values():
            proc.start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()
        operator.start()


def holder(kube: Kube, name: str) -> str | None:
    try:
        lease = CoordinationV1Api(kube.api).read_namespaced_lease(name, kube.ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return str(lease.spec.holder_identity) if lease.spec.holder_identity else None


def post_alert(proc: OperatorProcess, namespace: str) -> dict[str, object]:
    body = {"version": "4", "status": "firing", "receiver": "r", "groupKey": "{}:{}",
            "alerts": [{"status": "firing", "labels": {"alertname": "Failover",
                                                       "namespace": namespace},
                        "startsAt": "2026-12-01T10:00:00Z", "fingerprint": "fa11"}]}
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(
            proc.alerts_url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer replica-token"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = dict(json.loads(response.read()))
            if answer["outcomes"] != {"unmatched": 1}:  # its watch has seen the Runbook
                return answer
        except OSError:  # 503 while it reads the Runbooks, or not listening yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the standby's receiver never matched the Runbook")
        time.sleep(0.3)


def test_one_leader_acts_and_a_standby_takes_over(kube: Kube,
                                                  replicas: dict[str, OperatorProcess]
                                                  ) -> None:
    lease = replicas["a"].extra_args[2].split("=", 1)[1]
    kube.runbook("failover", {
        "triggers": {"alerts": [{"match": ['alertname="Failover"', f'namespace="{kube.ns}"']}]},
        "steps": [step("first"), step("slow", after=["first"], duration="20s"),
                  step("last", after=["slow"])]})
    leader = wait_for("a leader", lambda: holder(kube, lease), timeout=60)
    standby = "b" if leader == "a" else "a"

    # The standby's receiver works: its watches found the Runbook.
    wait_for("Runbook Ready", lambda: kube._ready("failover"), timeout=60)
    answer = post_alert(replicas[standby], kube.ns)
    assert answer["outcomes"] == {"created": 1}, answer
    (name,) = answer["created"]  # type: ignore[misc]

    # The leader runs it.
    wait_for("step slow running", lambda: ((kube.execution(name).get("status") or {})
                                           .get("steps") or {}).get("slow", {})
             .get("phase") == "Running", timeout=90)
    killed = time.monotonic()
    replicas[leader].kill()
    wait_for("the standby takes the Lease", lambda: holder(kube, lease) == standby,
             timeout=60, interval=0.1)
    # The figure docs/ha.md quotes (run with -s to see it); no threshold on this machine.
    print(f"\ntakeover: the standby held the Lease {time.monotonic() - killed:.1f} s "
          "after the leader's SIGKILL")
    body = kube.wait_finished(name, timeout=120)
    assert body["status"]["phase"] == "Succeeded"
    jobs = sorted(j.metadata.name for j in kube.jobs(name))
    assert len(jobs) == 3 and all(j.endswith("-1") for j in jobs), jobs
    assert {s["attempts"] for s in body["status"]["steps"].values()} == {1}
