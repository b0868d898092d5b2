"""The Security page's `kubectl auth can-i` matrix of the operator's rights is the truth.

Cases:
- every row of the matrix in docs/security.md (between the ``can-i matrix`` markers) is
  what ``kubectl auth can-i VERB RESOURCE [--subresource S] --as`` answers for a
  ServiceAccount bound to the chart's ClusterRole (files/rbac-rules.yaml) on the
  local control plane (asked in a test namespace; the role is cluster-wide);
- offline: the matrix names every resource the role grants, with at least one
  "yes" row each, so a new grant cannot go undocumented.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "runbook-operator" / "files" / "rbac-rules.yaml"
PAGE = REPO / "docs" / "security.md"


def matrix() -> list[tuple[str, str, str, bool]]:
    """(verb, resource, subresource, allowed) rows of the Security page's table."""
    text = PAGE.read_text()
    body = re.search(r"<!-- can-i matrix[^>]*-->\n(.*?)<!-- end can-i matrix -->", text, re.S)
    assert body, "docs/security.md has no can-i matrix between its markers"
    rows = []
    for line in body.group(1).splitlines()[2:]:  # after the header and its rule
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        verb, resource, sub, answer = cells
        assert answer in ("yes", "no"), line
        rows.append((verb, resource, sub, answer == "yes"))
    assert len(rows) >= 10
    return rows


def test_matrix_names_every_grant() -> None:
    granted = {(r, g) for rule in yaml.safe_load(RULES.read_text())
               for g in rule["apiGroups"] for r in rule["resources"]}
    yes = {(resource, sub) for _, resource, sub, ok in matrix() if ok}
    for resource, group in granted:
        name, _, sub = resource.partition("/")
        if group in ("apiextensions.k8s.io",) or name == "namespaces":
            continue  # kopf's own discovery; listed in the rules file's comments
        full = f"{name}.{group}" if group else name
        assert (full, sub) in yes or (full, "") in yes or (name, sub) in yes, (
            f"docs/security.md's can-i matrix has no 'yes' row for {resource} ({group or 'core'})")


def test_operator_rights_match_the_docs(cluster: LocalCluster, k8s_api: Any, crds: None,
                                          namespace: str) -> None:
    rbac = kubernetes.client.RbacAuthorizationV1Api(k8s_api)
    core = kubernetes.client.CoreV1Api(k8s_api)
    role = f"rbo-matrix-{namespace}"
    rbac.create_cluster_role({"metadata": {"name": role},
                              "rules": yaml.safe_load(RULES.read_text())})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    rbac.create_cluster_role_binding({
        "metadata": {"name": role},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}]})
    who = f"system:serviceaccount:{namespace}:operator"
    try:
        wrong = []
        for verb, resource, sub, expected in matrix():
            args = ["auth", "can-i", verb, resource, f"--as={who}", "-n", namespace]
            if sub:
                args.append(f"--subresource={sub}")
            out = cluster.kubectl(*args, check=False)
            answer = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
            assert answer in ("yes", "no"), out.stdout + out.stderr
            if (answer == "yes") != expected:
                wrong.append(f"{verb} {resource} {sub}: docs/security.md says "
                             f"{'yes' if expected else 'no'}, the API server {answer}")
        assert not wrong, "\n".join(wrong)
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
