"""cli.views: what list, get, watch, graph and circuits print, from plain dicts.

Cases:
- GROUP/VERSION repeated in views equal api.common's;
- exit codes: Succeeded 0, Failed 1, Cancelled 2, anything else (timeout) 3;
- durations in kubectl's style; timestamps with Z, offsets, garbage;
- trigger: Manual by default, ``Alert <alertname>``, Schedule;
- list table: newest first; severity from spec.severity, else params.severity, else
  the alert's label; running duration counts to now; -A adds NAMESPACE; wide adds
  REASON and MESSAGE (folded to one line);
- DAG order: a fan-out/join nests single-dependency steps under their dependency and
  puts the join after all of its dependencies; a cycle or an unknown dependency
  still lists every step once;
- get of a run not started yet draws the live Runbook's steps, and says so;
- get of a resumed run: ``Resumed from: SOURCE at step STEP; reused: A, B``;
- get (describe): the exact plain text of a run with a circuit, a retried failure,
  a `when`, outputs, a join, an approval (who, when, comment), finally, history and
  Events; no escape codes without colour, escape codes with it;
- outputs are folded to one line and cut with their size;
- approve hints name the command for each waiting step;
- plain watch lines: only changed steps, attempts, the final line with duration;
- graph: mermaid and dot, `when` on edges, fallback and finally edges dashed, nodes
  classed/filled by phase for an execution;
- circuits table: Open with its retry time (`due` once past), rates as percent, a
  policy without circuits;
- progress from status.progress, else counted; the live view shows bar and elapsed;
- the sample of `get` in docs/cli.md is this exact text;
- get never shows a parameter the frozen Runbook declares secret, nor a value under a
  sensitive key.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from runbook_operator.api import common
from runbook_operator.cli import graphs, views

NOW = datetime(2026, 12, 1, 3, 5, tzinfo=UTC)

SPEC: dict[str, Any] = {
    "steps": [
        {"name": "probe", "image": "x",
         "circuit": {"policy": "ai-providers", "key": "params.provider", "onOpen": "Fallback",
                     "fallback": "use-backup"}},
        {"name": "use-backup", "image": "x"},
        {"name": "clear-cache", "image": "x", "dependsOn": ["probe"],
         "when": "!steps.probe.outputs.healthy"},
        {"name": "approve-failover", "type": "approval",
         "dependsOn": ["clear-cache", "use-backup"]}],
    "finally": [{"name": "report", "image": "x"}],
}

BODY: dict[str, Any] = {
    "metadata": {"name": "ai-service-recovery-x7k2", "namespace": "prod",
                 "creationTimestamp": "2026-12-01T03:00:00Z"},
    "spec": {"runbookRef": {"name": "ai-service-recovery"}, "params": {"provider": "openai"},
             "triggeredBy": {"kind": "Alert", "alert": {
                 "name": "AIProviderErrors", "fingerprint": "3f2c",
                 "labels": {"severity": "critical"}}},
             "approvals": [{"step": "approve-failover", "decision": "Approve", "by": "carol",
                            "comment": "go"}]},
    "status": {
        "phase": "Succeeded", "progress": "5/5", "startedAt": "2026-12-01T03:00:01Z",
        "finishedAt": "2026-12-01T03:02:13Z", "runbookSpec": SPEC,
        "steps": {
            "probe": {"phase": "Failed", "attempts": 3, "exitCode": 1, "reason": "Error",
                      "message": "exit code 1", "startedAt": "2026-12-01T03:00:01Z",
                      "finishedAt": "2026-12-01T03:00:40Z",
                      "circuit": "ai-providers/openai"},
            "use-backup": {"phase": "Succeeded", "attempts": 1, "exitCode": 0,
                           "startedAt": "2026-12-01T03:00:41Z",
                           "finishedAt": "2026-12-01T03:00:45Z",
                           "outputs": {"provider": "anthropic"}},
            "clear-cache": {"phase": "Succeeded", "attempts": 1, "exitCode": 0,
                            "startedAt": "2026-12-01T03:00:41Z",
                            "finishedAt": "2026-12-01T03:00:44Z"},
            "approve-failover": {"phase": "Succeeded", "reason": "Approved",
                                 "message": "approved by carol: go",
                                 "startedAt": "2026-12-01T03:00:45Z",
                                 "finishedAt": "2026-12-01T03:02:10Z"},
            "report": {"phase": "Succeeded", "attempts": 1, "exitCode": 0,
                       "startedAt": "2026-12-01T03:02:10Z",
                       "finishedAt": "2026-12-01T03:02:12Z"}},
        "history": [{"time": "2026-12-01T03:02:10Z", "event": "StepSucceeded",
                     "step": "approve-failover", "message": "approved by carol: go"}]},
}
EVENTS = [{"type": "Normal", "reason": "StepSucceeded", "message": "step probe: done",
           "lastTimestamp": "2026-12-01T03:00:44Z"}]

EXPECTED_GET = """\
Name:         ai-service-recovery-x7k2
Namespace:    prod
Runbook:      ai-service-recovery
Phase:        Succeeded
Progress:     5/5
Severity:     critical
Trigger:      Alert AIProviderErrors (3f2c)
Started:      2026-12-01T03:00:01Z
Duration:     2m12s
Params:       {"provider": "openai"}

ai-service-recovery-x7k2  Succeeded
├── ✖ probe  Failed  39s  attempt 3  exit 1
│   ├── Error: exit code 1
│   ├── circuit ai-providers/openai
│   └── ✔ clear-cache  Succeeded  3s  exit 0
│       └── when !steps.probe.outputs.healthy
├── ✔ use-backup  Succeeded  4s  exit 0
│   └── outputs {"provider": "anthropic"}
├── ✔ approve-failover  Succeeded  1m25s
│   ├── after clear-cache, use-backup
│   ├── Approved: approved by carol: go
│   └── approved by carol at 2026-12-01T03:02:10Z: 'go'
└── finally
    └── ✔ report  Succeeded  2s  exit 0

History (1)
2026-12-01T03:02:10Z  StepSucceeded  approve-failover  approved by carol: go

Events
AGE    TYPE    REASON         MESSAGE
4m16s  Normal  StepSucceeded  step probe: done
"""


def render(parts: list[Any], color: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=color,
                      color_system="truecolor" if color else None, highlight=False)
    for part in parts:
        console.print(part)
    return out.getvalue()


def test_constants_match_the_api() -> None:
    assert (views.GROUP, views.VERSION) == (common.GROUP, common.VERSION)


def test_exit_codes() -> None:
    assert [views.exit_code_of(p) for p in ("Succeeded", "Failed", "Cancelled", "Running",
                                            None)] == [0, 1, 2, 3, 3]


def test_durations_and_times() -> None:
    assert [views.human_duration(s) for s in (None, -3, 0, 59, 60, 192, 3600, 7500,
                                              86400 * 3 + 3600 * 4)] == \
        ["", "0s", "0s", "59s", "1m", "3m12s", "1h", "2h5m", "3d4h"]
    assert views.parse_time("2026-12-01T03:00:00Z") == datetime(2026, 12, 1, 3, tzinfo=UTC)
    assert views.parse_time("2026-12-01T04:00:00+01:00") == datetime(2026, 12, 1, 3,
                                                                     tzinfo=UTC)
    assert views.parse_time("yesterday") is None and views.parse_time(None) is None


def test_trigger() -> None:
    assert views.trigger_of({}) == "Manual"
    assert views.trigger_of({"triggeredBy": {"kind": "Alert", "alert": {"name": "X"}}}) \
        == "Alert X"
    assert views.trigger_of({"triggeredBy": {"kind": "Schedule"}}) == "Schedule"


def _execution(name: str, created: str, spec: dict[str, Any],
               status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"runbookRef": {"name": "rb"}, **spec}, "status": status}


def test_execution_table() -> None:
    items = [
        _execution("old", "2026-12-01T01:00:00Z", {"severity": "SEV1",
                                                   "params": {"severity": "SEV3"}},
                   {"phase": "Failed", "progress": "1/2", "startedAt": "2026-12-01T01:00:00Z",
                    "finishedAt": "2026-12-01T01:00:30Z", "reason": "StepFailed",
                    "message": "step a\nfailed"}),
        _execution("new", "2026-12-01T03:00:00Z", {"params": {"severity": "SEV3"},
                                                   "triggeredBy": {"kind": "Schedule"}},
                   {"phase": "Running", "startedAt": "2026-12-01T03:00:00Z"}),
        _execution("alert", "2026-12-01T02:00:00Z", {"triggeredBy": {
            "kind": "Alert", "alert": {"name": "HighMemory", "labels": {"severity": "SEV2"}}}},
                   {}),
    ]
    assert views.execution_table(items, NOW).text().splitlines() == [
        "NAME   RUNBOOK  PHASE    PROGRESS  SEVERITY  TRIGGER           AGE   DURATION",
        "new    rb       Running            SEV3      Schedule          5m    5m",
        "alert  rb       Pending            SEV2      Alert HighMemory  1h5m",
        "old    rb       Failed   1/2       SEV1      Manual            2h5m  30s",
    ]
    wide = views.execution_table(items, NOW, all_namespaces=True, wide=True)
    assert wide.headers[0] == "NAMESPACE" and wide.headers[-2:] == ["REASON", "MESSAGE"]
    assert wide.rows[2][-2:] == ["StepFailed", "step a failed"]


def test_dag_order_nesting_and_joins() -> None:
    roots, finals = views.dag(SPEC)
    assert [n.name for n in roots] == ["probe", "use-backup", "approve-failover"]
    assert [c.name for c in roots[0].children] == ["clear-cache"]
    assert [n.name for n in finals] == ["report"]
    assert views.topological([("c", ["b"]), ("b", ["a"]), ("a", [])]) == ["a", "b", "c"]
    # a cycle and an unknown dependency: every step once, declared order for the rest
    assert views.topological([("a", ["b"]), ("b", ["a"]), ("c", ["ghost"])]) == ["c", "a", "b"]
    roots, _ = views.dag({"steps": [{"name": "a", "dependsOn": ["b"]},
                                    {"name": "b", "dependsOn": ["a"]}]})
    assert [(n.name, [c.name for c in n.children]) for n in roots] == [("a", ["b"])]
    assert not roots[0].children[0].children  # drawn once, no loop


def test_get_plain_text() -> None:
    text = render(views.describe(BODY, EVENTS, NOW))
    assert text == EXPECTED_GET
    assert "\x1b[" not in text


def test_get_coloured_on_a_terminal() -> None:
    text = render(views.describe(BODY, EVENTS, NOW), color=True)
    assert "\x1b[" in text and "Failed" in text


def test_get_of_an_execution_not_started_yet() -> None:
    body = {"metadata": {"name": "x"}, "spec": {"runbookRef": {"name": "rb"}}}
    text = render(views.describe(body, [], NOW))
    assert "Phase:        Pending" in text and "Events\n<none>" in text
    text = render(views.describe(body, [], NOW, {"steps": [{"name": "a"}]}))
    assert "├── not started: the Runbook's steps as they are now\n└── ○ a  Pending" in text


def test_get_of_a_resumed_execution() -> None:
    body = {"metadata": {"name": "x2"}, "spec": {
        "runbookRef": {"name": "rb"}, "resumeFrom": {"execution": "x1", "step": "s4"}}}
    assert "Resumed from: x1 at step s4\n" in render(views.describe(body, [], NOW))
    body["status"] = {"phase": "Running", "resumedFrom": {
        "execution": "x1", "step": "s4", "reused": ["s1", "s2", "s3"]}}
    assert "Resumed from: x1 at step s4; reused: s1, s2, s3\n" in \
        render(views.describe(body, [], NOW))


def test_fold_outputs() -> None:
    assert views.fold_outputs({"a": 1}) == '{"a": 1}'
    big = {f"k{i}": "v" * 10 for i in range(20)}
    folded = views.fold_outputs(big, limit=50)
    assert len(folded) < 80 and folded.endswith("(20 keys, 410 chars)")


def test_approve_hints() -> None:
    body = {"metadata": {"name": "x", "namespace": "prod"},
            "status": {"steps": {"gate": {"phase": "WaitingForApproval"},
                                 "a": {"phase": "Succeeded"}}}}
    assert views.approve_hints(body) == [
        "step gate waits for approval: kubectl runbook approve x gate -n prod -m COMMENT"
        "   (or: reject)"]


def test_step_transitions() -> None:
    before = {"metadata": {"name": "x"}, "status": {"phase": "Running", "steps": {
        "a": {"phase": "Running", "attempts": 1}, "b": {"phase": "Pending"}}}}
    after = {"metadata": {"name": "x"}, "status": {"phase": "Running", "steps": {
        "a": {"phase": "Retrying", "attempts": 2, "reason": "Error", "message": "exit 1"},
        "b": {"phase": "Pending"}}}}
    assert views.step_transitions(before, after, NOW) == [
        "a                        Retrying           attempt 2  Error  exit 1"]
    assert views.step_transitions(after, after, NOW) == []
    done = {"metadata": {"name": "x"}, "status": {
        "phase": "Succeeded", "progress": "2/2", "startedAt": "2026-12-01T03:00:00Z",
        "finishedAt": "2026-12-01T03:01:00Z", "steps": after["status"]["steps"]}}
    assert views.step_transitions(after, done, NOW) == ["x: Succeeded (2/2) in 1m"]


def test_graph_mermaid_for_an_execution() -> None:
    assert graphs.graph_mermaid(SPEC, BODY["status"]["steps"]) == """\
flowchart TD
  s0["probe<br/>Failed"]
  s1["use-backup<br/>Succeeded"]
  s2["clear-cache<br/>Succeeded"]
  s3{{"approve-failover (approval)<br/>Succeeded"}}
  s4["report<br/>Succeeded"]
  s0 -.->|"circuit open"| s1
  s0 -->|"!steps.probe.outputs.healthy"| s2
  s2 --> s3
  s1 --> s3
  s3 -.->|"finally"| s4
  classDef Failed fill:#f4a6a6
  class s0 Failed
  classDef Succeeded fill:#b7e1a1
  class s1,s2,s3,s4 Succeeded
"""


def test_graph_dot_for_a_runbook() -> None:
    spec = {"steps": [{"name": "a"}, {"name": "b", "dependsOn": ["a"],
                                      "when": 'params.x == "y"'}]}
    assert graphs.graph_dot(spec, None, "rb") == """\
digraph "rb" {
  rankdir=TB;
  node [shape=box, style="rounded,filled", fillcolor="#ffffff"];
  "a" [label="a"];
  "b" [label="b"];
  "a" -> "b" [label="params.x == \\"y\\""];
}
"""
    coloured = graphs.graph_dot(spec, {"a": {"phase": "Failed"}}, "x")
    assert '"a" [label="a\\nFailed", fillcolor="#f4a6a6"];' in coloured
    assert '"b" [label="b\\nPending", fillcolor="#ffffff"];' in coloured


def test_circuit_table() -> None:
    policies = [
        {"metadata": {"name": "ai", "namespace": "prod"}, "spec": {"mode": "Normal"},
         "status": {"circuits": [
             {"key": "openai", "state": "Open", "failureRate": 60, "slowCallRate": 0,
              "calls": 20, "nextAttemptAt": "2026-12-01T03:05:40Z"},
             {"key": "anthropic", "state": "Closed", "failureRate": 12.5, "calls": 8},
             {"key": "deepseek", "state": "Open", "nextAttemptAt": "2026-12-01T03:04:00Z"}]}},
        {"metadata": {"name": "db", "namespace": "prod"}, "spec": {"mode": "ForcedOpen"}},
    ]
    assert views.circuit_table(policies, NOW).text().splitlines() == [
        "POLICY  MODE        KEY        STATE   FAILURE  SLOW  CALLS  RETRY",
        "ai      Normal      anthropic  Closed  12.5%          8",
        "ai      Normal      deepseek   Open                   0      due",
        "ai      Normal      openai     Open    60%      0%    20     in 40s",
        "db      ForcedOpen  <none>",
    ]
    assert views.circuit_table(policies, NOW, all_namespaces=True).rows[0][0] == "prod"


def test_progress_and_live_view() -> None:
    assert views.progress_of(BODY) == (5, 5)
    counted = {"status": {"steps": {"a": {"phase": "Succeeded"}, "b": {"phase": "Running"}}}}
    assert views.progress_of(counted) == (1, 2)
    waiting = {"metadata": {"name": "x", "namespace": "n"}, "status": {
        "phase": "WaitingForApproval", "progress": "1/3",
        "steps": {"gate": {"phase": "WaitingForApproval"}}}}
    text = render([views.live_view(waiting, NOW, 75)])
    assert "1/3 steps" in text and "elapsed 1m15s" in text
    assert "kubectl runbook approve x gate -n n" in text


def test_docs_sample_is_exact() -> None:
    page = (Path(__file__).parents[3] / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "```text\n" + EXPECTED_GET + "```" in page


def test_get_never_shows_a_secret_parameter() -> None:
    body = {"metadata": {"name": "r", "namespace": "ops"},
            "spec": {"runbookRef": {"name": "rb"},
                     "params": {"token": "s3cr3t-77", "service": "api", "api_key": "k-99"}},
            "status": {"phase": "Running", "runbookSpec": {"params": [
                {"name": "token", "secret": True}, {"name": "service"}]}}}
    rows = dict(views.header_lines(body, datetime(2026, 12, 8, tzinfo=UTC)))
    assert "s3cr3t-77" not in rows["Params"] and "k-99" not in rows["Params"]
    assert "api" in rows["Params"] and "[REDACTED]" in rows["Params"]
