"""`kubectl runbook` against the real cluster, found by kubectl's plugin discovery.

Cases: `run -p ... --watch` converts parameters to their declared types, prints
each step and exits 0 on success and 1 on failure; a value of the wrong type is
refused before anything is created; `approve` and `reject` decide a waiting
approval step, recorded as the user the API server authenticated (not a flag);
`cancel` cancels.

Inspecting (issue #13): `list` shows phase, progress, severity and trigger and
filters by phase; `get` piped is plain text (no escape codes) with the step tree,
exit code, message, outputs, history and Events; `graph` colours an execution's
steps by phase; `watch` exits 0 Succeeded, 1 Failed, 2 Cancelled, 3 at --timeout;
in a real terminal (tmux) `watch` redraws the tree in place with a progress bar and
the approve command, and the screen keeps the final tree; `logs` says in one line
that kwok's pods have no logs; `circuits` lists a policy's circuits and `circuit
force-open|reset` sets its mode; `kubectl runbook <Tab>` (kubectl's plugin
completion through kubectl_complete-runbook) completes execution names.

Retry (issue #13): `retry first --from s4 --name second --watch` on a 5-step chain
whose s4 failed in `first` (kwok's `exit-code-in-<execution>` annotation: the same
frozen spec fails only in `first`, see test_resume.py) prints the new execution,
exits 0 when it Succeeds, creates Jobs for s4 and s5 only, and `get second` says
where it resumed from and what it reused; `retry` of an execution that does not
exist exits 2 and creates nothing; `retry --from` an unknown step with --watch
exits 1 (the operator refuses it: ResumeStepUnknown).
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kube import Kube, step

pytestmark = pytest.mark.integration


def plugin_env(cluster: Any) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), str(cluster.bin_dir),
                            os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path, KUBECONFIG=str(cluster.kubeconfig))


def plugin(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl runbook ...`: kubectl finds kubectl-runbook on PATH (the venv's bin)."""
    return subprocess.run(["kubectl", "runbook", *args], capture_output=True, text=True,
                          env=plugin_env(cluster), timeout=180)


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


def test_list_get_graph(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-insp", {"steps": [
        step("a", message='{"healthy": true}'),
        step("b", after=["a"], exit_code=2, message="boom"),
        step("c", after=["a"], when="steps.a.outputs.healthy")]})
    kube.execute("insp-1", "cli-insp", severity="SEV2")
    kube.wait_finished("insp-1")
    listed = plugin(cluster, "list", "-n", kube.ns)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "RUNBOOK", "PHASE", "PROGRESS", "SEVERITY", "TRIGGER",
                              "AGE", "DURATION"]
    assert row.split()[:6] == ["insp-1", "cli-insp", "Failed", "3/3", "SEV2", "Manual"]
    assert plugin(cluster, "ls", "-n", kube.ns, "--phase", "Succeeded").stdout == ""

    got = plugin(cluster, "get", "insp-1", "-n", kube.ns)
    assert got.returncode == 0, got.stderr
    text = got.stdout
    assert "\x1b[" not in text  # piped: plain
    assert "Phase:        Failed" in text
    assert "✖ b  Failed" in text and "exit 2" in text and "boom" in text
    assert 'outputs {"healthy": true}' in text and "when steps.a.outputs.healthy" in text
    assert "History (" in text and "StepFailed" in text
    assert "\nEvents\n" in text

    dot = plugin(cluster, "graph", "insp-1", "-n", kube.ns, "--format", "dot").stdout
    assert '"b" [label="b\\nFailed", fillcolor="#f4a6a6"];' in dot
    assert '"a" -> "c" [label="steps.a.outputs.healthy"];' in dot
    mermaid = plugin(cluster, "graph", "cli-insp", "-n", kube.ns).stdout
    assert mermaid.startswith("flowchart TD") and "classDef" not in mermaid
    missing = plugin(cluster, "get", "nope", "-n", kube.ns)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_watch_exit_codes(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-w-ok", {"steps": [step("a"), step("b", after=["a"])]})
    kube.ready_runbook("cli-w-fail", {"steps": [step("a", exit_code=3, message="bad")]})
    kube.ready_runbook("cli-w-long", {"steps": [step("long", duration="10m")]})
    kube.execute("w-ok", "cli-w-ok")
    kube.execute("w-fail", "cli-w-fail")
    kube.execute("w-cancel", "cli-w-long")
    kube.execute("w-slow", "cli-w-long")
    ok = plugin(cluster, "watch", "w-ok", "-n", kube.ns)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "w-ok: Succeeded (2/2)" in ok.stdout
    failed = plugin(cluster, "watch", "w-fail", "-n", kube.ns)
    assert failed.returncode == 1 and "bad" in failed.stdout
    slow = plugin(cluster, "watch", "w-slow", "-n", kube.ns, "--timeout", "3")
    assert slow.returncode == 3 and "w-slow: still Running after 3s" in slow.stdout
    kube.wait_phase("w-cancel", "Running")
    watcher = subprocess.Popen(["kubectl", "runbook", "watch", "w-cancel", "-n", kube.ns],
                               stdout=subprocess.PIPE, text=True, env=plugin_env(cluster))
    # The watch is open before the change it must see: it has printed the run's state.
    assert watcher.stdout is not None
    ready, _, _ = select.select([watcher.stdout], [], [], 120)
    assert ready and "long" in watcher.stdout.readline()
    kube.patch("runbookexecutions", "w-cancel", {"spec": {"cancel": True}})
    out, _ = watcher.communicate(timeout=120)
    assert watcher.returncode == 2, out
    assert "w-cancel: Cancelled" in out


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_watch_live_in_a_terminal(kube: Kube, cluster: Any, tmp_path: Path) -> None:
    kube.ready_runbook("cli-live", {"steps": [
        step("first", duration="2s"),
        {"name": "gate", "type": "approval", "dependsOn": ["first"],
         "approval": {"timeout": "10m"}},
        step("last", after=["gate"])]})
    kube.execute("live-1", "cli-live")
    session = f"rbo-{uuid.uuid4().hex[:8]}"
    env = plugin_env(cluster)
    status_file = tmp_path / "status"
    command = (f"kubectl runbook watch live-1 -n {kube.ns}; "
               f"echo $? > {shlex.quote(str(status_file))}; sleep 600")
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("PATH", "KUBECONFIG"))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                    f"env {exports} TERM=xterm-256color sh -c {shlex.quote(command)}"],
                   check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], check=True,
                              capture_output=True, text=True).stdout

    try:
        deadline = time.monotonic() + 90
        while "kubectl runbook approve live-1 gate" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.5)
        waiting = screen()
        assert "live-1" in waiting and "✔ first" in waiting and "steps" in waiting
        assert "elapsed" in waiting
        # redrawn in place: the tree's root appears once, not once per change
        assert waiting.count("live-1  WaitingForApproval") == 1, waiting
        assert plugin(cluster, "approve", "live-1", "gate", "-n", kube.ns).returncode == 0
        while not status_file.exists():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.5)
        assert status_file.read_text().strip() == "0"
        final = screen()
        assert "✔ last" in final and "live-1: Succeeded" in final
        assert "approved by rbo-admin" in final
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_logs_without_a_kubelet(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-logs", {"steps": [step("a"),
                                              step("b", after=["a"], when="false")]})
    kube.execute("logs-1", "cli-logs")
    kube.wait_finished("logs-1")
    out = plugin(cluster, "logs", "logs-1", "a", "-n", kube.ns)
    assert out.returncode == 1 and out.stdout == ""
    # kwok keeps no logs: whether its pod is still there or not, one line says so
    (line,) = out.stderr.splitlines()
    assert line.startswith("a/1: ") and ("logs unavailable" in line or "is gone" in line)
    skipped = plugin(cluster, "logs", "logs-1", "b", "-n", kube.ns)
    assert skipped.stderr == "b: never ran (Skipped: WhenFalse): no pod, no logs\n"


def test_circuits_and_modes(kube: Kube, cluster: Any) -> None:
    kube.circuit_policy("cli-cb")
    kube.ready_runbook("cli-guarded", {"params": [{"name": "provider", "type": "string"}],
                                       "steps": [step("call", exit_code=1, circuit={
                                           "policy": "cli-cb", "key": "params.provider"})]})
    for i in range(2):
        kube.execute(f"cb-{i}", "cli-guarded", {"provider": "openai"})
        kube.wait_finished(f"cb-{i}")

    def table() -> str:
        return plugin(cluster, "circuits", "-n", kube.ns).stdout

    deadline = time.monotonic() + 30
    while "Open" not in table():
        assert time.monotonic() < deadline, table()
        time.sleep(0.5)
    row = next(line for line in table().splitlines() if "openai" in line).split()
    assert row[:4] == ["cli-cb", "Normal", "openai", "Open"] and row[-2] == "in"
    assert plugin(cluster, "circuit", "force-open", "cli-cb", "-n", kube.ns).returncode == 0
    assert (kube.get("circuitpolicies", "cli-cb") or {})["spec"]["mode"] == "ForcedOpen"
    assert plugin(cluster, "circuit", "reset", "cli-cb", "-n", kube.ns).returncode == 0
    assert (kube.get("circuitpolicies", "cli-cb") or {})["spec"]["mode"] == "Normal"


def test_kubectl_completes_names(kube: Kube, cluster: Any) -> None:
    kube.ready_runbook("cli-names", {"steps": [step("a")]})
    kube.execute("names-1", "cli-names")
    done = subprocess.run(["kubectl", "__complete", "runbook", "get", "-n", kube.ns, ""],
                          capture_output=True, text=True, env=plugin_env(cluster), timeout=60)
    assert done.stdout.splitlines() == ["names-1", ":4"], done.stdout + done.stderr


def test_retry_from_a_failed_step(kube: Kube, cluster: Any) -> None:
    fail_in_first = {"annotations": {"kwok.runbooks.dev/exit-code-in-first": "3"}}
    kube.ready_runbook("chain5", {"steps": [
        step("s1"), step("s2", after=["s1"]),
        step("s3", after=["s2"], message='{"x": "from-s3"}'),
        step("s4", after=["s3"], podMetadata=fail_in_first), step("s5", after=["s4"])]})
    kube.execute("first", "chain5")
    assert kube.wait_finished("first")["status"]["phase"] == "Failed"
    out = plugin(cluster, "retry", "first", "--from", "s4", "--name", "second", "-n", kube.ns,
                 "--watch")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "runbookexecution.runbooks.dev/second created" in out.stdout
    assert sorted(j.metadata.labels["runbooks.dev/step"] for j in kube.jobs("second")) == \
        ["s4", "s5"]
    got = plugin(cluster, "get", "second", "-n", kube.ns)
    assert got.returncode == 0, got.stderr
    assert "Resumed from: first at step s4; reused: s1, s2, s3" in got.stdout
    assert "Reused" in got.stdout
    missing = plugin(cluster, "retry", "nope", "-n", kube.ns)
    assert missing.returncode == 2 and "nope" in missing.stderr
    assert sorted(e["metadata"]["name"] for e in kube.custom.list_namespaced_custom_object(
        "runbooks.dev", "v1alpha1", kube.ns, "runbookexecutions")["items"]) == \
        ["first", "second"]
    refused = plugin(cluster, "retry", "first", "--from", "s9", "--name", "third",
                     "-n", kube.ns, "--watch", "--timeout", "120")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert kube.execution("third")["status"]["reason"] == "ResumeStepUnknown"
    assert kube.jobs("third") == []
