"""The local control plane (hack/cluster.py) and its kwok stages behave as the tests expect.

Cases:
1. The API server reports the pinned Kubernetes version (not v0.0.0-master).
2. A plain batch/v1 Job with no scripted annotations completes through kwok's
   default pod stages (condition Complete).
3. A Job (backoffLimit 0) whose pod asks for exit code 3 and message
   '{"healthy": false}' fails, and its pod's terminated state shows both.
4. Attempt-specific outcomes: `kwok.runbooks.dev/exit-code-<N>` (and message-<N>)
   apply to the pod whose `runbooks.dev/attempt` is N; other attempts use the
   generic annotation.
5. `kwok.runbooks.dev/duration` keeps a pod Running, so a Job with a short
   activeDeadlineSeconds fails with reason DeadlineExceeded.
6. The cached kubectl works with the cluster's kubeconfig.

Waits poll with a generous deadline; nothing asserts how fast things happen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client

from cluster import NODE_NAME, LocalCluster, _read_versions

T = TypeVar("T")
DEADLINE_S = 60.0


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def make_job(
    annotations: dict[str, str] | None = None,
    *,
    backoff_limit: int = 0,
    active_deadline_seconds: int | None = None,
) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=f"job-{uuid.uuid4().hex[:6]}"),
        spec=client.V1JobSpec(
            backoff_limit=backoff_limit,
            active_deadline_seconds=active_deadline_seconds,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="busybox")],
                ),
            ),
        ),
    )


def job_finished(
    batch: client.BatchV1Api, namespace: str, name: str
) -> client.V1JobCondition | None:
    """The Job's terminal condition (Complete or Failed) once it has one."""
    job = batch.read_namespaced_job(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type in ("Complete", "Failed") and cond.status == "True":
            return cond
    return None


def terminated_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def test_apiserver_reports_pinned_version(k8s_api: client.ApiClient) -> None:
    info = client.VersionApi(k8s_api).get_code()
    assert info.git_version == _read_versions()["K8S_VERSION"] == "v1.35.4"
    assert info.git_version != "v0.0.0-master"


def test_plain_job_completes(k8s_api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(k8s_api)
    job = batch.create_namespaced_job(namespace, make_job())

    cond = wait_for(
        "plain Job to finish", lambda: job_finished(batch, namespace, job.metadata.name)
    )

    assert cond.type == "Complete"


def test_scripted_exit_code_and_message_fail_the_job(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(k8s_api), client.CoreV1Api(k8s_api)
    annotations = {
        "kwok.runbooks.dev/exit-code": "3",
        "kwok.runbooks.dev/message": '{"healthy": false}',
    }
    job = batch.create_namespaced_job(namespace, make_job(annotations))

    cond = wait_for("Job to finish", lambda: job_finished(batch, namespace, job.metadata.name))

    assert cond.type == "Failed"
    assert cond.reason == "BackoffLimitExceeded"
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job.metadata.name}")
    assert len(pods.items) == 1
    pod = pods.items[0]
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert terminated.message == '{"healthy": false}'


def test_attempt_specific_exit_code_overrides_generic(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_api)
    common = {
        "kwok.runbooks.dev/exit-code": "0",
        "kwok.runbooks.dev/exit-code-2": "5",
        "kwok.runbooks.dev/message": "generic",
        "kwok.runbooks.dev/message-2": "second attempt",
    }
    for attempt in ("1", "2"):
        core.create_namespaced_pod(
            namespace,
            client.V1Pod(
                metadata=client.V1ObjectMeta(
                    name=f"attempt-{attempt}",
                    annotations={**common, "runbooks.dev/attempt": attempt},
                ),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="main", image="busybox")],
                ),
            ),
        )

    first = wait_for("attempt-1 to end", lambda: terminated_pod(core, namespace, "attempt-1"))
    second = wait_for("attempt-2 to end", lambda: terminated_pod(core, namespace, "attempt-2"))

    assert first.status.phase == "Succeeded"
    first_state = first.status.container_statuses[0].state.terminated
    assert (first_state.exit_code, first_state.reason) == (0, "Completed")
    assert first_state.message == "generic"
    assert second.status.phase == "Failed"
    second_state = second.status.container_statuses[0].state.terminated
    assert (second_state.exit_code, second_state.reason) == (5, "Error")
    assert second_state.message == "second attempt"


def test_duration_lets_active_deadline_kill_the_job(
    k8s_api: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(k8s_api)
    job = batch.create_namespaced_job(
        namespace,
        make_job({"kwok.runbooks.dev/duration": "30s"}, active_deadline_seconds=2),
    )

    cond = wait_for("Job to finish", lambda: job_finished(batch, namespace, job.metadata.name))

    assert cond.type == "Failed"
    assert cond.reason == "DeadlineExceeded"


def test_cached_kubectl_uses_kubeconfig(cluster: LocalCluster) -> None:
    out = cluster.kubectl("get", "nodes", "-o", "name").stdout.split()

    assert f"node/{NODE_NAME}" in out
