"""Shell completion: what is offered for each position, and the scripts.

Cases:
- the first word completes subcommands (not the hidden ``__complete``);
- positional names by subcommand: executions for get/watch/logs/cancel/retry, runbooks for
  run, both for graph, steps of the named execution for logs, only waiting steps for
  approve, circuit actions then policies, shells for completion;
- ``-n NS`` earlier on the line is the namespace names are looked up in;
- flags of the subcommand after ``-``; values of -o, --phase, --format, --runbook, -n;
  ``retry EXECUTION --from`` offers that execution's steps;
- nothing after the last positional, nothing for an unknown subcommand;
- the bash and zsh scripts call ``__complete``; ``kubectl_complete-runbook`` prints
  candidates then cobra's ``:4``; ``kubectl-runbook __complete`` prints candidates;
- the bash script, sourced in a real bash, fills COMPREPLY.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runbook_operator.cli import completion
from runbook_operator.cli.kubectl_plugin import build_parser, main

CLUSTER = {
    ("executions", "default"): ["ex-1", "ex-2", "other-9"],
    ("executions", "prod"): ["prod-1"],
    ("runbooks", "default"): ["ex", "smoke"],
    ("circuitpolicies", "default"): ["ai-providers"],
    ("namespaces", None): ["default", "prod"],
    ("steps:ex-1", "default"): ["probe", "gate"],
    ("waiting:ex-1", "default"): ["gate"],
}
asked: list[tuple[str, str | None]] = []


def names(kind: str, namespace: str | None) -> list[str]:
    asked.append((kind, namespace))
    key = (kind, None if kind == "namespaces" else namespace or "default")
    return CLUSTER.get(key, [])


def complete(*words: str) -> list[str]:
    return completion.complete(build_parser(), list(words), names)


def test_subcommands() -> None:
    assert complete("") == sorted(["validate", "run", "retry", "approve", "reject", "cancel",
                                   "list", "ls", "get", "describe", "watch", "logs", "graph",
                                   "circuits", "circuit", "completion", "ui"])
    assert complete("ci") == ["circuit", "circuits"]


@pytest.mark.parametrize(("words", "expected"), [
    (["get", ""], ["ex-1", "ex-2", "other-9"]),
    (["watch", "ex"], ["ex-1", "ex-2"]),
    (["describe", "-n", "prod", ""], ["prod-1"]),
    (["get", "--namespace=prod", "p"], ["prod-1"]),
    (["run", ""], ["ex", "smoke"]),
    (["retry", "ex-"], ["ex-1", "ex-2"]),
    (["graph", "ex"], ["ex", "ex-1", "ex-2"]),
    (["logs", "ex-1", ""], ["gate", "probe"]),
    (["approve", "ex-1", ""], ["gate"]),
    (["circuit", ""], ["disable", "force-open", "metrics-only", "reset"]),
    (["circuit", "reset", ""], ["ai-providers"]),
    (["completion", ""], ["bash", "zsh"]),
    (["get", "ex-1", ""], []),
    (["frobnicate", ""], []),
])
def test_positionals(words: list[str], expected: list[str]) -> None:
    assert complete(*words) == expected


def test_flags_and_flag_values() -> None:
    assert complete("list", "--p") == ["--phase"]
    assert complete("list", "--phase", "Wa") == ["WaitingForApproval"]
    assert complete("list", "-o", "") == ["json", "wide", "yaml"]
    assert complete("graph", "x", "--format", "") == ["dot", "mermaid"]
    assert complete("list", "--runbook", "s") == ["smoke"]
    assert complete("get", "-n", "") == ["default", "prod"]
    assert complete("logs", "ex-1", "--attempt", "") == []
    assert complete("retry", "ex-1", "--from", "") == ["gate", "probe"]
    assert complete("retry", "--from", "") == []
    assert complete("retry", "ex-1", "--f") == ["--from"]


def test_scripts_and_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    assert "kubectl-runbook __complete" in completion.script("bash")
    assert "compdef _kubectl_runbook kubectl-runbook" in completion.script("zsh")
    assert main(["completion", "bash"]) == 0
    assert "complete -o default -F _kubectl_runbook" in capsys.readouterr().out
    assert main(["__complete", "wat"]) == 0
    assert capsys.readouterr().out == "watch\n"
    script = Path(sys.executable).parent / "kubectl_complete-runbook"
    done = subprocess.run([str(script), "gr"], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout == "graph\n:4\n"


def test_names_unreachable_cluster_is_no_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/does/not/exist")
    assert completion.cluster_names("executions", None) == []
    assert completion.cluster_names("runbooks", "ops") == []


def test_bash_script_in_bash() -> None:
    bin_dir = Path(sys.executable).parent
    probe = ('source <(kubectl-runbook completion bash); COMP_WORDS=(kubectl-runbook ci); '
             'COMP_CWORD=1; _kubectl_runbook; echo "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=True)
    assert done.stdout == "circuit circuits\n"
