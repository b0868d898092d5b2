"""`kubectl runbook approve|reject`: who the decision is recorded as, and refusals.

Cases (the Kubernetes API replaced by fakes; the real thing is in
tests/integration/test_admission.py):
- the decision's ``by`` is the user name SelfSubjectReview returns, appended after
  the earlier approvals with the execution's resourceVersion; there is no --by flag;
- an admission refusal is printed as the API server's own message, exit 1;
- a SelfSubjectReview without a user name is an error telling to check credentials.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from runbook_operator.cli import cluster_commands
from runbook_operator.cli.kubectl_plugin import build_parser


class FakeApi:
    def __init__(self, refuse: str | None = None) -> None:
        self.patches: list[dict[str, Any]] = []
        self.refuse = refuse

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": "7"},
                "spec": {"approvals": [{"step": "old", "decision": "Approve", "by": "x"}]},
                "status": {"steps": {"gate": {"phase": "WaitingForApproval"}}}}

    def patch_namespaced_custom_object(self, *args: Any) -> None:
        if self.refuse:
            exc = ApiException(status=403, reason="Forbidden")
            exc.body = json.dumps({"message": self.refuse})
            raise exc
        self.patches.append(args[-1])


def run(monkeypatch: pytest.MonkeyPatch, api: FakeApi, user: str | None,
        *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cluster_commands, "connect", lambda args: (api, "ns"))

    class Review:
        status = argparse.Namespace(user_info=argparse.Namespace(username=user))

    class Auth:
        def create_self_subject_review(self, body: Any) -> Review:
            return Review()

    monkeypatch.setattr(kubernetes.client, "AuthenticationV1Api", Auth)
    args = build_parser().parse_args(list(argv))
    out, err = io.StringIO(), io.StringIO()
    return args.handler(args, out, err), out.getvalue(), err.getvalue()


def test_by_is_the_authenticated_user(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    code, out, _ = run(monkeypatch, api, "carol", "approve", "ex", "gate", "-m", "go")
    assert code == 0 and "approved by carol" in out
    (patch,) = api.patches
    assert patch["metadata"]["resourceVersion"] == "7"
    assert patch["spec"]["approvals"][-1] == {"step": "gate", "decision": "Approve",
                                              "by": "carol", "comment": "go"}
    assert patch["spec"]["approvals"][0]["step"] == "old"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["approve", "ex", "gate", "--by", "mallory"])


def test_refusal_is_the_api_servers_message(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(refuse="user dave is not an approver of step gate")
    code, _, err = run(monkeypatch, api, "dave", "reject", "ex", "gate")
    assert code == 1
    assert "not rejected: user dave is not an approver of step gate" in err


def test_no_user_name(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(monkeypatch, FakeApi(), None, "approve", "ex", "gate")
    assert code == 2 and "check your kubeconfig's credentials" in err
