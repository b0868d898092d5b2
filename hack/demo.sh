#!/usr/bin/env bash
# The demo: a local control plane, the CRDs, the operator, the example runbooks,
# and one execution run to completion.
#
#   hack/demo.sh up     # leaves the cluster and the operator running
#   hack/demo.sh down   # stops the operator and the cluster
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
state=${RBO_CLUSTER_DIR:-$PWD/.cluster}
pidfile="$state/operator.pid"

case "${1:-up}" in
down)
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill "$(cat "$pidfile")" && rm -f "$pidfile"
  fi
  "$PYTHON" hack/cluster.py down
  exit 0 ;;
up) ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

"$PYTHON" hack/cluster.py up >/dev/null
eval "$("$PYTHON" hack/cluster.py env)"
echo ">> cluster up: export KUBECONFIG=$KUBECONFIG"

kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null

if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  "$PYTHON" -m runbook_operator.cli.operator run --kubeconfig "$KUBECONFIG" \
    --health-port 18080 >"$state/logs/operator.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    curl -sf http://127.0.0.1:18080/healthz >/dev/null && break
    sleep 0.2
  done
fi
echo ">> operator running (pid $(cat "$pidfile"), log $state/logs/operator.log)"

kubectl get serviceaccount runbook-runner >/dev/null 2>&1 ||
  kubectl create serviceaccount runbook-runner >/dev/null
for f in examples/*.yaml; do
  case "$f" in */execution-*) ;; *) kubectl apply -f "$f" >/dev/null ;; esac
done
kubectl wait --for=condition=Ready --timeout=60s runbook --all >/dev/null
kubectl get runbooks,circuitpolicies

# An execution has a generated name: create it, then watch it to the end.
execution=$(kubectl create -f examples/execution-system-health-check.yaml -o name)
echo ">> created $execution"
kubectl wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s "$execution" >/dev/null
kubectl get "$execution"
echo ">> done. Try: kubectl get $execution -o yaml; kubectl get jobs; make demo-down"
