"""Starting an execution: resolve the runbook, check the parameters, freeze the spec.

Everything that can make an execution fail before any Job exists is decided here,
so bad parameters never start a step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from runbook_operator.api.common import Condition
from runbook_operator.api.execution import (
    HistoryEntry,
    ResumedFrom,
    RunbookExecutionSpec,
    RunbookExecutionStatus,
    RunbookRefStatus,
    StepStatus,
)
from runbook_operator.api.runbook import RunbookSpec
from runbook_operator.engine.notify import incident_key_of
from runbook_operator.engine.params import resolve_params
from runbook_operator.engine.podsecurity import SecurityPolicy
from runbook_operator.engine.resume import Refusal, check_source, reused_status, reused_steps
from runbook_operator.engine.timeutil import fmt
from runbook_operator.engine.validation import SECURITY_REASONS, validate_spec


def spec_hash(spec: Mapping[str, Any]) -> str:
    """A stable digest of a spec: executions record which version they froze."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def start_execution(spec: RunbookExecutionSpec, runbook: Mapping[str, Any] | None,
                    namespace: str, now: datetime,
                    security: SecurityPolicy | None = None,
                    source: Mapping[str, Any] | None = None) -> RunbookExecutionStatus:
    """The first status of an execution: Running with a frozen spec, or Failed with a reason.

    With ``spec.resumeFrom``, ``source`` is that execution as the API has it (None when
    it does not exist): the run freezes the source's spec instead of the Runbook's and
    starts with the steps ``engine.resume`` reuses already finished (reason ``Reused``).

    The pod-security checks run here too, with the allowances the operator has now:
    a privileged step fails the execution (reason ``PrivilegedStep``) before any Job.
    """
    ref = spec.runbook_ref.name
    reused: dict[str, StepStatus] = {}
    if spec.resume_from is not None:
        # A resumed run: the source's frozen spec, not the Runbook as it is now.
        refusal, frozen, source_steps = check_source(spec, source, namespace)
        if refusal is not None or frozen is None:
            why = refusal or Refusal("ResumeSourceInvalid", "no frozen spec")
            return failed_status(why.reason, why.message, now, RunbookRefStatus(name=ref))
        src_ref = ((source or {}).get("status") or {}).get("runbook")
        src_ref = src_ref if isinstance(src_ref, Mapping) else {}
        raw_spec = frozen.to_k8s()
        generation = src_ref.get("generation")
        generation = generation if isinstance(generation, int) else None
        src_hash = src_ref.get("specHash")
        ref_status = RunbookRefStatus(name=ref, generation=generation,
                                      spec_hash=src_hash if isinstance(src_hash, str)
                                      else spec_hash(raw_spec))
        src_name = spec.resume_from.execution
        reused = {n: reused_status(source_steps[n], src_name)
                  for n in reused_steps(frozen, source_steps, spec.resume_from.step)}
    elif runbook is None:
        return failed_status("RunbookNotFound",
                             f"runbook {ref!r} not found in namespace {namespace!r}",
                             now, RunbookRefStatus(name=ref))
    else:
        raw_spec = runbook.get("spec") or {}
        generation = (runbook.get("metadata") or {}).get("generation")
        ref_status = RunbookRefStatus(name=ref, generation=generation,
                                      spec_hash=spec_hash(raw_spec))
    problems = validate_spec(raw_spec, security, namespace)
    if problems:
        # A security refusal is named as such: it is not fixed by editing the steps' logic.
        reason = next((p.reason for p in problems if p.reason in SECURITY_REASONS),
                      "RunbookInvalid")
        return failed_status(reason, f"runbook {ref!r} is not valid: "
                       + "; ".join(str(p) for p in problems), now, ref_status)
    try:
        rb_spec = RunbookSpec.model_validate(raw_spec)
    except ValidationError as exc:  # validate_spec already said so; belt and braces
        return failed_status("RunbookInvalid", str(exc), now, ref_status)
    _, errors = resolve_params(rb_spec.params, spec.params)
    if errors:
        return failed_status("InvalidParams", "; ".join(errors), now, ref_status)
    steps = {s.name: reused.get(s.name) or StepStatus() for s in rb_spec.all_steps()}
    history = [HistoryEntry(time=fmt(now), event="ExecutionStarted",
                            message=f"runbook {ref} generation {generation}")]
    resumed = None
    if spec.resume_from is not None:
        resumed = ResumedFrom(execution=spec.resume_from.execution,
                              step=spec.resume_from.step, reused=list(reused),
                              incident_key=incident_key_of(source or {}))
        history.append(HistoryEntry(
            time=fmt(now), event="ExecutionResumed",
            message=(f"resumed from {resumed.execution}"
                     + (f" at step {resumed.step}" if resumed.step else "")
                     + f"; reused: {', '.join(reused) or 'none'}")[:512]))
    return RunbookExecutionStatus(
        resumed_from=resumed,
        phase="Running",
        reason="Running",
        runbook=ref_status,
        runbook_spec=rb_spec.to_k8s(),
        started_at=fmt(now),
        progress=f"{len(reused)}/{len(steps)}",
        steps=steps,
        conditions=[Condition(type="Succeeded", status="Unknown", reason="Running",
                              message="the execution is in progress",
                              last_transition_time=fmt(now))],
        history=history,
    )


def cancelled_before_start(reason: str, message: str, now: datetime,
                           ref: RunbookRefStatus) -> RunbookExecutionStatus:
    """The status of a run cancelled before any step ran (while pending or queued)."""
    status = failed_status(reason, message, now, ref)
    status.phase = "Cancelled"
    status.history[0].event = "ExecutionCancelled"
    return status


def failed_status(reason: str, message: str, now: datetime,
            ref: RunbookRefStatus) -> RunbookExecutionStatus:
    return RunbookExecutionStatus(
        phase="Failed",
        reason=reason,
        message=message[:4000],
        runbook=ref,
        finished_at=fmt(now),
        conditions=[Condition(type="Succeeded", status="False", reason=reason,
                              message=message[:4000], last_transition_time=fmt(now))],
        history=[HistoryEntry(time=fmt(now), event="ExecutionFailed", message=message[:512])],
    )
