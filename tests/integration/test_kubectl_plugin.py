"""`kubectl runbook` against the real cluster, found by kubectl's plugin discovery.

Cases: `run -p ... --watch` converts parameters to their declared types, prints
each step and exits 0 on success and 1 on failure; a value of the wrong type is
refused before anything is created; `approve` and `reject` decide a waiting
approval step, recorded as the user the API server authenticated (not a flag);
`cancel` cancels.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kube import Kube, step

pytestmark = pytest.mark.integration


def plugin(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl runbook ...`: kubectl finds kubectl-runbook on PATH (the venv's bin)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), str(cluster.bin_dir),
                            os.environ.get("PATH", "")])
    env = dict(os.environ, PATH=path, KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(["kubectl", "runbook", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def test_run_and_watch(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli", {"params": [{"name": "replicas", "type": "integer"},
                                          {"name": "dry_run", "type": "boolean"}],
                               "steps": [step("a"), step("b", after=["a"])]})
    out = plugin(cluster, "run", "cli", "-n", kube.ns, "-p", "replicas=3", "-p", "dry_run=yes",
                 "--watch")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "created" in out.stdout and "Succeeded (2/2)" in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith(("a ", "b "))]
    assert any("Succeeded" in line for line in lines if line.startswith("b "))
    (execution,) = kube.custom.list_namespaced_custom_object(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions")["items"]
    assert execution["spec"]["params"] == {"replicas": 3, "dry_run": True}


def test_run_watch_exits_1_on_failure(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-fail", {"steps": [step("a", exit_code=2, message="boom")]})
    out = plugin(cluster, "run", "cli-fail", "-n", kube.ns, "--watch")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Failed" in out.stdout and "boom" in out.stdout


def test_wrong_type_is_refused_before_creating(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-typed", {"params": [{"name": "replicas", "type": "integer"}],
                                     "steps": [step("a")]})
    out = plugin(cluster, "run", "cli-typed", "-n", kube.ns, "-p", "replicas=three")
    assert out.returncode == 2
    assert "'replicas' is integer" in out.stderr
    assert kube.custom.list_namespaced_custom_object(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions")["items"] == []


@pytest.mark.parametrize(("verb", "phase"), [("approve", "Succeeded"), ("reject", "Failed")])
def test_approve_and_reject(kube: Kube, cluster: Any, verb: str, phase: str) -> None:
    kube.ready_runbook("cli-gate", {"steps": [
        {"name": "gate", "type": "approval", "approval": {"timeout": "10m"}},
        step("act", after=["gate"])]})
    kube.execute("gate-1", "cli-gate")
    kube.wait_phase("gate-1", "WaitingForApproval")
    out = plugin(cluster, verb, "gate-1", "gate", "-n", kube.ns, "-m", "on call says so")
    assert out.returncode == 0, out.stderr
    body = kube.wait_finished("gate-1")
    assert body["status"]["phase"] == phase
    # `by` is who the API server says the caller is (the admin certificate's CN).
    assert body["spec"]["approvals"][0]["by"] == "rbo-admin"
    assert "rbo-admin" in body["status"]["steps"]["gate"]["message"]


def test_approve_a_step_that_is_not_waiting(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-nogate", {"steps": [step("a")]})
    kube.execute("nogate-1", "cli-nogate")
    kube.wait_finished("nogate-1")
    out = plugin(cluster, "approve", "nogate-1", "a", "-n", kube.ns)
    assert out.returncode == 2 and "not waiting for approval" in out.stderr


def test_cancel(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-long", {"steps": [step("long", duration="10m")]})
    kube.execute("long-1", "cli-long")
    kube.wait_phase("long-1", "Running")
    out = plugin(cluster, "cancel", "long-1", "-n", kube.ns)
    assert out.returncode == 0, out.stderr
    assert kube.wait_finished("long-1")["status"]["phase"] == "Cancelled"
