"""Shell completion for ``kubectl runbook`` and ``kubectl-runbook``: bash and zsh.

Why it exists: execution names carry a random or hashed suffix
(``ai-service-recovery-x7k2``); nobody types them at 3 a.m. The shells ask the
plugin itself (``kubectl-runbook __complete WORDS...``, and kubectl 1.26+ asks
the ``kubectl_complete-runbook`` executable) so that subcommands and flags come
from the one argparse parser and names from the cluster. Deciding *what* to
complete is pure (``complete``), with the name lookup passed in.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

# name lookup: (kind, namespace or None) -> names; kinds: executions, runbooks,
# circuitpolicies, namespaces, steps:<execution>, waiting:<execution>
Names = Callable[[str, str | None], list[str]]

PHASES = ["Pending", "Queued", "Running", "WaitingForApproval", "Succeeded", "Failed",
          "Cancelled"]
# Positional arguments by subcommand: what each one names.
POSITIONALS: dict[str, list[str]] = {
    "run": ["runbooks"], "get": ["executions"], "describe": ["executions"],
    "watch": ["executions"], "logs": ["executions", "steps"], "cancel": ["executions"],
    "retry": ["executions"],
    "approve": ["executions", "waiting"], "reject": ["executions", "waiting"],
    "graph": ["executions", "runbooks"], "circuit": ["actions", "circuitpolicies"],
    "completion": ["shells"],
}
FLAG_VALUES: dict[str, list[str] | str] = {
    "-n": "namespaces", "--namespace": "namespaces", "--runbook": "runbooks",
    "--phase": PHASES, "-o": ["wide", "json", "yaml"], "--output": ["wide", "json", "yaml"],
    "--format": ["mermaid", "dot"],
}

BASH = """\
# kubectl-runbook bash completion: source <(kubectl-runbook completion bash)
_kubectl_runbook() {
  local IFS=$'\\n'
  COMPREPLY=( $(kubectl-runbook __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) )
}
complete -o default -F _kubectl_runbook kubectl-runbook
"""

ZSH = """\
#compdef kubectl-runbook
# kubectl-runbook zsh completion: source <(kubectl-runbook completion zsh)
_kubectl_runbook() {
  local -a candidates
  candidates=("${(@f)$(kubectl-runbook __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -a candidates
}
compdef _kubectl_runbook kubectl-runbook
"""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Option strings of a subcommand, and whether each takes a value."""
    return {opt: action.nargs != 0 for action in parser._actions
            for opt in action.option_strings}


def complete(parser: argparse.ArgumentParser, words: Sequence[str], names: Names) -> list[str]:
    """Candidates for the last of ``words`` (the words after the program name)."""
    words = list(words) or [""]
    partial = words[-1]
    subs = {name: p for name, p in _subparsers(parser).items() if not name.startswith("__")}
    if len(words) == 1:
        return sorted(n for n in subs if n.startswith(partial))
    command = words[0]
    sub = subs.get(command)
    if sub is None:
        return []
    flags = _flags(sub)
    namespace = None
    positionals: list[str] = []
    i = 1
    while i < len(words) - 1:
        word = words[i]
        if flags.get(word):
            if word in ("-n", "--namespace") and i + 1 < len(words) - 1:
                namespace = words[i + 1]
            i += 2
            continue
        if word.startswith("--namespace="):
            namespace = word.partition("=")[2]
        elif not word.startswith("-"):
            positionals.append(word)
        i += 1
    previous = words[-2]
    if flags.get(previous):
        if previous == "--from":  # retry --from STEP: a step of the execution named
            steps = names(f"steps:{positionals[0]}", namespace) if positionals else []
            return sorted(o for o in steps if o.startswith(partial))
        wanted = FLAG_VALUES.get(previous)
        if wanted is None:
            return []
        options = wanted if isinstance(wanted, list) else names(wanted, namespace)
        return sorted(o for o in options if o.startswith(partial))
    if partial.startswith("-"):
        return sorted(f for f in flags if f.startswith(partial))
    slots = POSITIONALS.get(command, [])
    if len(positionals) >= len(slots):
        return []
    kind = slots[len(positionals)]
    if kind == "actions":
        options = ["reset", "force-open", "disable", "metrics-only"]
    elif kind == "shells":
        options = ["bash", "zsh"]
    elif kind in ("steps", "waiting"):
        options = names(f"{kind}:{positionals[0]}", namespace) if positionals else []
    elif command == "graph":
        options = sorted(set(names("executions", namespace)) | set(names("runbooks", namespace)))
    else:
        options = names(kind, namespace)
    return sorted(o for o in options if o.startswith(partial))


def cluster_names(kind: str, namespace: str | None) -> list[str]:
    """Names from the cluster; nothing (never an error) when it cannot be asked."""
    try:
        from runbook_operator.cli import rest

        cluster = rest.load(None, namespace)
        if kind == "namespaces":
            found = cluster.get("/api/v1/namespaces")
        elif ":" in kind:
            which, _, execution = kind.partition(":")
            body = cluster.get(rest.custom_path("runbookexecutions", cluster.namespace,
                                                execution))
            steps = (body.get("status") or {}).get("steps") or {}
            return [n for n, st in steps.items()
                    if which == "steps" or (st or {}).get("phase") == "WaitingForApproval"]
        else:
            plural = {"executions": "runbookexecutions"}.get(kind, kind)
            found = cluster.get(rest.custom_path(plural, cluster.namespace))
        return [str(item["metadata"]["name"]) for item in found.get("items") or []]
    except Exception:
        return []


def script(shell: str) -> str:
    return BASH if shell == "bash" else ZSH
