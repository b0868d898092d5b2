"""The operator runs with nothing but the chart's roles, in both install modes.

Cases: an operator authenticated as a ServiceAccount bound to
charts/runbook-operator/files/rbac-rules.yaml (and nothing else) validates a
Runbook and runs an execution with a secret parameter, retention and a cancel to
the end, with OwnerReferencesPermissionEnforcement on (the local control plane
enables it, as OpenShift does: blockOwnerDeletion needs the finalizers grant); the
role grants no read of Secrets and no write of Runbook specs, no update of status
(patch only) and no events.k8s.io. Namespaced install (watchNamespaces): the chart
renders Roles and RoleBindings in the watched namespace only and no ClusterRole;
the operator, run as that ServiceAccount with --namespace, runs an execution to the
end there, and its token can read and write nothing in another namespace nor list
anything cluster-wide.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from kube import Kube, step, wait_for

from operator_process import OperatorProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "runbook-operator" / "files" / "rbac-rules.yaml"


def token_kubeconfig(admin_kubeconfig: Path, api: Any, namespace: str, account: str,
                     out: Path) -> Path:
    core = kubernetes.client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data") or base64.b64encode(
        Path(cluster["certificate-authority"]).read_bytes()).decode()
    out.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": {"server": cluster["server"],
                                                   "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}],
    }))
    return out


def test_operator_runs_with_only_the_chart_role(kube: Kube, k8s_api: Any, cluster: Any,
                                                operator: OperatorProcess,
                                                tmp_path: Path) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(k8s_api)
    role = f"rbo-test-{kube.ns}"
    rbac.create_cluster_role({"metadata": {"name": role},
                              "rules": yaml.safe_load(RULES.read_text())})
    kube.core.create_namespaced_service_account(kube.ns, {"metadata": {"name": "operator"}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": kube.ns}]})
    kubeconfig = token_kubeconfig(cluster.kubeconfig, k8s_api, kube.ns, "operator",
                                  tmp_path / "kubeconfig")
    limited = OperatorProcess(kubeconfig, tmp_path / "logs")
    operator.stop()  # one operator at a time: the session's one is restarted afterwards
    try:
        limited.start()
        kube.ready_runbook("scoped", {
            "params": [{"name": "token", "secret": True, "required": True}],
            "history": {"successfulLimit": 1},
            "steps": [step("a"), step("b", after=["a"])]})
        kube.execute("scoped-1", "scoped", {"token": "canary-9f3a"})
        assert kube.wait_finished("scoped-1")["status"]["phase"] == "Succeeded"
        kube.execute("scoped-2", "scoped", {"token": "canary-9f3a"})
        assert kube.wait_finished("scoped-2")["status"]["phase"] == "Succeeded"
        wait_for("retention as the limited role",
                 lambda: kube.get("runbookexecutions", "scoped-1") is None)
        kube.ready_runbook("long", {"steps": [step("wait", duration="10m")]})
        kube.execute("long-1", "long")
        wait_for("a Job", lambda: kube.jobs("long-1"))
        kube.patch("runbookexecutions", "long-1", {"spec": {"cancel": True}})
        assert kube.wait_finished("long-1")["status"]["phase"] == "Cancelled"
        log = limited.log_path.read_text()
        # \b: a timestamp such as 51.721403Z is not a 403
        assert not re.search(r"\b403\b", log) and "Forbidden" not in log, limited.tail(80)
    finally:
        limited.stop()
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
        operator.start()


def test_role_grants_no_secret_reads_or_spec_writes() -> None:
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules:
        assert "events.k8s.io" not in rule["apiGroups"], rule  # core Events only
        if any(r.endswith("/status") for r in rule["resources"]):
            assert rule["verbs"] == ["patch"], rule  # merge patches, never an update
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) == {"create"}
        for resource in rule["resources"]:
            if resource in ("runbooks", "circuitpolicies"):
                assert not {"create", "update", "patch"} & set(rule["verbs"]), rule
            if resource == "runbookexecutions":  # alerts and schedules create runs
                assert not {"update", "patch"} & set(rule["verbs"]), rule


def render_namespaced(release_ns: str, watched: str) -> list[dict[str, Any]]:
    helm = subprocess.run(["bash", str(REPO / "hack" / "build-helm.sh")], check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    out = subprocess.run([helm, "template", "rbo", str(REPO / "charts" / "runbook-operator"),
                          "--namespace", release_ns, "--set", f"watchNamespaces={{{watched}}}",
                          "--set", "admission.enabled=false", "--set", "alerts.enabled=false",
                          "--set", "leaderElection.enabled=false"],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_namespaced_install_works_there_and_reads_nothing_elsewhere(
        kube: Kube, k8s_api: Any, cluster: Any, operator: OperatorProcess,
        tmp_path: Path) -> None:
    core = kubernetes.client.CoreV1Api(k8s_api)
    rbac = kubernetes.client.RbacAuthorizationV1Api(k8s_api)
    other = f"{kube.ns}-other"
    core.create_namespace({"metadata": {"name": other}})
    docs = render_namespaced(kube.ns, kube.ns)
    kinds = {d["kind"] for d in docs}
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds, kinds
    roles = [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    assert roles and {d["metadata"]["namespace"] for d in roles} == {kube.ns}
    account = next(d for d in docs if d["kind"] == "ServiceAccount"
                   and d["metadata"]["name"] == "rbo")
    core.create_namespaced_service_account(kube.ns, {"metadata": {"name": "rbo"}})
    for doc in roles:
        if doc["kind"] == "Role":
            rbac.create_namespaced_role(kube.ns, doc)
        else:
            rbac.create_namespaced_role_binding(kube.ns, doc)
    assert account["metadata"].get("namespace", kube.ns) == kube.ns
    who = f"system:serviceaccount:{kube.ns}:rbo"

    def can(*args: str) -> bool:
        out = cluster.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
        return out.stdout.strip().splitlines()[-1] == "yes"

    # There: what the operator does. Elsewhere, and cluster-wide: nothing.
    for verb, resource, sub in [("watch", "runbookexecutions.runbooks.dev", ""),
                                ("patch", "runbookexecutions.runbooks.dev", "status"),
                                ("update", "runbookexecutions.runbooks.dev", "finalizers"),
                                ("create", "jobs.batch", ""), ("get", "pods", ""),
                                ("create", "secrets", ""), ("create", "events", "")]:
        extra = [f"--subresource={sub}"] if sub else []
        assert can(verb, resource, "-n", kube.ns, *extra), (verb, resource, sub)
        assert not can(verb, resource, "-n", other, *extra), (verb, resource, sub, other)
    for resource in ("runbooks.runbooks.dev", "runbookexecutions.runbooks.dev", "jobs.batch",
                     "pods", "secrets", "configmaps", "namespaces",
                     "customresourcedefinitions.apiextensions.k8s.io"):
        assert not can("list", resource, "-n", other), resource
        assert not can("list", resource, "--all-namespaces"), resource

    kubeconfig = token_kubeconfig(cluster.kubeconfig, k8s_api, kube.ns, "rbo",
                                  tmp_path / "kubeconfig")
    limited = OperatorProcess(kubeconfig, tmp_path / "logs",
                              extra_args=[f"--namespace={kube.ns}"])
    operator.stop()
    try:
        limited.start()
        kube.ready_runbook("scoped", {
            "params": [{"name": "token", "secret": True, "required": True}],
            "steps": [step("a"), step("b", after=["a"])]})
        kube.execute("scoped-1", "scoped", {"token": "canary-77aa"})
        assert kube.wait_finished("scoped-1")["status"]["phase"] == "Succeeded"
        log = limited.log_path.read_text()
        assert not re.search(r"\b403\b", log) and "Forbidden" not in log, limited.tail(80)
        assert "canary-77aa" not in log
    finally:
        limited.stop()
        operator.start()
        core.delete_namespace(other)
