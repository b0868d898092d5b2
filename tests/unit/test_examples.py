"""examples/: the contract every example keeps, beyond passing validate_spec.

Cases:
- one document per file, apiVersion runbooks.dev/v1alpha1, a Runbook's
  `metadata.name` is the file stem;
- every image is pinned by a tag (never `latest`), steps run as runbook-runner;
- parameters reach containers only through the environment: no template syntax
  (`{{`, `${{`, `$(params`) in command/args/env; every PARAM_<NAME> a script or a
  `$(PARAM_...)` reads is declared; every STEP_<NAME>_OUTPUTS a step reads is one
  of its direct dependencies (the only outputs it receives);
- the embedded sh/bash/python scripts parse (`sh -n`, `bash -n`, `compile`);
- severity and provider parameters use the seed's values (SEV1..SEV4;
  openai/anthropic/deepseek);
- destructive steps (failover, rolling restart, killing queries, isolation) run
  only after an approval step; circuit refs name the ai-providers CircuitPolicy of
  examples/, and ai-service-recovery falls back to a step when it is open;
- smoke-test and system-health-check succeed on the default path of a cluster
  where every pod exits 0 with no outputs (kwok): no approval step, every `when`
  evaluates to a bool, nothing fails;
- the RunbookExecution example names an example runbook and its params resolve;
- the demo's copy (examples/demo/, `make demo`) is ai-service-recovery but for what
  its header lists: kwok annotations, probe's failing exit and backoffs, the
  approvers, the wait, the notifications; its CircuitPolicy differs in thresholds
  and timings only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from graphlib import TopologicalSorter
from pathlib import Path

import pytest
import yaml

from runbook_operator.api.execution import RunbookExecution
from runbook_operator.api.runbook import Runbook, Step
from runbook_operator.engine.cel import evaluate_bool
from runbook_operator.engine.params import env_name, resolve_params

from .support import EXAMPLES, load

FILES = sorted(EXAMPLES.glob("*.yaml"))
RUNBOOKS = {p.stem: Runbook.model_validate(load(p)) for p in FILES
            if load(p)["kind"] == "Runbook"}
RUNBOOK_IDS = sorted(RUNBOOKS)
KWOK_RUNNABLE = ["smoke-test", "system-health-check"]
DESTRUCTIVE = {
    "ai-service-recovery": ["failover"],
    "high-memory-usage": ["rolling-restart"],
    "database-performance": ["kill-long-running"],
    "security-incident": ["isolate", "block-ip"],
}
TEMPLATE = re.compile(r"\{\{|\$\{\{|\$\(params|\$\{params")
PARAM_REF = re.compile(r"\bPARAM_([A-Z0-9_]+)")
STEP_OUTPUTS_REF = re.compile(r"\bSTEP_([A-Z0-9_]+)_OUTPUTS\b")


def texts(step: Step) -> list[str]:
    """Everything of a step a container sees as command, args or env."""
    return [*(step.command or []), *(step.args or []), *(e.value or "" for e in step.env)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_one_document_named_after_the_file(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) == 1
    (doc,) = docs
    assert doc["apiVersion"] == "runbooks.dev/v1alpha1"
    if doc["kind"] == "Runbook":
        assert doc["metadata"]["name"] == path.stem
    else:  # circuitpolicy-<name>.yaml, execution-<runbook>.yaml (generateName)
        assert path.stem.startswith(doc["kind"].lower().replace("runbookexecution", "execution"))


@pytest.mark.parametrize("name", RUNBOOK_IDS)
def test_images_pinned_and_service_account(name: str) -> None:
    spec = RUNBOOKS[name].spec
    assert spec.service_account_name == "runbook-runner"
    for step in spec.all_steps():
        if step.type != "run":
            continue
        assert step.image
        image, _, tag = step.image.rpartition(":")
        assert image and "/" not in tag and tag and tag != "latest", step.image


@pytest.mark.parametrize("name", RUNBOOK_IDS)
def test_parameters_only_through_the_environment(name: str) -> None:
    spec = RUNBOOKS[name].spec
    declared = {env_name(p.name)[len("PARAM_"):] for p in spec.params}
    for step in spec.all_steps():
        for text in texts(step):
            assert not TEMPLATE.search(text), f"{step.name}: template syntax in {text[:60]!r}"
            for ref in PARAM_REF.findall(text):
                assert ref in declared, f"{step.name} reads PARAM_{ref}, which is not declared"
            for ref in STEP_OUTPUTS_REF.findall(text):
                deps = {d.upper().replace("-", "_") for d in step.depends_on}
                assert ref in deps, f"{step.name} reads STEP_{ref}_OUTPUTS, not a dependency"


def scripts() -> list[tuple[str, str, str]]:
    found = []
    for name, runbook in RUNBOOKS.items():
        for step in runbook.spec.all_steps():
            cmd = step.command or []
            if len(cmd) >= 3 and cmd[0] in ("sh", "bash", "python3") and cmd[1] == "-c":
                found.append((f"{name}/{step.name}", cmd[0], cmd[2]))
    return found


@pytest.mark.parametrize(("where", "shell", "script"), scripts(), ids=lambda v: str(v)[:50])
def test_scripts_parse(where: str, shell: str, script: str) -> None:
    if shell == "python3":
        compile(script, where, "exec")
        return
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"no {shell} here")
    result = subprocess.run([binary, "-n", "-c", script], capture_output=True, text=True,
                            check=False, timeout=30)
    assert result.returncode == 0, f"{where}: {result.stderr}"


@pytest.mark.parametrize("name", RUNBOOK_IDS)
def test_seed_parameter_values(name: str) -> None:
    for param in RUNBOOKS[name].spec.params:
        if param.name == "severity":
            assert param.enum == ["SEV1", "SEV2", "SEV3", "SEV4"]
        if "provider" in param.name:
            assert param.enum == ["openai", "anthropic", "deepseek"]


def ancestors(steps: list[Step], name: str) -> set[str]:
    by_name = {s.name: s for s in steps}
    seen: set[str] = set()
    todo = list(by_name[name].depends_on)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(by_name[dep].depends_on)
    return seen


@pytest.mark.parametrize(("name", "steps"), sorted(DESTRUCTIVE.items()))
def test_destructive_steps_wait_for_an_approval(name: str, steps: list[str]) -> None:
    dag = RUNBOOKS[name].spec.steps
    kinds = {s.name: s.type for s in dag}
    for step in steps:
        assert any(kinds[a] == "approval" for a in ancestors(dag, step)), step


def test_circuits() -> None:
    policies = {load(p)["metadata"]["name"] for p in FILES if load(p)["kind"] == "CircuitPolicy"}
    assert policies == {"ai-providers"}
    for runbook in RUNBOOKS.values():
        for step in runbook.spec.all_steps():
            if step.circuit:
                assert step.circuit.policy in policies
    probe = next(s for s in RUNBOOKS["ai-service-recovery"].spec.steps if s.name == "probe")
    assert probe.circuit and probe.circuit.on_open == "Fallback" and probe.circuit.fallback


def simulate_default_path(runbook: Runbook) -> dict[str, str]:
    """Phases of a run where every pod exits 0 and writes no outputs (kwok)."""
    spec = runbook.spec
    params, errors = resolve_params(spec.params, {})
    assert errors == []
    phases: dict[str, str] = {}
    for group in (spec.steps, spec.finally_):
        by_name = {s.name: s for s in group}
        for name in TopologicalSorter({s.name: s.depends_on for s in group}).static_order():
            step = by_name[name]
            assert step.type != "approval", f"{name}: nobody approves in a test cluster"
            if step.when is not None:
                variables = {
                    "params": params,
                    "steps": {n: {"phase": p, "outputs": {}, "attempts": 1, "reason": ""}
                              for n, p in phases.items()},
                    "execution": {"name": "x", "namespace": "default",
                                  "runbook": runbook.metadata.name,
                                  "failed": False, "cancelled": False},
                }
                run = evaluate_bool(step.when, variables)
            else:
                run = all(phases[d] == "Succeeded" for d in step.depends_on)
            phases[name] = "Succeeded" if run else "Skipped"
    return phases


@pytest.mark.parametrize("name", KWOK_RUNNABLE)
def test_default_path_succeeds_without_outputs(name: str) -> None:
    phases = simulate_default_path(RUNBOOKS[name])
    assert "Failed" not in phases.values()
    assert sum(p == "Succeeded" for p in phases.values()) >= 5
    assert phases["report"] == "Succeeded"


def test_execution_example() -> None:
    doc = load(EXAMPLES / "execution-system-health-check.yaml")
    execution = RunbookExecution.model_validate(doc)
    runbook = RUNBOOKS[execution.spec.runbook_ref.name]
    assert resolve_params(runbook.spec.params, execution.spec.params)[1] == []


def test_demo_copy_is_the_example() -> None:
    example = load(EXAMPLES / "ai-service-recovery.yaml")
    demo = load(EXAMPLES / "demo" / "ai-service-recovery.yaml")
    assert Runbook.model_validate(demo).spec.notifications
    assert demo["metadata"]["name"] == example["metadata"]["name"]
    demo_spec = {k: v for k, v in demo["spec"].items() if k != "notifications"}
    allowed = {  # step -> fields the demo may change (podMetadata everywhere)
        "probe": {"retry", "command"}, "approve-failover": {"approval"},
        "stabilize": {"wait"}}
    for group in ("steps", "finally"):
        mine = {s["name"]: s for s in demo_spec.pop(group)}
        theirs = {s["name"]: s for s in example["spec"][group]}
        assert list(mine) == list(theirs)
        for name, step in theirs.items():
            changed = {k for k in step.keys() | mine[name].keys()
                       if step.get(k) != mine[name].get(k)} - {"podMetadata"}
            assert changed <= allowed.get(name, set()), (name, changed)
    assert demo_spec == {k: v for k, v in example["spec"].items()
                         if k not in ("steps", "finally")}
    probe = next(s for s in demo["spec"]["steps"] if s["name"] == "probe")
    original = next(s for s in example["spec"]["steps"] if s["name"] == "probe")
    assert probe["command"][:2] == original["command"][:2]
    assert probe["command"][2].startswith(original["command"][2])  # one line added
    gate = next(s for s in demo["spec"]["steps"] if s["name"] == "approve-failover")
    assert gate["approval"]["approvers"] == {"groups": ["sre-oncall"]}
    policy = load(EXAMPLES / "circuitpolicy-ai-providers.yaml")
    demo_policy = load(EXAMPLES / "demo" / "circuitpolicy-ai-providers.yaml")
    assert demo_policy["metadata"]["name"] == policy["metadata"]["name"]
    tuned = {"slidingWindow", "minimumCalls", "openDuration", "maxOpenDuration", "retry"}
    assert {k for k in policy["spec"] if policy["spec"][k] != demo_policy["spec"].get(k)} \
        <= tuned
