"""Resuming a failed execution (``spec.resumeFrom``) against the real control plane.

Cases (issue 13):

- a 5-step chain whose step 4 fails (exit code 3) after step 3 wrote outputs
  ``{"x": "from-s3"}``; a new execution with ``resumeFrom: {execution: first}`` applied
  as YAML would be (no plugin): s1-s3 are Succeeded with reason Reused and the
  source's outputs, no Job of the new execution exists for them (Jobs listed by the
  ``runbooks.dev/execution`` label), s4's Job carries ``STEP_S3_OUTPUTS={"x":"from-s3"}``
  in its environment, and the new run Succeeds; ``status.resumedFrom`` names the
  source and the reused steps; the source is untouched;
- refusals end the new execution Failed before any Job: a source that does not
  exist (ResumeSourceNotFound), a step the source does not have
  (ResumeStepUnknown);
- ``spec.resumeFrom`` cannot change once the execution exists (the CRD's rule).

How step 4 fails in the first run and not in the retry although both run the same
frozen spec: the kwok stage reads ``kwok.runbooks.dev/exit-code-in-<execution>``
from the pod's annotations (the operator annotates every step pod with its
execution's name), so the spec says "step 4 fails when run by execution
``first``" — a scripted outage during the first run that is over by the retry, the
situation a retry exists for. Nothing patches the frozen spec or the source's status.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kube import Kube, step
from kubernetes.client.exceptions import ApiException

from runbook_operator.engine.notify import incident_key_of

pytestmark = pytest.mark.integration

OUTCOME = "kwok.runbooks.dev/"


def chain(first: str) -> dict[str, Any]:
    """s1 -> s2 -> s3 (outputs x) -> s4 (fails only in execution ``first``) -> s5."""
    return {"steps": [
        step("s1"),
        step("s2", after=["s1"]),
        step("s3", after=["s2"], message='{"x": "from-s3"}'),
        step("s4", after=["s3"],
             podMetadata={"annotations": {f"{OUTCOME}exit-code-in-{first}": "3"}}),
        step("s5", after=["s4"]),
    ]}


def job_env(job: Any) -> dict[str, str]:
    (container,) = job.spec.template.spec.containers
    return {e.name: e.value for e in container.env or []}


def test_resume_reuses_steps_1_to_3_and_step_4_gets_their_outputs(kube: Kube) -> None:
    kube.ready_runbook("chain5", chain("first"))
    kube.execute("first", "chain5")
    source = kube.wait_finished("first")["status"]
    assert source["phase"] == "Failed", source
    assert (source["steps"]["s4"]["phase"], source["steps"]["s4"]["exitCode"]) == ("Failed", 3)
    assert source["steps"]["s3"]["outputs"] == {"x": "from-s3"}

    kube.execute("second", "chain5", resumeFrom={"execution": "first"})
    body = kube.wait_finished("second")
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    for name in ("s1", "s2", "s3"):
        st = status["steps"][name]
        assert (st["phase"], st["reason"]) == ("Succeeded", "Reused"), st
        assert "first" in st["message"]
        assert st.get("outputs") == source["steps"][name].get("outputs")
    # The source's PagerDuty incident goes with it, so the retry's success resolves it.
    assert status["resumedFrom"] == {"execution": "first", "reused": ["s1", "s2", "s3"],
                                     "incidentKey": incident_key_of(kube.execution("first"))}
    assert status["runbookSpec"] == source["runbookSpec"]
    jobs = {j.metadata.labels["runbooks.dev/step"]: j for j in kube.jobs("second")}
    assert sorted(jobs) == ["s4", "s5"]
    assert json.loads(job_env(jobs["s4"])["STEP_S3_OUTPUTS"]) == {"x": "from-s3"}
    assert status["steps"]["s4"]["exitCode"] == 0
    assert kube.execution("first")["status"]["steps"] == source["steps"]


def test_resume_refusals_fail_before_any_job(kube: Kube) -> None:
    kube.ready_runbook("chain5", chain("first"))
    kube.execute("ghost", "chain5", resumeFrom={"execution": "nope"})
    status = kube.wait_finished("ghost")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ResumeSourceNotFound"), status
    kube.execute("first", "chain5")
    kube.wait_finished("first")
    kube.execute("typo", "chain5", resumeFrom={"execution": "first", "step": "s9"})
    status = kube.wait_finished("typo")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "ResumeStepUnknown"), status
    assert "s9" in status["message"]
    assert kube.jobs("ghost") == [] and kube.jobs("typo") == []


def test_resume_from_cannot_change(kube: Kube) -> None:
    kube.ready_runbook("chain5", chain("first"))
    kube.execute("first", "chain5")
    kube.wait_finished("first")
    kube.execute("second", "chain5", resumeFrom={"execution": "first"})
    with pytest.raises(ApiException) as refused:
        kube.patch("runbookexecutions", "second",
                   {"spec": {"resumeFrom": {"execution": "first", "step": "s2"}}})
    assert refused.value.status == 422
    assert "spec.resumeFrom cannot change" in (refused.value.body or "")
