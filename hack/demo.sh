#!/usr/bin/env bash
# The demo (`make demo`): the incident guide's AI-provider story, in about a minute,
# on the local control plane, with no network.
#
#   An alert (AIResponseSlow, provider openai) goes through a real Alertmanager to
#   the operator's receiver and starts ai-service-recovery. Its probe of openai
#   fails, is retried with backoff, the provider's circuit opens and the fallback
#   provider is probed instead; the failover waits for an approval, which carol
#   (on call, group sre-oncall) gives with `kubectl runbook approve`; the run
#   succeeds and its Slack notification reaches a local sink. Then `kubectl
#   runbook get` shows the tree and `kubectl runbook circuits` the open circuit.
#
#   hack/demo.sh up     # the story; leaves everything running to look around
#   hack/demo.sh down   # stops Alertmanager, the operator, the sink, the cluster
#
# Pods do not run: kwok ends them as the demo Runbook's pod annotations say
# (examples/demo/, hack/README.md). Alertmanager is used when hack/build-alerting.sh
# has cached it (`make tools`; or RBO_ALERTING_BIN); otherwise, or with
# RBO_DEMO_ALERTMANAGER=0, the demo posts Alertmanager's webhook payload (version 4)
# to the receiver itself, and says so. State: $RBO_CLUSTER_DIR (default .cluster)
# and its demo/ directory (pids, ports, token, logs, what the sink received).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export RBO_CLUSTER_DIR=${RBO_CLUSTER_DIR:-$PWD/.cluster}
state=$RBO_CLUSTER_DIR
demo="$state/demo"
ns=default

say() { printf '\n==> %s\n' "$*"; }
running() { [ -f "$demo/$1.pid" ] && kill -0 "$(cat "$demo/$1.pid")" 2>/dev/null; }
stop() {  # the processes this script started, by their pid files only
  local name pid
  for name in "$@"; do
    [ -f "$demo/$name.pid" ] || continue
    pid=$(cat "$demo/$name.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$demo/$name.pid"
  done
}
down() {
  stop ui alertmanager operator sink
  # the operator of the demo before this one kept its pid here
  if [ -f "$state/operator.pid" ] && kill -0 "$(cat "$state/operator.pid")" 2>/dev/null; then
    kill "$(cat "$state/operator.pid")" || true
  fi
  rm -f "$state/operator.pid"
  "$PYTHON" hack/cluster.py down
  rm -rf "$demo"
}
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {  # URL TRIES: until it answers 2xx
  for _ in $(seq "$2"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "!! no answer from $1" >&2
  return 1
}

case "${1:-up}" in
down) down; exit 0 ;;
up) ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

started=$(date +%s.%N)
elapsed() { "$PYTHON" -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.0f}s')" "$started"; }
if [ -d "$demo" ] || [ -f "$state/operator.pid" ]; then
  echo ">> a demo is up in $state: stopping it to tell the story from the start"
  down 2>/dev/null
elif "$PYTHON" hack/cluster.py status >/dev/null 2>&1; then
  # not the demo's (tests, or someone's work): its objects would change the story,
  # and the demo's admission policies and Open circuit would change theirs
  echo "!! a control plane the demo did not start runs in $state; stop it" \
       "(python hack/cluster.py down) or choose another RBO_CLUSTER_DIR" >&2
  exit 1
fi
mkdir -p "$demo"

# -- 1. the platform ---------------------------------------------------------------
say "Local control plane (etcd, kube-apiserver, controllers, kwok as the kubelet) in $state"
"$PYTHON" hack/cluster.py up >/dev/null
eval "$("$PYTHON" hack/cluster.py env)"
venv_bin=$(cd "$(dirname "$(command -v "$PYTHON")")" && pwd)
export PATH="$venv_bin:$PATH"  # kubectl-runbook beside the Python that runs the operator
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null
# Who may approve is checked in the API server (the chart's admission policies);
# only the operator may mark step Jobs: here it runs as the admin of this cluster.
operator_user=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
"$PYTHON" -c 'import sys, yaml; print(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
  "items": yaml.safe_load(open(sys.argv[1]).read().replace("${OPERATOR}", sys.argv[2]))}))' \
  charts/runbook-operator/files/admission-policies.yaml "$operator_user" \
  | kubectl apply -f - >/dev/null
carol=$("$PYTHON" hack/cluster.py user carol --group sre-oncall)
kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: runbook-approver, namespace: $ns}
rules:
  - apiGroups: [runbooks.dev]
    resources: [runbooks, runbookexecutions, circuitpolicies]
    verbs: [get, list, watch]
  - apiGroups: [runbooks.dev]
    resources: [runbookexecutions]
    verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sre-oncall-approves, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: runbook-approver}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre-oncall}]
EOF
echo "    CRDs, admission policies; carol (group sre-oncall) may approve: $carol"

say "Notification sink: Slack's incoming webhook, played on 127.0.0.1"
"$PYTHON" hack/demo_sink.py serve --port-file "$demo/sink.port" --out "$demo/sink.jsonl" \
  >"$demo/sink.log" 2>&1 &
echo $! >"$demo/sink.pid"
for _ in $(seq 100); do [ -s "$demo/sink.port" ] && break; sleep 0.05; done
slack_url="http://127.0.0.1:$(cat "$demo/sink.port")/services/T0DEMO/B0DEMO/demo"
echo "    $slack_url (log $demo/sink.log)"

say "Operator, with its Alertmanager receiver (bearer token) on 127.0.0.1"
health_port=$(free_port)
alerts_port=$(free_port)
"$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$demo/alerts-token"
chmod 600 "$demo/alerts-token"
PYTHONUNBUFFERED=1 "$PYTHON" -m runbook_operator.cli.operator run --kubeconfig "$KUBECONFIG" \
  --health-port "$health_port" --alerts-address 127.0.0.1 --alerts-port "$alerts_port" \
  --alerts-token-file "$demo/alerts-token" >"$demo/operator.log" 2>&1 &
echo $! >"$demo/operator.pid"
wait_http "http://127.0.0.1:$health_port/healthz" 300
receiver="http://127.0.0.1:$alerts_port/alerts"
echo "    pid $(cat "$demo/operator.pid"), receiver $receiver, log $demo/operator.log"

alerting_bin=${RBO_ALERTING_BIN:-$(bash hack/build-alerting.sh --cached 2>/dev/null || true)}
if [ "${RBO_DEMO_ALERTMANAGER:-1}" != 0 ] && [ -n "$alerting_bin" ] &&
   [ -x "$alerting_bin/alertmanager" ] && [ -x "$alerting_bin/amtool" ]; then
  say "Alertmanager (the real one, cached by hack/build-alerting.sh) routing to the receiver"
  am_port=$(free_port)
  cat >"$demo/alertmanager.yml" <<EOF
route:
  receiver: runbook-operator
  group_by: [alertname, provider]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: runbook-operator
    webhook_configs:
      - url: $receiver
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization: {type: Bearer, credentials_file: $demo/alerts-token}
EOF
  "$alerting_bin/alertmanager" --config.file="$demo/alertmanager.yml" \
    --storage.path="$demo/alertmanager-data" --web.listen-address="127.0.0.1:$am_port" \
    --web.external-url="http://127.0.0.1:$am_port" --cluster.listen-address= \
    >"$demo/alertmanager.log" 2>&1 &
  echo $! >"$demo/alertmanager.pid"
  wait_http "http://127.0.0.1:$am_port/-/ready" 300
  echo "http://127.0.0.1:$am_port" >"$demo/alertmanager.url"
  echo "alertmanager" >"$demo/alert-source"
  echo "    http://127.0.0.1:$am_port, webhook $receiver (group_wait 1s), log $demo/alertmanager.log"
else
  echo "direct" >"$demo/alert-source"
  if [ "${RBO_DEMO_ALERTMANAGER:-1}" = 0 ]; then
    say "No Alertmanager (RBO_DEMO_ALERTMANAGER=0): the demo posts its webhook payload itself"
  else
    say "No Alertmanager cached (make tools builds it): the demo posts its webhook payload itself"
  fi
fi

# -- 2. the objects ----------------------------------------------------------------
say "The demo's CircuitPolicy ai-providers and Runbook ai-service-recovery (examples/demo/), the other examples"
kubectl -n "$ns" create serviceaccount runbook-runner >/dev/null
kubectl -n "$ns" create secret generic demo-slack --from-literal=url="$slack_url" >/dev/null
# referenced by the runbook's steps (clear-cache, report); kwok never reads them
kubectl -n "$ns" create secret generic runbook-redis --from-literal=password=demo >/dev/null
kubectl -n "$ns" create secret generic runbook-notifications \
  --from-literal=slack-webhook-url="$slack_url" >/dev/null
kubectl -n "$ns" apply -f examples/demo/ >/dev/null
# the other example runbooks, to try afterwards (none of them answers this alert)
for f in examples/*.yaml; do
  case "$f" in */execution-*|*/ai-service-recovery.yaml|*/circuitpolicy-ai-providers.yaml) ;;
  *) kubectl -n "$ns" apply -f "$f" >/dev/null ;; esac
done
kubectl -n "$ns" wait --for=condition=Ready --timeout=60s runbook/ai-service-recovery >/dev/null
echo "    kwok scripts the pods: every probe of openai times out (exit 1), anthropic answers in 0.8s"

# -- 3. the incident ---------------------------------------------------------------
say "Alert AIResponseSlow{provider=\"openai\"} fires"
labels=(alertname=AIResponseSlow provider=openai namespace=production severity=warning
        service=ai-gateway)
summary="AI responses from openai take over 5s (p95 15s)"
if [ "$(cat "$demo/alert-source")" = alertmanager ]; then
  echo "    amtool alert add ${labels[*]}"
  "$alerting_bin/amtool" --alertmanager.url="$(cat "$demo/alertmanager.url")" alert add \
    "${labels[@]}" --annotation=summary="$summary" >/dev/null
else
  echo "    POST $receiver (an Alertmanager webhook payload, version 4)"
  "$PYTHON" - "$receiver" "$demo/alerts-token" "$summary" "${labels[@]}" <<'EOF'
import datetime, hashlib, json, sys, urllib.request
url, token_file, summary, *pairs = sys.argv[1:]
labels = dict(p.split("=", 1) for p in pairs)
now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
group = {k: labels[k] for k in ("alertname", "provider")}
body = {"version": "4", "groupKey": '{}:{alertname="AIResponseSlow", provider="openai"}',
        "truncatedAlerts": 0, "status": "firing", "receiver": "runbook-operator",
        "groupLabels": group, "commonLabels": labels,
        "commonAnnotations": {"summary": summary}, "externalURL": "http://127.0.0.1/demo",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": summary},
                    "startsAt": now, "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                    "fingerprint": fingerprint}]}
token = open(token_file).read().strip()
request = urllib.request.Request(url, json.dumps(body).encode(), {
    "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
with urllib.request.urlopen(request, timeout=10) as response:
    print("    receiver:", response.read().decode())
EOF
fi
execution=""
for _ in $(seq 300); do
  execution=$(kubectl -n "$ns" get runbookexecutions -l runbooks.dev/trigger=alert \
    -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)
  [ -n "$execution" ] && break
  sleep 0.1
done
[ -n "$execution" ] || { echo "!! no execution was started; see $demo/operator.log" >&2; exit 1; }
echo "$execution" >"$demo/execution"
say "The receiver started $execution; following it (kubectl runbook watch, plain lines)"
PYTHONUNBUFFERED=1 kubectl runbook watch "$execution" -n "$ns" --timeout 300 2>&1 |
  sed -u 's/^/    /' &
watcher=$!
kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=WaitingForApproval --timeout=120s \
  "runbookexecution/$execution" >/dev/null
sleep 1  # the on-call engineer reads the message (and the watch catches up)

say "approve-failover waits for a human; carol (on call) approves as herself"
echo "    KUBECONFIG=$carol kubectl runbook approve $execution approve-failover -m 'anthropic is healthy, fail over'"
KUBECONFIG=$carol PYTHONUNBUFFERED=1 kubectl runbook approve "$execution" approve-failover \
  -n "$ns" -m "anthropic is healthy, fail over" | sed -u 's/^/    /'
outcome=0
wait "$watcher" || outcome=$?
phase=$(kubectl -n "$ns" get "runbookexecution/$execution" -o jsonpath='{.status.phase}')
[ "$phase" = Succeeded ] || { echo "!! $execution ended $phase; see $demo/operator.log" >&2; exit 1; }

# -- 4. the aftermath --------------------------------------------------------------
say "The run Succeeded; the notification the sink received"
for _ in $(seq 200); do
  "$PYTHON" hack/demo_sink.py show "$demo/sink.jsonl" --event succeeded >/dev/null 2>&1 && break
  sleep 0.1
done
"$PYTHON" hack/demo_sink.py show "$demo/sink.jsonl" --event succeeded | sed 's/^/    /'
echo "    (every message: $demo/sink.log)"

say "kubectl runbook get $execution"
kubectl runbook get "$execution" -n "$ns"

say "kubectl runbook circuits"
kubectl runbook circuits -n "$ns"

say "The web view, as carol (kubectl runbook ui; the token in the URL guards it)"
(umask 077; : >"$demo/ui.log")  # it holds the URL with the token
PYTHONUNBUFFERED=1 kubectl runbook ui -n "$ns" --no-browser --kubeconfig "$carol" \
  >>"$demo/ui.log" 2>&1 </dev/null &
echo $! >"$demo/ui.pid"
for _ in $(seq 200); do grep -q '^http://' "$demo/ui.log" 2>/dev/null && break; sleep 0.05; done
echo "    $(grep -m1 '^http://' "$demo/ui.log" || echo "(not up: see $demo/ui.log)")#/execution/$ns/$execution"

say "Done in $(elapsed) (watch exit status $outcome). Look around, then: make demo-down"
echo "    export KUBECONFIG=$KUBECONFIG PATH=$venv_bin:\$PATH"
echo "    kubectl runbook list; kubectl runbook graph $execution; cat $demo/sink.log"
echo "    kubectl runbook run incident-diagnostics -p severity=SEV2 --watch"
