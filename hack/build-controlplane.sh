#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok) from the Go module proxy into a cache outside the
# repository, keyed by the pinned versions. A warm cache makes this a no-op.
#
#   hack/build-controlplane.sh          # build what is missing, print the bin dir
#
# Environment: RBO_CACHE_DIR (default ~/.cache/runbook-operator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache_root=${RBO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runbook-operator}
bin="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
mkdir -p "$bin"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
started=$(date +%s)

need() { for b in "$@"; do [ -x "$bin/$b" ] || return 0; done; return 1; }

if need kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  echo ">> building kubernetes $K8S_VERSION" >&2
  (cd "$here/harness/kubernetes" && go mod download &&
    go build -trimpath -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl)
fi

if need etcd; then
  echo ">> building etcd $ETCD_VERSION" >&2
  (cd "$here/harness/etcd" && go mod download &&
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
fi

if need kwok; then
  echo ">> building kwok $KWOK_VERSION" >&2
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # kwok's default stages ship in its module source; keep a copy beside the binary.
  src=$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage
  rm -rf "$bin/../kwok-stages" && cp -r "$src" "$bin/../kwok-stages" && chmod -R u+w "$bin/../kwok-stages"
fi

echo ">> control plane binaries in $bin ($(( $(date +%s) - started ))s)" >&2
echo "$bin"
