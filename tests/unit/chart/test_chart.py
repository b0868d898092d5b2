"""The Helm chart: it lints, renders, and ships the CRDs and RBAC the operator needs.

Cases: the chart's crds/ equal the generated crds/; `helm lint` passes;
`helm template` renders a Deployment running `runbook-operator run` as non-root
with a read-only root filesystem, a ServiceAccount, and a ClusterRole whose rules
are files/rbac-rules.yaml; runner accounts are created per listed namespace.
helm is built from the Go module proxy by hack/build-helm.sh (cached).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "runbook-operator"


@cache
def helm() -> str:
    out = subprocess.run(["bash", str(REPO / "hack" / "build-helm.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def render(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "rbo", str(CHART), "--namespace", "runbook-system"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_chart_crds_match_generated() -> None:
    for generated in sorted((REPO / "crds").glob("*.yaml")):
        shipped = CHART / "crds" / generated.name
        assert shipped.read_text() == generated.read_text(), (
            f"{shipped} is stale: run `cp crds/*.yaml charts/runbook-operator/crds/`")


def test_helm_lint() -> None:
    out = subprocess.run([helm(), "lint", str(CHART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rendered_objects() -> None:
    docs = render("runner.namespaces={production,staging}")
    kinds = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in docs}
    assert ("ServiceAccount", "runbook-runner", "production") in kinds
    assert ("ServiceAccount", "runbook-runner", "staging") in kinds
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][0] == "run"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]


def test_watch_namespaces_become_flags() -> None:
    docs = render("watchNamespaces={a,b}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args
