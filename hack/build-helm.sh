#!/usr/bin/env bash
# Builds helm from the Go module proxy into the cache (for `helm lint` and
# `helm template` in tests); prints the binary's path on its last line.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.22.0}
cache_root=${RBO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runbook-operator}
bin="$cache_root/helm-$HELM_VERSION/bin"
if [ ! -x "$bin/helm" ]; then
  mkdir -p "$bin"
  echo ">> building helm $HELM_VERSION" >&2
  CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local GOBIN="$bin" \
    go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
echo "$bin/helm"
