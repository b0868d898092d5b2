"""A new leader carries every piece of state: replicas with leader election, a leader
killed (SIGKILL) or frozen (SIGSTOP) mid-work, on the local control plane.

Cases:
- the failover bug of issue 17, with two replicas (the leader killed) and three (the
  leader frozen):
  key ``x`` opened on the first leader stays Open with the same counts, openedAt and
  nextAttemptAt through the takeover and while the new leader opens ``y``; a run
  keyed ``x`` after the takeover fails fast (CircuitOpen, no Job); a frozen leader
  resumed afterwards exits with 70 (it re-checks the Lease before writing anything)
  and the circuits are unchanged after it woke;
- work in flight (killed, and frozen): 100 executions of a three-step chain running,
  a circuit Open and another HalfOpen with its one trial in flight, a bulkhead full
  with two runs in its line, webhook notifications being retried (the sink answers
  500 until the new leader holds the Lease) and a schedule every 30 s. After the
  takeover: every execution Succeeded with exactly one Job per step (attempt 1); the
  Open circuit kept its state and counts; the HalfOpen circuit admitted no second
  trial while the first was in flight and closed after it; the bulkhead never ran
  more than its two; every notification was answered 2xx exactly once (none lost,
  none sent twice after a success); every schedule slot from the first to the last
  has its one execution and none is counted missed. The time from the SIGKILL (or
  SIGSTOP) to the new leader's first status write is printed with the load.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube import Kube, step, wait_for
from test_leader import holder
from test_notifications import Sinks, secret

from cluster import LocalCluster
from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

GROUP, VERSION = "runbooks.dev", "v1alpha1"


class Replicas:
    """N operator replicas with leader election on one Lease, the session's stopped."""

    def __init__(self, kube: Kube, cluster: LocalCluster, tmp_path: Path, count: int,
                 **options: Any) -> None:
        self.kube = kube
        self.lease = f"rbo-{uuid.uuid4().hex[:6]}"
        self.procs = {name: OperatorProcess(
            cluster.kubeconfig, tmp_path / name,
            extra_args=["--leader-elect", f"--leader-elect-namespace={kube.ns}",
                        f"--leader-elect-name={self.lease}",
                        f"--leader-elect-identity={name}"], **options)
            for name in "abc"[:count]}

    def leader(self) -> str:
        return wait_for("a leader", lambda: holder(self.kube, self.lease), timeout=90)

    def stop_leader(self, how: str) -> tuple[str, float]:
        """SIGKILL or SIGSTOP the leader; (its name, the monotonic time it stopped)."""
        name = self.leader()
        proc = self.procs[name].proc
        assert proc is not None
        if how == "kill":
            self.procs[name].kill()
        else:
            os.kill(proc.pid, signal.SIGSTOP)
        return name, time.monotonic()

    def new_leader(self, old: str) -> str:
        return wait_for("another replica takes the Lease",
                        lambda: (h := holder(self.kube, self.lease)) not in (None, old) and h,
                        timeout=120, interval=0.1)

    def wake(self, name: str) -> int:
        """SIGCONT a frozen replica; the code it exits with."""
        proc = self.procs[name].proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGCONT)
        code = proc.wait(timeout=60)
        self.procs[name].proc = None
        return code


@pytest.fixture
def start_replicas(kube: Kube, cluster: LocalCluster, operator: OperatorProcess,
                   tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    made: list[Replicas] = []

    def start(count: int = 2, **options: Any) -> Replicas:
        replicas = Replicas(kube, cluster, tmp_path, count, **options)
        made.append(replicas)
        for proc in replicas.procs.values():
            proc.start()
        return replicas

    operator.stop()  # only the replicas act during these tests
    try:
        yield start
    finally:
        for replicas in made:
            for proc in replicas.procs.values():
                if proc.proc is not None and proc.proc.poll() is None:
                    os.kill(proc.proc.pid, signal.SIGCONT)
                proc.stop()
        operator.start()


def guarded(policy: str, key: str = "params.key", **extra: Any) -> dict[str, Any]:
    return step("call", exit_code=1, circuit={"policy": policy, "key": key}, **extra)


def fail_runs(kube: Kube, runbook: str, key: str, prefix: str, count: int = 3) -> None:
    for i in range(count):
        kube.execute(f"{prefix}-{i}", runbook, {"key": key})
    for i in range(count):
        kube.wait_finished(f"{prefix}-{i}", timeout=180)


KEPT = ("state", "calls", "openedAt", "nextAttemptAt", "transitions", "failureRate")


@pytest.mark.parametrize(("count", "how"), [(2, "kill"), (3, "freeze")])
def test_open_circuits_survive_a_failover(kube: Kube, start_replicas: Callable[..., Replicas],
                                          count: int, how: str) -> None:
    replicas = start_replicas(count)
    kube.circuit_policy("sp", minimumCalls=3, openDuration="10m")
    kube.ready_runbook("guarded", {"params": [{"name": "key"}], "steps": [guarded("sp")]})
    fail_runs(kube, "guarded", "x", "x")
    before = wait_for("x Open", lambda: (c := kube.circuits("sp").get("x")) and
                      c["state"] == "Open" and c)
    old, _ = replicas.stop_leader(how)
    replicas.new_leader(old)
    fail_runs(kube, "guarded", "y", "y")
    wait_for("y Open", lambda: kube.circuits("sp").get("y", {}).get("state") == "Open")
    after = kube.circuits("sp")["x"]
    assert {k: after.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
    kube.execute("x-after", "guarded", {"key": "x"})
    body = kube.wait_finished("x-after")
    assert body["status"]["steps"]["call"]["reason"] == "CircuitOpen"
    assert kube.jobs("x-after") == [], "an Open circuit must create no Job"
    if how == "freeze":
        assert replicas.wake(old) == 70
        assert "lost Lease" in replicas.procs[old].log_path.read_text()
    final = kube.circuits("sp")
    assert {k: final["x"].get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
    assert final["y"]["state"] == "Open"


class FirstWrite:
    """Watches the namespace's executions from a listing; when the first one changed."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.at: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        listing = self.kube.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.kube.ns, "runbookexecutions")
        version = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(version,), daemon=True)
        self._thread.start()

    def _run(self, version: str) -> None:
        watch = kubernetes.watch.Watch()
        for _ in watch.stream(self.kube.custom.list_namespaced_custom_object, GROUP, VERSION,
                              self.kube.ns, "runbookexecutions", resource_version=version,
                              timeout_seconds=300):
            self.at = time.monotonic()
            watch.stop()
            return


def slot_times(kube: Kube, runbook: str) -> list[float]:
    items = kube.custom.list_namespaced_custom_object(
        GROUP, VERSION, kube.ns, "runbookexecutions")["items"]
    found = []
    for item in items:
        spec = item.get("spec") or {}
        scheduled = ((spec.get("triggeredBy") or {}).get("schedule") or {}).get(
            "scheduledTime")
        if spec.get("runbookRef", {}).get("name") == runbook and scheduled:
            found.append(datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp())
    return sorted(found)


def step_of(kube: Kube, name: str, step_name: str) -> dict[str, Any]:
    return dict(((kube.execution(name).get("status") or {}).get("steps") or {})
                .get(step_name) or {})


def max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                   key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize(("count", "how"), [(2, "kill"), (2, "freeze"), (3, "kill")])
def test_takeover_with_work_in_flight(kube: Kube, start_replicas: Callable[..., Replicas],
                                      count: int, how: str) -> None:
    with Sinks() as sinks:
        run_work_in_flight(kube, start_replicas(count), sinks, count, how)


def run_work_in_flight(kube: Kube, replicas: Replicas, sinks: Sinks, count: int,
                       how: str) -> None:
    # Notifications being retried: the sink answers 500 until the takeover.
    sinks.scripts["/hook"] = [500]
    secret(kube, "hooks", {"url": sinks.url("/hook")})
    # Circuits: sp/x Open (10 min); hp/h HalfOpen with its one trial in flight.
    kube.circuit_policy("sp", minimumCalls=3, openDuration="10m")
    kube.circuit_policy("hp", minimumCalls=3, openDuration="3s",
                        halfOpen={"permittedCalls": 1})
    kube.circuit_policy("bh", bulkhead={"maxConcurrent": 2, "maxWait": "10m"})
    kube.ready_runbook("guarded", {"params": [{"name": "key"}], "steps": [guarded("sp")]})
    kube.ready_runbook("trial", {"params": [{"name": "key"}], "steps": [guarded("hp")]})
    kube.ready_runbook("trial-ok", {"params": [{"name": "key"}], "steps": [
        step("call", duration="40s", circuit={"policy": "hp", "key": "params.key"})]})
    kube.ready_runbook("bulk", {"steps": [
        step("call", duration="45s", circuit={"policy": "bh"})]})
    kube.ready_runbook("chain", {"steps": [step("a", duration="2s"),
                                           step("b", after=["a"], duration="10s"),
                                           step("c", after=["b"], duration="2s")]})
    kube.ready_runbook("notified", {
        "steps": [{"name": "tick", "type": "wait", "wait": {"duration": "100ms"}}],
        "notifications": [{"on": ["Succeeded"],
                           "webhook": {"urlSecretRef": {"name": "hooks", "key": "url"}}}]})
    kube.ready_runbook("tick", {
        "schedule": {"cron": "*/30 * * * * *"},
        "steps": [{"name": "tick", "type": "wait", "wait": {"duration": "100ms"}}]})

    fail_runs(kube, "guarded", "x", "x")
    fail_runs(kube, "trial", "h", "h")
    x_before = wait_for("x Open", lambda: (c := kube.circuits("sp").get("x")) and
                        c["state"] == "Open" and c)
    h_open = wait_for("h Open", lambda: (c := kube.circuits("hp").get("h")) and
                      c["state"] == "Open" and c)
    for i in range(100):
        kube.execute(f"chain-{i:03d}", "chain")
    wait_for("chains under way", lambda: sum(
        1 for i in range(100) if step_of(kube, f"chain-{i:03d}", "a").get("phase")
        in ("Running", "Succeeded")) >= 20, timeout=300, interval=1.0)
    # hp's openDuration has passed: the next call is its one HalfOpen trial.
    wait_for("hp's open duration over", lambda: datetime.now(UTC) >= parse(
        h_open["nextAttemptAt"]))
    kube.execute("h-trial", "trial-ok", {"key": "h"})
    wait_for("the trial running", lambda: step_of(kube, "h-trial", "call").get("phase")
             == "Running", timeout=120)
    for i in range(4):
        kube.execute(f"bulk-{i}", "bulk")
    wait_for("the bulkhead full, two in line", lambda: [
        step_of(kube, f"bulk-{i}", "call").get("reason") == "BulkheadFull"
        for i in range(4)].count(True) == 2, timeout=120)
    for i in range(5):
        kube.execute(f"notified-{i}", "notified")
    wait_for("notifications failing", lambda: len(sinks.requests["/hook"]) >= 5, timeout=120)

    old, stopped = replicas.stop_leader(how)
    first_write = FirstWrite(kube)
    first_write.start()
    replicas.new_leader(old)
    held = time.monotonic()
    sinks.scripts["/hook"] = [200]
    # While the trial is in flight, HalfOpen admits no second call.
    kube.execute("h-second", "trial", {"key": "h"})
    second = kube.wait_finished("h-second", timeout=180)
    assert second["status"]["steps"]["call"]["reason"] == "CircuitOpen"
    assert kube.jobs("h-second") == []
    wait_for("a status write by the new leader", lambda: first_write.at, timeout=120)
    assert first_write.at is not None
    print(f"\ntakeover ({count} replicas, {how}, 100 executions in flight): Lease held "
          f"{held - stopped:.1f} s, first status write {first_write.at - stopped:.1f} s "
          f"after the leader stopped; load {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")

    for i in range(100):
        body = kube.wait_finished(f"chain-{i:03d}", timeout=600)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        assert {s["attempts"] for s in body["status"]["steps"].values()} == {1}
    jobs = Counter(j.metadata.name for j in kube.jobs_all())
    chain_jobs = [n for n in jobs if n.startswith("chain-")]
    assert len(chain_jobs) == 300 and all(n.endswith("-1") for n in chain_jobs)
    assert kube.wait_finished("h-trial", timeout=180)["status"]["phase"] == "Succeeded"
    wait_for("h Closed after its trial",
             lambda: kube.circuits("hp")["h"]["state"] == "Closed")
    spans = []
    for i in range(4):
        assert kube.wait_finished(f"bulk-{i}", timeout=300)["status"]["phase"] == "Succeeded"
        st = step_of(kube, f"bulk-{i}", "call")
        spans.append((parse(st["startedAt"]), parse(st["finishedAt"])))
    assert max_overlap(spans) <= 2, spans
    x_after = kube.circuits("sp")["x"]
    assert {k: x_after.get(k) for k in KEPT} == {k: x_before.get(k) for k in KEPT}

    def delivered() -> bool:
        answered = [h.get("Idempotency-Key") for h, _ in sinks.requests["/hook"]]
        return len(set(answered)) == 5 and all(
            r.get("state") == "Delivered" for i in range(5)
            for r in (kube.execution(f"notified-{i}").get("status") or {})
            .get("notifications", []))
    try:
        wait_for("every notification delivered", delivered, timeout=180)
    except AssertionError:
        ledgers = {f"notified-{i}": (kube.execution(f"notified-{i}").get("status") or {})
                   .get("notifications") for i in range(5)}
        raise AssertionError(f"ledgers {ledgers}; answers {sinks.answers('/hook')}") from None
    # Each key got its 2xx once: after the first success nothing was sent again.
    successes = Counter(key for key, status in sinks.answers("/hook") if status == 200)
    assert set(successes.values()) == {1} and len(successes) == 5, successes

    if how == "freeze":
        assert replicas.wake(old) == 70
    slots = slot_times(kube, "tick")
    assert len(slots) >= 2, slots
    assert [b - a for a, b in itertools.pairwise(slots)] == \
        [30.0] * (len(slots) - 1), slots
    status = (kube.get("runbooks", "tick") or {}).get("status") or {}
    assert int((status.get("schedule") or {}).get("missed") or 0) == 0, status
