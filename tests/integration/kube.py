"""Small helpers for integration tests: create runbooks and executions, wait, watch Jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.names import label_value

GROUP, VERSION = "runbooks.dev", "v1alpha1"
T = TypeVar("T")

OUTCOME = "kwok.runbooks.dev/"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0,
             interval: float = 0.25) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def planted_job(execution: str, uid: str, step: str, attempt: int, name: str,
                message: str) -> dict[str, Any]:
    """A Job someone other than the operator makes under a step's name, dressed as the
    step's (its labels, annotations and the run as controller), running another command
    and ending (kwok) with a forged termination message."""
    labels = {"app.kubernetes.io/managed-by": "runbook-operator",
              "runbooks.dev/execution": label_value(execution), "runbooks.dev/step": step,
              "runbooks.dev/attempt": str(attempt)}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"runbooks.dev/execution": execution},
                     "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}",
                                          "kind": "RunbookExecution", "name": execution,
                                          "uid": uid, "controller": True}]},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": labels, "annotations": {
                "runbooks.dev/execution": execution, "runbooks.dev/attempt": str(attempt),
                OUTCOME + "message": message}},
            "spec": {"restartPolicy": "Never", "containers": [
                {"name": "step", "image": "busybox:1.37",
                 "command": ["sh", "-c", f"echo '{message}' > /dev/termination-log"]}]}}},
    }


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str):
        self.api = api_client
        self.ns = namespace
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)

    # objects
    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, plural, body)

    def circuit_policy(self, name: str, **spec: Any) -> None:
        """A CircuitPolicy: Count window of 4, opens at 50 % failures over 2 calls, 1 h."""
        body = {"slidingWindow": {"type": "Count", "size": 4}, "minimumCalls": 2,
                "failureRateThreshold": 50, "openDuration": "1h", **spec}
        self.create("circuitpolicies", {"apiVersion": f"{GROUP}/{VERSION}",
                                        "kind": "CircuitPolicy", "metadata": {"name": name},
                                        "spec": body})

    def circuits(self, policy: str) -> dict[str, dict[str, Any]]:
        """The policy's circuits as its status shows them, by key."""
        body = self.get("circuitpolicies", policy) or {}
        return {c["key"]: c for c in (body.get("status") or {}).get("circuits", [])}

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name,
                                                          body)

    def runbook(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.create("runbooks", {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook",
                                        "metadata": {"name": name}, "spec": spec})

    def ready_runbook(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self.runbook(name, spec)
        return wait_for(f"runbook {name} Ready", lambda: self._ready(name), timeout=60)

    def _ready(self, name: str) -> dict[str, Any] | None:
        rb = self.get("runbooks", name)
        for c in ((rb or {}).get("status") or {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                return rb
        return None

    def execute(self, name: str, runbook: str, params: dict[str, Any] | None = None,
                **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
                "metadata": {"name": name},
                "spec": {"runbookRef": {"name": runbook}, "params": params or {}, **spec}}
        return self.create("runbookexecutions", body)

    def execution(self, name: str) -> dict[str, Any]:
        body = self.get("runbookexecutions", name)
        assert body is not None, f"execution {name} not found"
        return body

    def wait_phase(self, name: str, *phases: str, timeout: float = 90.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            body = self.get("runbookexecutions", name)
            phase = ((body or {}).get("status") or {}).get("phase")
            return body if phase in phases else None
        return wait_for(f"execution {name} in {phases}", probe, timeout=timeout)

    def wait_finished(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        return self.wait_phase(name, "Succeeded", "Failed", "Cancelled", timeout=timeout)

    def jobs(self, execution: str) -> list[Any]:
        return self.batch.list_namespaced_job(
            self.ns, label_selector=f"runbooks.dev/execution={label_value(execution)}").items

    def jobs_all(self) -> list[Any]:
        """Every Job of the namespace."""
        return self.batch.list_namespaced_job(self.ns).items

    def events(self, name: str) -> list[Any]:
        return self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name}").items


def step(name: str, *, after: list[str] | None = None, exit_code: int | None = None,
         message: str | None = None, duration: str | None = None,
         per_attempt: dict[int, int] | None = None, image: str = "busybox:1.37",
         **extra: Any) -> dict[str, Any]:
    """A run step whose kwok outcome is scripted through pod annotations."""
    annotations: dict[str, str] = {}
    if exit_code is not None:
        annotations[OUTCOME + "exit-code"] = str(exit_code)
    if message is not None:
        annotations[OUTCOME + "message"] = message
    if duration is not None:
        annotations[OUTCOME + "duration"] = duration
    for attempt, code in (per_attempt or {}).items():
        annotations[f"{OUTCOME}exit-code-{attempt}"] = str(code)
    body: dict[str, Any] = {"name": name, "image": image, "command": ["sh", "-c", "true"],
                            **extra}
    if after:
        body["dependsOn"] = after
    if annotations:
        body["podMetadata"] = {"annotations": annotations}
    return body


@dataclass
class JobWatch:
    """Watches a namespace's Jobs in a thread and tracks how many are active at once."""

    api: kubernetes.client.ApiClient
    namespace: str
    active: set[str] = field(default_factory=set)
    created: dict[str, datetime] = field(default_factory=dict)
    finished: dict[str, datetime] = field(default_factory=dict)
    max_active: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> JobWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        batch = kubernetes.client.BatchV1Api(self.api)
        rv = batch.list_namespaced_job(self.namespace).metadata.resource_version
        self._ready.set()
        while not self._stop.is_set():
            w = kubernetes.watch.Watch()
            try:
                for ev in w.stream(batch.list_namespaced_job, self.namespace,
                                   resource_version=rv, timeout_seconds=5):
                    job = ev["object"]
                    rv = job.metadata.resource_version
                    self._observe(ev["type"], job)
                    if self._stop.is_set():
                        break
            except ApiException:
                rv = batch.list_namespaced_job(self.namespace).metadata.resource_version

    def _observe(self, kind: str, job: Any) -> None:
        name = job.metadata.name
        done = any(c.type in ("Complete", "Failed") and c.status == "True"
                   for c in (job.status.conditions or []))
        if name not in self.created:
            self.created[name] = job.metadata.creation_timestamp
        if kind == "DELETED" or done:
            self.active.discard(name)
            if done and name not in self.finished:
                cond = next(c for c in job.status.conditions
                            if c.type in ("Complete", "Failed") and c.status == "True")
                self.finished[name] = cond.last_transition_time
        elif name not in self.finished:
            self.active.add(name)
        self.max_active = max(self.max_active, len(self.active))


@dataclass
class PodWatch:
    """Watches a namespace's step pods in a thread: how many have not terminated at once.

    A pod counts from its first sighting until its phase is Succeeded or Failed (or it
    is deleted); ``order`` lists (event, pod) in the watch's order, which is the API
    server's, so "a terminated before b was created" needs no clock.
    """

    api: kubernetes.client.ApiClient
    namespace: str
    running: set[str] = field(default_factory=set)
    terminated: set[str] = field(default_factory=set)
    steps: dict[str, str] = field(default_factory=dict)
    order: list[tuple[str, str]] = field(default_factory=list)
    max_running: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> PodWatch:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _run(self) -> None:
        core = kubernetes.client.CoreV1Api(self.api)
        rv = core.list_namespaced_pod(self.namespace).metadata.resource_version
        self._ready.set()
        while not self._stop.is_set():
            try:
                for ev in kubernetes.watch.Watch().stream(
                        core.list_namespaced_pod, self.namespace, resource_version=rv,
                        timeout_seconds=5):
                    pod = ev["object"]
                    rv = pod.metadata.resource_version
                    self._observe(ev["type"], pod)
                    if self._stop.is_set():
                        break
            except ApiException:
                rv = core.list_namespaced_pod(self.namespace).metadata.resource_version

    def _observe(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if name not in self.steps:
            self.steps[name] = (pod.metadata.labels or {}).get("runbooks.dev/step", "")
            self.order.append(("created", name))
        if not pod.spec.scheduling_gates and ("ungated", name) not in self.order:
            self.order.append(("ungated", name))  # free to run (a staged pod: lifted)
        if kind == "DELETED" or pod.status.phase in ("Succeeded", "Failed"):
            self.running.discard(name)
            if name not in self.terminated:
                self.terminated.add(name)
                self.order.append(("terminated", name))
        elif name not in self.terminated:
            self.running.add(name)
        self.max_running = max(self.max_running, len(self.running))

    def seen(self, event: str, step: str) -> int:
        """The position in ``order`` of the first ``event`` of a pod of ``step``."""
        return next(i for i, (e, name) in enumerate(self.order)
                    if e == event and self.steps[name] == step)
