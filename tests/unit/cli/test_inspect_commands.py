"""The inspecting commands' I/O halves, with the cluster replaced by fakes.

Cases:
- logs: every attempt's lines prefixed ``[step/attempt]`` in start order; --attempt
  picks one; a step that never ran, an approval step, a pod that is gone and a pod
  whose logs the API server cannot give each get one line on stderr (an approval
  step only when named); an unknown
  step exits 2 naming the steps; nothing read exits 1. (The log-reading adapter is
  a stand-in here: kwok, the local kubelet, keeps no logs.)
- watch, plain (not a terminal): lines per change, the approve command printed once
  while a step waits; exit 0 Succeeded, 1 Failed, 2 Cancelled, 1 deleted, 3 when the
  stream ends (the deadline) before the run does;
- watch, live (a terminal): redrawn with rich Live, the final tree and outcome
  stay on screen, same exit codes;
- list: --runbook and --phase filters; -o json is a v1 List;
- circuit: each action patches spec.mode; a KEY is refused before any API call;
- startup: importing the plugin loads neither the kubernetes client, rich nor
  pydantic.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from runbook_operator.cli import inspect_commands as ic
from runbook_operator.cli.kubectl_plugin import build_parser

EXECUTION: dict[str, Any] = {
    "metadata": {"name": "ex", "namespace": "ns"},
    "status": {
        "runbookSpec": {"steps": [{"name": "probe"}, {"name": "gate", "type": "approval"},
                                  {"name": "fix"}, {"name": "later"}, {"name": "gone"}]},
        "steps": {
            "fix": {"phase": "Succeeded", "attempts": 1, "startedAt": "2026-12-01T03:02:00Z"},
            "probe": {"phase": "Failed", "attempts": 2, "startedAt": "2026-12-01T03:00:00Z"},
            "gate": {"phase": "Succeeded", "startedAt": "2026-12-01T03:01:00Z"},
            "later": {"phase": "Skipped", "reason": "WhenFalse"},
            "gone": {"phase": "Succeeded", "attempts": 1, "startedAt": "2026-12-01T03:03:00Z"},
        }},
}


class StandInLogs:
    """Pods and lines from a dict; ``None`` lines: the API server refuses."""

    def __init__(self, logs: dict[tuple[str, int], list[str] | None]) -> None:
        self.logs = logs
        self.followed: list[str] = []

    def pods(self, execution: str, step: str, attempt: int) -> list[ic.Pod]:
        assert execution == "ex"
        if (step, attempt) not in self.logs:
            return []
        return [ic.Pod(f"{execution}-{step}-{attempt}-abcde", step, attempt)]

    def lines(self, pod: ic.Pod, follow: bool) -> Iterator[str]:
        if follow:
            self.followed.append(pod.name)
        lines = self.logs[(pod.step, pod.attempt)]
        if lines is None:
            raise RuntimeError("container not found")
        yield from lines


def logs(step: str | None = None, attempt: int | None = None,
         follow: bool = False) -> tuple[int, list[str], list[str], StandInLogs]:
    source = StandInLogs({("probe", 1): ["connecting", "refused"], ("probe", 2): ["refused"],
                          ("fix", 1): None})
    out, err = io.StringIO(), io.StringIO()
    code = ic.print_logs(EXECUTION, step, attempt, follow, source, out, err)
    return code, out.getvalue().splitlines(), err.getvalue().splitlines(), source


def test_logs_of_every_step() -> None:
    code, out, err, _ = logs()
    assert code == 0
    assert out == ["[probe/1] connecting", "[probe/1] refused", "[probe/2] refused"]
    assert err == [  # the approval step, which never has a pod, is left out
        "fix/1: pod ex-fix-1-abcde: logs unavailable: RuntimeError: container not found",
        "gone/1: the pod is gone (deleted with its Job, or never created); its exit code "
        "and outputs are in `kubectl runbook get ex`",
    ]


def test_logs_of_one_attempt_followed() -> None:
    code, out, err, source = logs("probe", 2, follow=True)
    assert (code, out, err) == (0, ["[probe/2] refused"], [])
    assert source.followed == ["ex-probe-2-abcde"]


def test_logs_of_a_step_that_never_ran_or_has_no_pod() -> None:
    code, out, err, _ = logs("later")
    assert (code, out) == (1, [])
    assert err == ["later: never ran (Skipped: WhenFalse): no pod, no logs"]
    assert logs("gate")[2] == ["gate: an approval step runs in the operator: no pod, no logs"]


def test_logs_attempt_out_of_range_and_unknown_step() -> None:
    assert logs("probe", 3)[2] == ["probe: no attempt 3 (it has 2)"]
    code, _, err, _ = logs("nope")
    assert code == 2
    assert err == ["kubectl-runbook: execution ex has no step 'nope' "
                   "(steps: fix, gate, gone, later, probe)"]


def _events(*phases: str, steps: dict[str, Any] | None = None
            ) -> list[tuple[str, dict[str, Any]]]:
    return [("MODIFIED", {"metadata": {"name": "ex", "namespace": "ns"},
                          "status": {"phase": p, "progress": "1/2",
                                     "steps": steps or {"a": {"phase": p}}}})
            for p in phases]


@pytest.mark.parametrize(("final", "code"), [("Succeeded", 0), ("Failed", 1),
                                             ("Cancelled", 2)])
def test_watch_plain_exit_codes(final: str, code: int) -> None:
    out = io.StringIO()
    assert ic.watch(None, "ns", "ex", 10, out, _events("Running", final)) == code
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("a ") and "Running" in lines[0]
    assert lines[-1].startswith(f"ex: {final} (1/2)")
    assert "\x1b[" not in out.getvalue()


def test_watch_plain_timeout_deleted_and_approval_hint() -> None:
    out = io.StringIO()
    waiting = _events("WaitingForApproval", "WaitingForApproval",
                      steps={"gate": {"phase": "WaitingForApproval"}})
    assert ic.watch(None, "ns", "ex", 7, out, waiting) == 3
    text = out.getvalue()
    assert text.count("kubectl runbook approve ex gate -n ns") == 1
    assert text.endswith("ex: still WaitingForApproval after 7s\n")
    out = io.StringIO()
    assert ic.watch(None, "ns", "ex", 7, out, [*_events("Running"), ("DELETED", {})]) == 1
    assert out.getvalue().endswith("ex: deleted\n")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("final", "code"), [("Succeeded", 0), ("Failed", 1)])
def test_watch_live_on_a_terminal(final: str, code: int) -> None:
    out = Terminal()
    assert ic.watch(None, "ns", "ex", 10, out, _events("Running", final)) == code
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movement and colour: redrawn in place
    assert "1/2 steps" in text and f"ex: {final}" in text


class FakeApi:
    """A stand-in for cli.rest.Cluster: records paths, queries and patches."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[tuple[str, str, Any]] = []

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.calls.append(("get", path, query))
        return {"items": self.items}

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("patch", path, body))
        return {}


def run(monkeypatch: pytest.MonkeyPatch, api: FakeApi, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(ic, "connect", lambda args: (api, "ns"))
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    return args.handler(args, out, err), out.getvalue(), err.getvalue()


def _item(name: str, runbook: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-12-01T03:00:00Z"},
            "spec": {"runbookRef": {"name": runbook}}, "status": {"phase": phase}}


def test_list_filters_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi([_item("a-1", "a", "Failed"), _item("a-2", "a", "Succeeded"),
                   _item("b-1", "b", "Failed")])
    code, out, _ = run(monkeypatch, api, "ls", "--runbook", "a", "--phase", "failed")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "a-1"]
    assert api.calls[0] == ("get", "/apis/runbooks.dev/v1alpha1/namespaces/ns/runbookexecutions",
                            {"labelSelector": "runbooks.dev/runbook=a"})
    run(monkeypatch, api, "list", "-A")
    assert api.calls[-1][1] == "/apis/runbooks.dev/v1alpha1/runbookexecutions"
    code, out, _ = run(monkeypatch, api, "list", "-o", "json")
    listed = json.loads(out)
    assert listed["kind"] == "List" and len(listed["items"]) == 3
    code, out, err = run(monkeypatch, FakeApi([]), "list")
    assert (code, out, err) == (0, "", "No executions found in namespace ns.\n")


@pytest.mark.parametrize(("action", "mode"), [("reset", "Normal"), ("force-open", "ForcedOpen"),
                                              ("disable", "Disabled"),
                                              ("metrics-only", "MetricsOnly")])
def test_circuit_modes(monkeypatch: pytest.MonkeyPatch, action: str, mode: str) -> None:
    api = FakeApi([])
    code, out, _ = run(monkeypatch, api, "circuit", action, "ai")
    assert code == 0 and f"mode {mode}" in out
    assert api.calls == [("patch", "/apis/runbooks.dev/v1alpha1/namespaces/ns/circuitpolicies/ai",
                          {"spec": {"mode": mode}})]


def test_circuit_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi([])
    code, _, err = run(monkeypatch, api, "circuit", "force-open", "ai", "openai")
    assert code == 2 and "not to one key" in err
    assert api.calls == []


def test_startup_imports_nothing_heavy() -> None:
    probe = ("import sys, runbook_operator.cli.kubectl_plugin as p; p.build_parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'kubernetes', 'rich', 'pydantic', 'cel', 'yaml'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]"
