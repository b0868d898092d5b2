"""The Helm chart: it lints, renders, and ships the CRDs and RBAC the operator needs.

Cases: the chart's crds/ equal the generated crds/; `helm lint` passes;
`helm template` renders a Deployment running `runbook-operator run` as non-root
with a read-only root filesystem, liveness on /healthz and readiness on /readyz, a
ServiceAccount, and a ClusterRole whose rules are files/rbac-rules.yaml; with
watchNamespaces, a Role and RoleBinding in each of them (the rules less the
cluster-scoped ones, plus the named notification Secrets) and no ClusterRole;
runner accounts are created per listed namespace;
extra args and the tracing endpoint reach the container; runner accounts and
privileged namespaces become --runner-service-account and
--allow-privileged-namespace (none by default); a metrics Service always,
and on request a ServiceMonitor selecting it, the PrometheusRule with the groups
of deploy/monitoring/rules.yaml and the dashboard ConfigMap (whose files equal
deploy/monitoring's); the admission policies and bindings are those of
files/admission-policies.yaml with the chart's labels, on by default and gone with
admission.enabled=false; the alert receiver's port, flags, token Secret mounted
(optional, so the pod starts without it), its Service, and the Secret only on
request; none of it with alerts.enabled=false; notifications.secretNames become a
`get` rule on exactly those Secret names (none by default); two replicas get a
PodDisruptionBudget (maxUnavailable 1) and prefer different nodes, one replica
neither, and an explicit affinity replaces the default.
helm is built from the Go module proxy by hack/build-helm.sh (cached).
"""

from __future__ import annotations

import json
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
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    rules = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    # Secret parameters only where steps run: a Role in each runner namespace.
    assert role["rules"] == [r for r in rules if "secrets" not in r["resources"]]
    params = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"
              and d["metadata"]["name"] == "rbo-params"}
    assert set(params) == {"production", "staging"}
    assert all(p["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                               "verbs": ["create"]}] for p in params.values())
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"
            and d["metadata"]["name"] == "rbo-params"} == {"production", "staging"}
    everywhere = next(d for d in render() if d["kind"] == "ClusterRole")
    assert everywhere["rules"] == rules  # no runner namespaces: steps may run anywhere
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]


def test_notification_secrets_are_named() -> None:
    role = next(d for d in render("notifications.secretNames={slack-oncall,pd}")
                if d["kind"] == "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["slack-oncall", "pd"],
            "verbs": ["get"]} in secret_rules
    assert not any({"list", "watch"} & set(r["verbs"]) for r in secret_rules)
    assert all(r.get("resourceNames") for r in secret_rules if "get" in r["verbs"])


def test_watch_namespaces_become_flags_and_roles_only_there() -> None:
    docs = render("watchNamespaces={a,b}", "notifications.secretNames={hooks}")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"
             and d["metadata"]["name"] == "rbo"}
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"
                and d["metadata"]["name"] == "rbo"}
    assert set(roles) == bindings == {"a", "b"}
    cluster_scoped = [r for r in yaml.safe_load((CHART / "files" / "rbac-rules.yaml")
                                                .read_text())
                      if "apiextensions.k8s.io" in r["apiGroups"] or "namespaces" in
                      r["resources"]]
    for role in roles.values():
        assert not [r for r in role["rules"] if r in cluster_scoped]
        assert {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hooks"],
                "verbs": ["get"]} in role["rules"]


MONITORING = REPO / "deploy" / "monitoring"


def test_monitoring_files_match_deploy_monitoring() -> None:
    for name in ("rules.yaml", "grafana-dashboard.json"):
        assert (CHART / "files" / name).read_text() == (MONITORING / name).read_text(), (
            f"charts/runbook-operator/files/{name} is stale: "
            f"run `cp deploy/monitoring/{name} charts/runbook-operator/files/`")


def test_monitoring_objects() -> None:
    plain = {d["kind"] for d in render()}
    assert "Service" in plain
    assert not {"ServiceMonitor", "PrometheusRule", "ConfigMap"} & plain
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
                  "metrics.dashboard.enabled=true", "metrics.prometheusRule.labels.release=kps")
    by_kind = {d["kind"]: d for d in docs}
    service, monitor = by_kind["Service"], by_kind["ServiceMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pod_labels = by_kind["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    rule = by_kind["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"]["groups"] == yaml.safe_load((MONITORING / "rules.yaml").read_text())[
        "groups"]
    dashboard = by_kind["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["runbook-operator.json"]) == json.loads(
        (MONITORING / "grafana-dashboard.json").read_text())


def test_extra_args_and_tracing_reach_the_container() -> None:
    container = next(d for d in render() if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    assert not any(e["name"].startswith("OTEL_") for e in container["env"])  # off by default
    docs = render("extraArgs={--no-events,--workers=16}",
                  "tracing.otlpEndpoint=http://collector:4318", "tracing.samplerArg=0.1")
    container = next(d for d in docs if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--no-events", "--workers=16"]
    assert {e["name"]: e["value"] for e in container["env"] if "value" in e} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_SERVICE_NAME": "runbook-operator",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def test_step_security_allowances_become_flags() -> None:
    args = next(d for d in render() if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--runner-service-account=runbook-runner" in args
    assert not any(a.startswith("--allow-privileged-namespace") for a in args)
    docs = render("runner.serviceAccounts={diag}", "security.privilegedNamespaces={break-glass}")
    args = next(d for d in docs if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--runner-service-account=diag" in args
    assert "--allow-privileged-namespace=break-glass" in args


ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def test_admission_policies_are_the_file() -> None:
    rendered = [d for d in render() if d["kind"] in ADMISSION_KINDS]
    for doc in rendered:
        assert doc["metadata"].pop("labels")["app.kubernetes.io/instance"] == "rbo"
    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]
    text = (CHART / "files" / "admission-policies.yaml").read_text()
    assert "${OPERATOR}" in text
    # Only the operator's ServiceAccount (release namespace, fullname) may mark step Jobs.
    operator = "system:serviceaccount:runbook-system:rbo"
    shipped = yaml.safe_load(text.replace("${OPERATOR}", operator))
    # helm orders objects by kind; the content must be the file's, object by object.
    assert sorted(rendered, key=key) == sorted(shipped, key=key)
    assert {d["kind"] for d in rendered} == set(ADMISSION_KINDS)
    off = render("admission.enabled=false")
    assert not [d for d in off if d["kind"] in ADMISSION_KINDS]


def test_alert_receiver_is_served_with_the_token_from_a_secret() -> None:
    docs = render("alerts.tokenSecret.create=true", "alerts.tokenSecret.token=t0ken")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--alerts-port=9095" in container["args"]
    assert "--alerts-token-file=/etc/runbook-operator/alerts/token" in container["args"]
    assert "--alerts-max-body-bytes=1048576" in container["args"]
    assert {"name": "alerts", "containerPort": 9095} in container["ports"]
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "rbo-alerts-token"
    assert volume["secret"]["optional"] is True
    assert container["volumeMounts"][0]["mountPath"] == "/etc/runbook-operator/alerts"
    service = next(d for d in docs if d["kind"] == "Service"
                   and d["metadata"]["name"] == "rbo-alerts")
    assert service["spec"]["ports"] == [{"name": "alerts", "port": 9095,
                                         "targetPort": "alerts"}]
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["stringData"] == {"token": "t0ken"}


def test_alert_receiver_defaults_and_off() -> None:
    docs = render()
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret unless asked for"
    assert any(d["kind"] == "Service" and d["metadata"]["name"] == "rbo-alerts" for d in docs)
    off = render("alerts.enabled=false")
    container = next(d for d in off if d["kind"] == "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]
    assert not any(a.startswith("--alerts") for a in container["args"])
    assert not any(d["kind"] == "Service" and d["metadata"]["name"] == "rbo-alerts"
                   for d in off)


def test_two_replicas_elect_a_leader_with_a_lease_role() -> None:
    docs = render()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"--leader-elect", "--leader-elect-namespace=runbook-system",
            "--leader-elect-name=rbo"} <= set(container["args"])
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "runbook-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["rbo"], "verbs": ["get", "update"]}]
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == "rbo"

    single = render("leaderElection.enabled=false", "replicaCount=1")
    deployment = next(d for d in single if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--leader-elect") for a in args)
    assert not any(d["kind"] == "Role" for d in single)


def test_replicas_are_spread_and_drained_one_at_a_time() -> None:
    docs = render()
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {
        "app.kubernetes.io/name": "runbook-operator", "app.kubernetes.io/instance": "rbo"}}}
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == \
        pdb["spec"]["selector"]["matchLabels"]
    assert pod["metadata"]["labels"].items() >= \
        term["podAffinityTerm"]["labelSelector"]["matchLabels"].items()

    single = render("leaderElection.enabled=false", "replicaCount=1")
    assert not any(d["kind"] == "PodDisruptionBudget" for d in single)
    pod = next(d for d in single if d["kind"] == "Deployment")["spec"]["template"]
    assert "affinity" not in pod["spec"]

    custom = render("affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                    ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
                    "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                    ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists")
    pod = next(d for d in custom if d["kind"] == "Deployment")["spec"]["template"]
    assert list(pod["spec"]["affinity"]) == ["nodeAffinity"]


def test_query_sources_become_flags_and_mounted_secrets() -> None:
    docs = render("querySources[0].name=prometheus",
                  "querySources[0].url=http://prom.monitoring:9090",
                  "querySources[0].namespaces={ops,payments}",
                  "querySources[0].secret.name=prom-creds",
                  "querySources[0].secret.tokenKey=token",
                  "querySources[1].name=plain", "querySources[1].url=http://p:9090",
                  "alerts.enabled=false")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    flags = [a for a in container["args"] if a.startswith("--query-source=")]
    assert flags == [
        "--query-source=name=prometheus,url=http://prom.monitoring:9090,"
        "tokenFile=/etc/runbook-operator/query/prometheus/token,namespaces=ops|payments",
        "--query-source=name=plain,url=http://p:9090"]
    assert container["volumeMounts"] == [{"name": "query-prometheus", "readOnly": True,
                                          "mountPath": "/etc/runbook-operator/query/prometheus"}]
    assert pod["volumes"] == [{"name": "query-prometheus", "secret": {"secretName": "prom-creds"}}]
    # Each flag is what the operator parses at start.
    from runbook_operator.engine.query_sources import parse_sources
    sources = parse_sources(f.split("=", 1)[1] for f in flags)
    assert sources["prometheus"].namespaces == frozenset({"ops", "payments"})
