#!/usr/bin/env bash
# Builds promtool (Prometheus' rule checker and rule unit-test runner) from the Go
# module proxy into a cache outside the repository, keyed by the pinned version.
# A warm cache makes this a no-op. The last line printed is the binary's path.
#
#   hack/build-promtool.sh                       # build if missing, print the path
#   "$(hack/build-promtool.sh)" test rules deploy/monitoring/rules.test.yaml
#
# Environment: RBO_CACHE_DIR (default ~/.cache/runbook-operator),
# PROMTOOL_VERSION (a github.com/prometheus/prometheus module version; v0.316.0 is
# Prometheus 3.16.0).
set -euo pipefail

version=${PROMTOOL_VERSION:-v0.316.0}
cache_root=${RBO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runbook-operator}
bin="$cache_root/promtool-$version/bin"

if [ ! -x "$bin/promtool" ]; then
  mkdir -p "$bin"
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
  started=$(date +%s)
  # Prometheus module v0.MMM.P is release 3.MMM-300.P: stamp it so `promtool --version`
  # tells the truth.
  release=${version#v0.}; minor=${release%%.*}; patch=${release#*.}
  ldflags="-s -w -X github.com/prometheus/common/version.Version=3.$((minor - 300)).$patch"
  echo ">> building promtool $version (several minutes on a cold Go cache)" >&2
  # Build into a scratch dir and move in place, so an interrupted build leaves no
  # half-written binary that the next run would take for a cached one.
  tmp=$(mktemp -d "$bin/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" \
    "github.com/prometheus/prometheus/cmd/promtool@$version"
  mv -f "$tmp/promtool" "$bin/promtool"
  echo ">> promtool $version built in $(( $(date +%s) - started ))s" >&2
fi

echo "$bin/promtool"
