"""Admission and identity on the real API server: immutable runs, Runbook writers, approvers.

The chart's ValidatingAdmissionPolicies (charts/runbook-operator/files/
admission-policies.yaml, applied as written but for ``${OPERATOR}``, here the user
the test operator runs as; the chart test checks the chart renders exactly these)
are applied for this module only, with no type-checking warnings from the API
server, and removed afterwards. Users are real: client certificates issued from
the cluster CA (hack/cluster.py ``user_kubeconfig``) with RBAC Roles in the test
namespace.

Cases:
- a RunbookExecution's spec is frozen by the CRD alone (before the policies are
  applied): changing a param's value, adding a param, changing runbookRef or
  triggeredBy, or adding severity, is refused naming the field; approvals may be
  appended but not edited, reordered or removed; cancel may be turned on but not
  back off; the run keeps its params;
- without the policies, the operator itself ignores an approval by a user not in
  the step's approvers.users (the step says so) and takes the listed user's;
- a param renamed at the same number of keys (invisible to the CRD's CEL) is
  refused by the immutable-runs policy;
- Runbook writers: alice (may create Runbooks and Jobs) creates a Runbook; bob (may
  create Runbooks, not Jobs) is refused with the message naming the missing right,
  for a create and for a spec update; his label-only update passes;
- approvals: dave (not in the step's approvers group) is refused when he writes
  ``by: carol`` (not himself) and when he writes ``by: dave``, the message naming
  the approvers, also through ``kubectl runbook reject``; carol (group sre-oncall)
  approves with ``kubectl runbook approve`` and the status says "approved by carol";
  an approval for a step the run does not have, and one given at creation (no
  frozen runbook yet), are refused; a step listing only users lets erin decide and
  not dave;
- step Jobs: mallory, who may create, patch and delete Jobs and update the runs'
  finalizers (so OwnerReferencesPermissionEnforcement lets her set owners), makes
  the Job of the run's
  next step (its name, the run as controller, the step's labels) before the
  operator and is refused, the message naming the mark and why; so are a Job with
  only an owner reference (another apiVersion, any case, not controller), only a
  runbooks.dev/ label, only a pod template annotation, and a patch adding the
  run's owner reference to her own plain Job; her plain Job and a plain label
  patch pass; a pod with a runbooks.dev/ annotation is the Job controller's to
  make (policy step-pods), hers is refused, and her plain pod cannot gain a
  runbooks.dev/ label; the operator's own Jobs and their pods are created under
  the policies, the run Succeeds with the real step's outputs;
- staged step pods (engine.staging): mallory, who may patch pods, can neither lift
  the gate runbooks.dev/dependencies of the run's next step nor write its
  outputs.runbooks.dev/ annotation; the operator's user may not change anything
  else on that pod, nor lift the gate while changing something else; its own lift
  passes, and the step reads the real outputs;
- hostile approvals: dave writes ``by: dave`` with ``groups: [sre-oncall]`` in the
  entry (a group forged in the object: the field is pruned, admission reads the
  request's groups) and is refused; erin's Reject appended after her Approve
  decided the step is refused (the step is no longer waiting), and so is any
  decision once the run has finished; the recorded approvals stay the one that
  counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kube import GROUP, VERSION, Kube, planted_job, step, wait_for
from kubernetes.client.exceptions import ApiException

from cluster import ClusterError, LocalCluster
from runbook_operator.engine.names import job_name

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "charts" / "runbook-operator" / "files" / "admission-policies.yaml"
PROBE_USER = "rbo-admission-probe"
PROBE_JOBS_USER = "rbo-admission-probe-jobs"


def as_list(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})


def refusal(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc)


class Probe:
    """Dry-run requests that tell whether each policy is in force right now."""

    def __init__(self, admin: Any, user: Any, namespace: str, jobs_user: Any) -> None:
        self.admin = kubernetes.client.CustomObjectsApi(admin)
        self.user = kubernetes.client.CustomObjectsApi(user)
        self.jobs_user = kubernetes.client.BatchV1Api(jobs_user)
        self.core_user = kubernetes.client.CoreV1Api(jobs_user)
        self.ns = namespace

    def step_pods_enforced(self) -> bool:
        body = {"metadata": {"name": "probe",
                             "annotations": {"runbooks.dev/execution": "probe"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}
        try:
            self.core_user.create_namespaced_pod(self.ns, body, dry_run="All")
        except ApiException as exc:
            if "only the Job controller" in refusal(exc):
                return True
            raise
        return False

    def step_jobs_enforced(self) -> bool:
        body = {"metadata": {"name": "probe", "labels": {"runbooks.dev/step": "probe"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": "busybox:1.37"}]}}}}
        try:
            self.jobs_user.create_namespaced_job(self.ns, body, dry_run="All")
        except ApiException as exc:
            if "only the Runbook Operator" in refusal(exc):
                return True
            raise
        return False

    def writers_enforced(self) -> bool:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook",
                "metadata": {"name": "probe"}, "spec": {"steps": [step("a")]}}
        try:
            self.user.create_namespaced_custom_object(GROUP, VERSION, self.ns, "runbooks",
                                                      body, dry_run="All")
        except ApiException as exc:
            if "may not create Jobs" in refusal(exc):
                return True
            raise
        return False

    def approvals_enforced(self) -> bool:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RunbookExecution",
                "metadata": {"name": "probe"},
                "spec": {"runbookRef": {"name": "probe"}, "approvals": [
                    {"step": "gate", "decision": "Approve", "by": "somebody-else"}]}}
        try:
            self.admin.create_namespaced_custom_object(GROUP, VERSION, self.ns,
                                                       "runbookexecutions", body, dry_run="All")
        except ApiException as exc:
            if "records who made it" in refusal(exc):
                return True
            raise
        return False


@pytest.fixture(scope="module")
def users(cluster: LocalCluster) -> LocalCluster:
    try:
        cluster.user_kubeconfig(PROBE_USER)
    except ClusterError as exc:
        pytest.skip(f"needs a cluster whose CA this run holds: {exc}")
    return cluster


def client_for(cluster: LocalCluster, user: str, *groups: str) -> Any:
    return kubernetes.config.new_client_from_config(
        config_file=str(cluster.user_kubeconfig(user, groups)))


@pytest.fixture(scope="module")
def policies(users: LocalCluster, k8s_api: Any, crds: None) -> Iterator[None]:
    """The chart's policies in force for this module, and surely gone after it."""
    core = kubernetes.client.CoreV1Api(k8s_api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(k8s_api)
    ns = f"rbo-admission-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "probe"}, "rules": [
        {"apiGroups": [GROUP], "resources": ["runbooks"], "verbs": ["create"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "probe"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "probe"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": PROBE_USER}]})
    rbac.create_namespaced_role(ns, {"metadata": {"name": "probe-jobs"}, "rules": [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "probe-jobs"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "probe-jobs"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": PROBE_JOBS_USER}]})
    probe = Probe(k8s_api, client_for(users, PROBE_USER), ns,
                  client_for(users, PROBE_JOBS_USER))
    # Only the operator may mark step Jobs: here it runs as the admin the tests use.
    review = kubernetes.client.AuthenticationV1Api(k8s_api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    operator_user = review.status.user_info.username
    docs = yaml.safe_load(POLICIES.read_text().replace("${OPERATOR}", operator_user))
    out = users.kubectl("apply", "-f", "-", input=as_list(docs), check=False)
    assert out.returncode == 0, out.stderr
    try:
        wait_for("the admission policies in force",
                 lambda: probe.writers_enforced() and probe.approvals_enforced()
                 and probe.step_jobs_enforced() and probe.step_pods_enforced(), timeout=60)
        admission = kubernetes.client.AdmissionregistrationV1Api(k8s_api)
        for doc in docs:
            if doc["kind"] == "ValidatingAdmissionPolicy":
                policy = admission.read_validating_admission_policy(doc["metadata"]["name"])
                checked = policy.status and policy.status.type_checking
                # The API server type-checks every expression against the CRD schemas.
                assert not (checked and checked.expression_warnings), checked
        yield
    finally:
        users.kubectl("delete", "--ignore-not-found", "-f", "-", input=as_list(docs))
        # Other modules patch approvals freely: wait until the API server forgot them.
        wait_for("the admission policies gone",
                 lambda: not probe.writers_enforced() and not probe.approvals_enforced()
                 and not probe.step_jobs_enforced() and not probe.step_pods_enforced(),
                 timeout=60)
        core.delete_namespace(ns)


def grant(kube: Kube, user: str, rules: list[dict[str, Any]], *, group: bool = False) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(kube.api)
    name = f"test-{user}"
    rbac.create_namespaced_role(kube.ns, {"metadata": {"name": name}, "rules": rules})
    rbac.create_namespaced_role_binding(kube.ns, {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io",
                      "kind": "Group" if group else "User", "name": user}]})


RUNBOOKS_RW = {"apiGroups": [GROUP], "resources": ["runbooks"],
               "verbs": ["get", "list", "create", "update", "patch"]}
CREATE_JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
RBX = "runbookexecutions"
DECIDE = {"apiGroups": [GROUP], "resources": ["runbookexecutions"],
          "verbs": ["get", "list", "patch", "update"]}


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    """Call the API expecting a refusal; the API server's message."""
    with pytest.raises(ApiException) as info:
        call(*args, **kwargs)
    assert info.value.status in (403, 422), info.value
    return refusal(info.value)


# -- immutable runs ---------------------------------------------------------------------------

def test_run_spec_is_frozen_by_the_crd(kube: Kube) -> None:
    # Runs before the module's policies are applied: the CRD alone refuses these.
    kube.ready_runbook("frozen", {
        "params": [{"name": "a", "type": "integer"}, {"name": "b"}],
        "steps": [{"name": "gate", "type": "approval"}, step("after", after=["gate"])]})
    kube.execute("frozen-1", "frozen", {"a": 1, "b": "x"},
                 triggeredBy={"kind": "Manual", "user": "me"})
    kube.wait_phase("frozen-1", "WaitingForApproval")
    for field, patch in [("params", {"params": {"a": 2}}),
                         ("params", {"params": {"a": 1, "b": "x", "c": 3}}),
                         ("runbookRef", {"runbookRef": {"name": "other"}}),
                         ("triggeredBy", {"triggeredBy": {"kind": "Alert"}}),
                         ("severity", {"severity": "SEV1"})]:
        message = refused(kube.patch, RBX, "frozen-1", {"spec": patch})
        assert f"spec.{field} cannot change once the execution exists" in message, message
    decision = {"step": "gate", "decision": "Reject", "by": "whoever", "comment": "no"}
    kube.patch(RBX, "frozen-1", {"spec": {"approvals": [decision]}})
    edited = {**decision, "decision": "Approve"}
    for approvals in ([edited], [], [edited, decision]):
        message = refused(kube.patch, RBX, "frozen-1", {"spec": {"approvals": approvals}})
        assert "spec.approvals can only be appended to" in message, message
    finished = kube.wait_finished("frozen-1")
    assert finished["status"]["steps"]["gate"]["reason"] == "Rejected"
    assert finished["spec"]["params"] == {"a": 1, "b": "x"}
    kube.patch(RBX, "frozen-1", {"spec": {"cancel": True}})
    message = refused(kube.patch, RBX, "frozen-1", {"spec": {"cancel": False}})
    assert "spec.cancel cannot be set back to false" in message


def test_operator_ignores_non_approvers_without_the_policy(kube: Kube) -> None:
    # Also before the policies: what a cluster without them still gets.
    kube.ready_runbook("no-policy", {"steps": [
        {"name": "gate", "type": "approval", "approval": {"approvers": {"users": ["erin"]}}}]})
    kube.execute("no-policy-1", "no-policy")
    kube.wait_phase("no-policy-1", "WaitingForApproval")
    stranger = {"step": "gate", "decision": "Approve", "by": "mallory"}
    kube.patch(RBX, "no-policy-1", {"spec": {"approvals": [stranger]}})
    wait_for("the ignored decision on the step", lambda: "ignored decisions by mallory" in (
        kube.execution("no-policy-1")["status"]["steps"]["gate"].get("message") or ""))
    assert kube.execution("no-policy-1")["status"]["phase"] == "WaitingForApproval"
    kube.patch(RBX, "no-policy-1", {"spec": {"approvals": [
        stranger, {"step": "gate", "decision": "Reject", "by": "erin"}]}})
    gate = kube.wait_finished("no-policy-1")["status"]["steps"]["gate"]
    assert (gate["reason"], gate["message"]) == ("Rejected", "rejected by erin")


def test_renamed_param_is_refused_by_the_policy(kube: Kube, policies: None) -> None:
    kube.ready_runbook("renamed", {"params": [{"name": "a"}, {"name": "b"}],
                                   "steps": [step("long", duration="10m")]})
    kube.execute("renamed-1", "renamed", {"a": "1"})
    kube.wait_phase("renamed-1", "Running")
    # Same number of keys, one renamed: the CRD's CEL cannot see free-form keys.
    body = kube.execution("renamed-1")
    body["spec"]["params"] = {"b": "1"}
    message = refused(kube.custom.replace_namespaced_custom_object, GROUP, VERSION, kube.ns,
                      RBX, "renamed-1", body)
    assert "immutable-runs.runbooks.dev" in message, message
    assert "spec.params cannot change once the execution exists" in message
    kube.patch(RBX, "renamed-1", {"spec": {"cancel": True}})
    assert kube.wait_finished("renamed-1")["spec"]["params"] == {"a": "1"}


# -- who may write a Runbook ----------------------------------------------------------------

def test_only_users_who_may_create_jobs_write_runbooks(kube: Kube, users: LocalCluster,
                                                       policies: None) -> None:
    grant(kube, "alice", [RUNBOOKS_RW, CREATE_JOBS])
    grant(kube, "bob", [RUNBOOKS_RW])
    alice = kubernetes.client.CustomObjectsApi(client_for(users, "alice"))
    bob = kubernetes.client.CustomObjectsApi(client_for(users, "bob"))

    def runbook(name: str) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Runbook",
                "metadata": {"name": name}, "spec": {"steps": [step("a")]}}

    alice.create_namespaced_custom_object(GROUP, VERSION, kube.ns, "runbooks", runbook("ok"))
    message = refused(bob.create_namespaced_custom_object, GROUP, VERSION, kube.ns, "runbooks",
                      runbook("nope"))
    assert f"user bob may not create Jobs in namespace {kube.ns}" in message, message
    assert "kubectl auth can-i create jobs.batch" in message
    assert kube.get("runbooks", "nope") is None
    changed = {"spec": {"steps": [step("a", image="alpine:3.20")]}}
    message = refused(bob.patch_namespaced_custom_object, GROUP, VERSION, kube.ns, "runbooks",
                      "ok", changed)
    assert "may not create Jobs" in message
    bob.patch_namespaced_custom_object(GROUP, VERSION, kube.ns, "runbooks", "ok",
                                       {"metadata": {"labels": {"team": "sre"}}})
    alice.patch_namespaced_custom_object(GROUP, VERSION, kube.ns, "runbooks", "ok", changed)
    body = kube.get("runbooks", "ok") or {}
    assert body["metadata"]["labels"] == {"team": "sre"}
    assert body["spec"]["steps"][0]["image"] == "alpine:3.20"


# -- approver identity ------------------------------------------------------------------------

def plugin(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "kubectl-runbook"
    return subprocess.run([str(binary), *args, "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=60)


def approval(user: str, by: str | None = None, step_name: str = "gate",
             decision: str = "Approve") -> dict[str, Any]:
    return {"step": step_name, "decision": decision, "by": by or user}


def test_only_the_operator_marks_step_jobs(kube: Kube, users: LocalCluster,
                                          policies: None) -> None:
    # Delete on Jobs and update on the runs' finalizers: enough to pass
    # OwnerReferencesPermissionEnforcement (on in the local control plane), so what
    # refuses mallory's Jobs below is the policy itself.
    grant(kube, "mallory", [
        {"apiGroups": ["batch"], "resources": ["jobs"],
         "verbs": ["get", "create", "update", "patch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "patch", "delete"]},
        {"apiGroups": [GROUP], "resources": [RBX], "verbs": ["get", "list"]},
        {"apiGroups": [GROUP], "resources": [f"{RBX}/finalizers"], "verbs": ["update"]}])
    kube.ready_runbook("marked", {"steps": [
        {"name": "gate", "type": "approval"},
        step("check", after=["gate"], message='{"healthy": false}'),
        step("act", after=["check"], when="steps.check.outputs.healthy")]})
    kube.execute("marked-1", "marked")
    uid = kube.wait_phase("marked-1", "WaitingForApproval")["metadata"]["uid"]
    mallory = kubernetes.client.BatchV1Api(client_for(users, "mallory"))
    name = job_name("marked-1", "check", 1)
    planted = planted_job("marked-1", uid, "check", 1, name, '{"healthy": true}')
    message = refused(mallory.create_namespaced_job, kube.ns, planted)
    assert f"Job {name}: only the Runbook Operator ({operator_user(kube)}) may make a Job " \
        "carrying an owner reference to RunbookExecution marked-1" in message, message
    assert "one made by mallory could forge the step's outcome and outputs" in message

    def plain(job_name_: str) -> dict[str, Any]:
        return {"metadata": {"name": job_name_}, "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox:1.37"}]}}}}
    owner = planted["metadata"]["ownerReferences"][0]
    variants = {
        "owner reference only, another version and case, not controller": {
            "metadata": {"ownerReferences": [{**owner, "apiVersion": "RunBooks.dev/v9",
                                              "kind": "runbookexecution",
                                              "controller": False}]}},
        "a runbooks.dev label only": {"metadata": {"labels": {"runbooks.dev/step": "check"}}},
        "a pod template annotation only": {"spec": {"template": {"metadata": {
            "annotations": {"runbooks.dev/execution": "marked-1"}}}}},
    }
    for what, extra in variants.items():
        body = plain(f"variant-{len(what)}")
        body["metadata"].update(extra.get("metadata", {}))
        body["spec"]["template"].update(extra.get("spec", {}).get("template", {}))
        assert "only the Runbook Operator" in refused(
            mallory.create_namespaced_job, kube.ns, body), what
    # Her own Jobs are hers to make; marks added later by an update are refused too.
    mallory.create_namespaced_job(kube.ns, plain("mine"))
    mallory.patch_namespaced_job("mine", kube.ns, {"metadata": {"labels": {"team": "sre"}}})
    message = refused(mallory.patch_namespaced_job, "mine", kube.ns,
                      {"metadata": {"ownerReferences": [owner]}})
    assert "Job mine: only the Runbook Operator" in message, message
    message = refused(mallory.patch_namespaced_job, "mine", kube.ns,
                      {"metadata": {"labels": {"runbooks.dev/attempt": "1"}}})
    assert "the label runbooks.dev/attempt" in message, message
    # A pod wearing the run's marks (the store files pods by them) is the Job
    # controller's to make; her plain pod is hers, and it cannot gain them later.
    pods = kubernetes.client.CoreV1Api(client_for(users, "mallory"))
    forged = {"metadata": {"name": "forged", "annotations": {
        "runbooks.dev/execution": "marked-1"}}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "step", "image": "busybox:1.37"}]}}
    message = refused(pods.create_namespaced_pod, kube.ns, forged)
    assert "pod forged: only the Job controller may make a pod carrying the annotation " \
        "runbooks.dev/execution" in message and "made by mallory could forge it" in message
    del forged["metadata"]["annotations"]
    pods.create_namespaced_pod(kube.ns, forged)
    message = refused(pods.patch_namespaced_pod, "forged", kube.ns,
                      {"metadata": {"labels": {"runbooks.dev/step": "check"}}})
    assert "the label runbooks.dev/step" in message, message
    # The operator's own Jobs carry every mark, and their pods too, under the policies.
    kube.patch(RBX, "marked-1", {"spec": {"approvals": [
        {"step": "gate", "decision": "Approve", "by": operator_user(kube)}]}})
    status = kube.wait_finished("marked-1")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["steps"]["check"]["outputs"] == {"healthy": False}
    assert status["steps"]["act"]["phase"] == "Skipped"


MERGE = "application/merge-patch+json"


def test_only_the_operator_lifts_a_staged_gate(kube: Kube, users: LocalCluster,
                                               policies: None) -> None:
    grant(kube, "mallory", [{"apiGroups": [""], "resources": ["pods"],
                             "verbs": ["get", "list", "patch", "update"]}])
    kube.ready_runbook("gated", {"steps": [step("long", duration="15s", message='{"ok": true}'),
                                           step("next", after=["long"])]})
    kube.execute("gated-1", "gated")
    admin = kubernetes.client.CoreV1Api(kube.api)

    def gated() -> Any:
        return next((p for p in admin.list_namespaced_pod(kube.ns).items
                     if (p.metadata.labels or {}).get("runbooks.dev/step") == "next"
                     and p.spec.scheduling_gates), None)
    name = wait_for("next's gated pod", gated).metadata.name
    mallory = kubernetes.client.CoreV1Api(client_for(users, "mallory"))
    lift = [{"op": "remove", "path": "/spec/schedulingGates"}]
    forged = {"metadata": {"annotations": {"outputs.runbooks.dev/long": '{"ok":false}'}}}
    message = refused(mallory.patch_namespaced_pod, name, kube.ns, lift)
    assert "only the Runbook Operator may lift the gate runbooks.dev/dependencies" in message
    message = refused(mallory.patch_namespaced_pod, name, kube.ns, forged, _content_type=MERGE)
    assert "the annotation outputs.runbooks.dev/long" in message, message
    message = refused(admin.patch_namespaced_pod, name, kube.ns,
                      {"metadata": {"labels": {"team": "sre"}}}, _content_type=MERGE)
    assert "the Runbook Operator may only lift a step pod's gate" in message, message
    refused(admin.patch_namespaced_pod, name, kube.ns, [
        *lift, {"op": "add", "path": "/metadata/labels/team", "value": "sre"}])
    body = kube.wait_finished("gated-1")
    assert body["status"]["phase"] == "Succeeded", body["status"]
    pod = admin.read_namespaced_pod(name, kube.ns)
    assert pod.metadata.annotations["outputs.runbooks.dev/long"] == '{"ok":true}'
    assert not pod.spec.scheduling_gates


def operator_user(kube: Kube) -> str:
    review = kubernetes.client.AuthenticationV1Api(kube.api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(review.status.user_info.username)


def test_approvals_are_recorded_as_the_real_user(kube: Kube, users: LocalCluster,
                                                  policies: None) -> None:
    grant(kube, "carol", [DECIDE])
    grant(kube, "dave", [DECIDE])
    kube.ready_runbook("gated", {"steps": [
        {"name": "gate", "type": "approval",
         "approval": {"timeout": "10m", "approvers": {"groups": ["sre-oncall"]}}},
        step("deploy", after=["gate"])]})
    kube.execute("gated-1", "gated")
    kube.wait_phase("gated-1", "WaitingForApproval")
    dave = kubernetes.client.CustomObjectsApi(client_for(users, "dave"))

    def decide(api: Any, *decisions: dict[str, Any]) -> Any:
        return api.patch_namespaced_custom_object(GROUP, VERSION, kube.ns, RBX, "gated-1",
                                                  {"spec": {"approvals": list(decisions)}})

    message = refused(decide, dave, approval("dave", by="carol"))
    assert "an approval records who made it: set by to dave (you)" in message, message
    message = refused(decide, dave, approval("dave"))
    assert "user dave is not an approver of step gate" in message, message
    assert "groups [sre-oncall]" in message
    out = plugin(users.user_kubeconfig("dave"), "reject", "gated-1", "gate", "-n", kube.ns)
    assert out.returncode == 1 and "not an approver of step gate" in out.stderr, out.stderr
    carol = users.user_kubeconfig("carol", ["sre-oncall"])
    out = plugin(carol, "approve", "gated-1", "gate", "-n", kube.ns, "-m", "go")
    assert out.returncode == 0, out.stderr
    assert "approved by carol" in out.stdout
    body = kube.wait_finished("gated-1")
    assert body["spec"]["approvals"] == [{"step": "gate", "decision": "Approve", "by": "carol",
                                          "comment": "go"}]
    gate = body["status"]["steps"]["gate"]
    assert (gate["phase"], gate["reason"]) == ("Succeeded", "Approved")
    assert "approved by carol" in gate["message"]
    assert body["status"]["phase"] == "Succeeded"
    carol_api = kubernetes.client.CustomObjectsApi(client_for(users, "carol", "sre-oncall"))
    message = refused(decide, carol_api, body["spec"]["approvals"][0],
                      approval("carol", step_name="deploy"))
    assert "this execution has no approval step named deploy" in message, message


def test_no_approval_before_the_run_started(kube: Kube, policies: None) -> None:
    message = refused(kube.execute, "early-1", "gated",
                      approvals=[approval("rbo-admin")])
    assert "has not started yet" in message, message
    assert kube.get("runbookexecutions", "early-1") is None


def test_approvers_by_user(kube: Kube, users: LocalCluster, policies: None) -> None:
    grant(kube, "erin", [DECIDE])
    grant(kube, "dave", [DECIDE])
    kube.ready_runbook("by-user", {"steps": [
        {"name": "gate", "type": "approval", "approval": {"approvers": {"users": ["erin"]}}}]})
    kube.execute("by-user-1", "by-user")
    kube.wait_phase("by-user-1", "WaitingForApproval")
    out = plugin(users.user_kubeconfig("dave"), "approve", "by-user-1", "gate", "-n", kube.ns)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "user dave is not an approver of step gate: ask one of users [erin]" in out.stderr
    out = plugin(users.user_kubeconfig("erin"), "reject", "by-user-1", "gate", "-n", kube.ns)
    assert out.returncode == 0, out.stderr
    body = kube.wait_finished("by-user-1")
    assert body["status"]["steps"]["gate"]["reason"] == "Rejected"
    assert "rejected by erin" in body["status"]["steps"]["gate"]["message"]


def test_hostile_approvals(kube: Kube, users: LocalCluster, policies: None) -> None:
    grant(kube, "erin", [DECIDE])
    grant(kube, "dave", [DECIDE])
    kube.ready_runbook("hostile", {"steps": [
        {"name": "gate", "type": "approval",
         "approval": {"approvers": {"users": ["erin"], "groups": ["sre-oncall"]}}},
        step("deploy", after=["gate"], duration="10m")]})
    kube.execute("hostile-1", "hostile")
    kube.wait_phase("hostile-1", "WaitingForApproval")
    erin = kubernetes.client.CustomObjectsApi(client_for(users, "erin"))
    dave = kubernetes.client.CustomObjectsApi(client_for(users, "dave"))

    def decide(api: Any, *decisions: dict[str, Any]) -> Any:
        return api.patch_namespaced_custom_object(GROUP, VERSION, kube.ns, RBX, "hostile-1",
                                                  {"spec": {"approvals": list(decisions)}})

    forged = {**approval("dave"), "groups": ["sre-oncall"]}
    message = refused(decide, dave, forged)
    assert "user dave is not an approver of step gate" in message, message
    approve = approval("erin")
    decide(erin, approve)
    wait_for("the gate decided", lambda: kube.execution("hostile-1")["status"]["steps"]
             ["gate"]["phase"] == "Succeeded")
    message = refused(decide, erin, approve, approval("erin", decision="Reject"))
    assert "step gate is no longer waiting for a decision (Succeeded)" in message, message
    kube.patch(RBX, "hostile-1", {"spec": {"cancel": True}})
    body = kube.wait_finished("hostile-1")
    assert body["status"]["phase"] == "Cancelled"
    message = refused(decide, erin, approve, approval("erin", decision="Reject"))
    assert "this execution has finished (Cancelled)" in message, message
    assert kube.execution("hostile-1")["spec"]["approvals"] == [approve]
