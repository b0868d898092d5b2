"""Resuming a finished execution: which of its steps a new run may reuse.

``kubectl runbook retry`` (or any ``kubectl apply`` of ``spec.resumeFrom``) creates a
new execution that runs the source's frozen spec with the source's params again,
but does not run again what already finished well. Deciding what that is belongs
to the engine, not the CLI, so every way of creating such an execution gets the
same answer. Pure: the source is passed in, nothing is read here.

The rule: a step of the DAG is reused when it Succeeded in the source, or was
Skipped because its ``when`` was false, and it is not downstream (through
``dependsOn`` or a circuit fallback) of a step that runs again: one that Failed
(or otherwise did not finish well, e.g. Skipped by an open circuit or never run),
or, with ``step`` given, that step. Those and their descendants run again;
``finally`` steps always run again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runbook_operator.api.execution import (
    FINISHED_EXECUTION_PHASES,
    ResumeFrom,
    RunbookExecutionSpec,
    StepStatus,
)
from runbook_operator.api.runbook import RunbookSpec, Step

REUSED = "Reused"


@dataclass(frozen=True)
class Refusal:
    """Why an execution cannot resume from its source: it fails before any Job."""

    reason: str
    message: str


def children(steps: Iterable[Step]) -> dict[str, set[str]]:
    """Direct downstream steps of each step: ``dependsOn`` edges and circuit fallbacks."""
    steps = list(steps)
    out: dict[str, set[str]] = {s.name: set() for s in steps}
    for step in steps:
        for dep in step.depends_on:
            out.setdefault(dep, set()).add(step.name)
        if step.circuit is not None and step.circuit.fallback:
            # A fallback stands in for the guarded step: it follows it.
            out.setdefault(step.name, set()).add(step.circuit.fallback)
    return out


def downstream(roots: Iterable[str], edges: Mapping[str, set[str]]) -> set[str]:
    """The roots and every step reachable from them."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(edges.get(name, ()))
    return seen


def reusable(st: StepStatus) -> bool:
    """A source step whose result stands: it succeeded, or its ``when`` said no."""
    return st.phase == "Succeeded" or (st.phase == "Skipped" and st.reason == "WhenFalse")


def reused_steps(spec: RunbookSpec, source_steps: Mapping[str, StepStatus],
                 from_step: str | None) -> list[str]:
    """The DAG steps a resumed run copies from its source, in the spec's order."""
    # Whatever is not reused runs again, so whatever follows it must too: its inputs
    # (outputs, phases a `when` reads, a guarded step a fallback stands in for) change.
    roots = {s.name for s in spec.steps
             if (st := source_steps.get(s.name)) is None or not reusable(st)}
    if from_step is not None:
        roots.add(from_step)
    rerun = downstream(roots, children(spec.all_steps()))
    return [s.name for s in spec.steps if s.name not in rerun]


def reused_status(st: StepStatus, source: str) -> StepStatus:
    """A source step's result as the new run records it: no Job of this run behind it."""
    return StepStatus(
        phase=st.phase, reason=REUSED,
        message=f"reused from execution {source}: {st.reason or st.phase}"[:1024],
        attempts=st.attempts, started_at=st.started_at, finished_at=st.finished_at,
        exit_code=st.exit_code,
        outputs=dict(st.outputs) if st.outputs is not None else None,
    )


def check_source(spec: RunbookExecutionSpec, source: Mapping[str, Any] | None,
                 namespace: str) -> tuple[Refusal | None, RunbookSpec | None,
                                          dict[str, StepStatus]]:
    """Refuse a source that cannot be resumed; else its frozen spec and step results."""
    resume = spec.resume_from
    assert resume is not None
    name = resume.execution
    if source is None:
        return Refusal("ResumeSourceNotFound", f"execution {name!r} to resume from not "
                       f"found in namespace {namespace!r}"), None, {}
    src_spec = _object(source.get("spec"))
    src_runbook = _object(src_spec.get("runbookRef")).get("name")
    if src_runbook != spec.runbook_ref.name:
        return Refusal("ResumeSourceMismatch", f"execution {name!r} ran runbook "
                       f"{src_runbook!r}, not {spec.runbook_ref.name!r}"), None, {}
    status = _object(source.get("status"))
    phase = status.get("phase")
    if not isinstance(phase, str) or phase not in FINISHED_EXECUTION_PHASES:
        return Refusal("ResumeSourceNotFinished", f"execution {name!r} is {phase or 'Pending'}"
                       ": only a finished execution can be resumed"), None, {}
    frozen = status.get("runbookSpec")
    if not frozen:
        return Refusal("ResumeSourceNotStarted", f"execution {name!r} never started "
                       f"({status.get('reason') or phase}): nothing to resume; "
                       "run the runbook again instead"), None, {}
    try:
        raw_steps = status.get("steps") or {}
        if not isinstance(raw_steps, Mapping):
            raise ValueError("status.steps is not an object")
        rb_spec = RunbookSpec.model_validate(frozen)
        steps = {str(k): StepStatus.model_validate(v) for k, v in raw_steps.items()}
    except ValueError as exc:
        return Refusal("ResumeSourceInvalid", f"execution {name!r}: {exc}"[:4000]), None, {}
    if resume.step is not None and resume.step not in {s.name for s in rb_spec.steps}:
        finally_names = {s.name for s in rb_spec.finally_}
        why = "a finally step always runs again" if resume.step in finally_names else \
            f"execution {name!r} has no such step"
        return Refusal("ResumeStepUnknown", f"cannot resume from step {resume.step!r}: "
                       f"{why}"), None, {}
    if dict(spec.params) != _object(src_spec.get("params")):
        return Refusal("ResumeParamsDiffer", f"spec.params must equal those of execution "
                       f"{name!r}: a resumed run reuses results computed with them"
                       ), None, {}
    return None, rb_spec, steps


def _object(value: Any) -> dict[str, Any]:
    """A JSON object of the source as it is, or empty when it is missing or not an object."""
    return dict(value) if isinstance(value, Mapping) else {}


__all__ = ["REUSED", "Refusal", "ResumeFrom", "check_source", "reused_status", "reused_steps"]
