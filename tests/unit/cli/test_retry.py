"""`kubectl runbook retry`: the execution it creates, and its refusals.

Cases (the Kubernetes API replaced by a fake; the real thing is in
tests/integration/test_kubectl_plugin.py and test_resume.py):
- the new execution names the same runbook, copies the source's params and
  severity, says ``spec.resumeFrom: {execution}`` (and ``step`` with ``--from``),
  is Manual, has a generated name (``RUNBOOK-``) or the ``--name`` given; the plugin
  prints ``runbookexecution.runbooks.dev/NAME created``; it does not decide what is
  reused (no step list in what it sends);
- a source that does not exist: the API's message, exit 2, nothing created;
- the API server refusing the new execution: its message, exit 2.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from runbook_operator.cli import cluster_commands
from runbook_operator.cli.kubectl_plugin import build_parser

SOURCE = {"metadata": {"name": "fix-db-abc12", "namespace": "ns"},
          "spec": {"runbookRef": {"name": "fix-db"}, "params": {"target": "db", "n": 3},
                   "severity": "SEV2", "triggeredBy": {"kind": "Alert",
                                                       "alert": {"name": "DBDown"}}},
          "status": {"phase": "Failed", "steps": {"a": {"phase": "Succeeded"}}}}


class FakeApi:
    def __init__(self, missing: bool = False, refuse: str | None = None) -> None:
        self.missing, self.refuse = missing, refuse
        self.created: list[dict[str, Any]] = []

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        if self.missing:
            exc = ApiException(status=404, reason="Not Found")
            exc.body = json.dumps({"message": 'runbookexecutions "x" not found'})
            raise exc
        return SOURCE

    def create_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        if self.refuse:
            exc = ApiException(status=422, reason="Invalid")
            exc.body = json.dumps({"message": self.refuse})
            raise exc
        body: dict[str, Any] = args[-1]
        self.created.append(body)
        name = body["metadata"].get("name") or body["metadata"]["generateName"] + "q7x2z"
        return {**body, "metadata": {"name": name}}


def run(monkeypatch: pytest.MonkeyPatch, api: FakeApi, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cluster_commands, "connect", lambda args: (api, "ns"))
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    return args.handler(args, out, err), out.getvalue(), err.getvalue()


def test_retry_creates_a_resuming_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    code, out, err = run(monkeypatch, api, "retry", "fix-db-abc12")
    assert (code, out, err) == (0, "runbookexecution.runbooks.dev/fix-db-q7x2z created\n", "")
    assert api.created == [{
        "apiVersion": "runbooks.dev/v1alpha1", "kind": "RunbookExecution",
        "metadata": {"generateName": "fix-db-"},
        "spec": {"runbookRef": {"name": "fix-db"}, "params": {"target": "db", "n": 3},
                 "severity": "SEV2", "triggeredBy": {"kind": "Manual"},
                 "resumeFrom": {"execution": "fix-db-abc12"}}}]
    code, out, _ = run(monkeypatch, api, "retry", "fix-db-abc12", "--from", "b",
                       "--name", "again")
    assert (code, out) == (0, "runbookexecution.runbooks.dev/again created\n")
    assert api.created[-1]["metadata"] == {"name": "again"}
    assert api.created[-1]["spec"]["resumeFrom"] == {"execution": "fix-db-abc12", "step": "b"}


def test_retry_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(missing=True)
    code, out, err = run(monkeypatch, api, "retry", "x")
    assert (code, out) == (2, "") and 'not found' in err and not api.created
    code, out, err = run(monkeypatch, FakeApi(refuse="spec.resumeFrom.step: bad"),
                         "retry", "x", "--from", "B")
    assert (code, out) == (2, "") and "spec.resumeFrom.step: bad" in err
