#!/usr/bin/env bash
# Builds the real Prometheus server, Alertmanager and amtool from the Go module
# proxy into a cache outside the repository, keyed by the pinned versions, so the
# alerting tests (deploy/alerting/, the Alertmanager webhook receiver) run against
# the upstream programs and not a fake. A warm cache makes this a no-op. The last
# line printed is the directory holding the three binaries.
#
#   hack/build-alerting.sh                      # build what is missing, print the dir
#   "$(hack/build-alerting.sh | tail -1)/amtool" check-config deploy/alerting/alertmanager.yaml
#   hack/build-alerting.sh --cached             # print the dir only if already built, else exit 1
#
# Environment: RBO_CACHE_DIR (default ~/.cache/runbook-operator),
# PROMETHEUS_VERSION (a github.com/prometheus/prometheus module version; defaults to
# PROMTOOL_VERSION, then v0.316.0, i.e. Prometheus 3.16.0, the same as promtool),
# ALERTMANAGER_VERSION (v0.31.1: the last release with its UI embedded in the Go
# sources; later ones need the UI assets built first).
set -euo pipefail

PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-${PROMTOOL_VERSION:-v0.316.0}}
ALERTMANAGER_VERSION=${ALERTMANAGER_VERSION:-v0.31.1}

cache_root=${RBO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/runbook-operator}
bin="$cache_root/alerting-prometheus-$PROMETHEUS_VERSION-alertmanager-$ALERTMANAGER_VERSION/bin"

if [ "${1:-}" = --cached ]; then   # never build (hack/demo.sh: Alertmanager only if cached)
  [ -x "$bin/prometheus" ] && [ -x "$bin/alertmanager" ] && [ -x "$bin/amtool" ] || exit 1
  echo "$bin"
  exit 0
fi

if [ ! -x "$bin/prometheus" ] || [ ! -x "$bin/alertmanager" ] || [ ! -x "$bin/amtool" ]; then
  mkdir -p "$bin"
  export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
  # Build into a scratch dir and move in place, so an interrupted build leaves no
  # half-written binary that the next run would take for a cached one.
  tmp=$(mktemp -d "$bin/.build.XXXXXX")
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
  started=$(date +%s)

  if [ ! -x "$bin/prometheus" ]; then
    # Module v0.MMM.P is release 3.(MMM-300).P: stamp it so `--version` tells the truth.
    release=${PROMETHEUS_VERSION#v0.}; minor=${release%%.*}; patch=${release#*.}
    ldflags="-s -w -X github.com/prometheus/common/version.Version=3.$((minor - 300)).$patch"
    echo ">> building prometheus $PROMETHEUS_VERSION (several minutes on a cold Go cache)" >&2
    # Built from a writable copy of the module's source, as its own Makefile does
    # (the module cache is read-only and -mod=mod may touch go.sum), with the
    # module's go.mod as the main module. remove_all_sd leaves only the file
    # and http service discoveries (static configs always work): a far smaller
    # build. Without the builtinassets tag the web UI pages error; the API, scraping,
    # rule evaluation and alert sending do not need them.
    src=$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_VERSION" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$src" ] || { echo "go mod download gave no source dir for prometheus" >&2; exit 1; }
    cp -R "$src" "$tmp/prometheus-src"
    chmod -R u+w "$tmp/prometheus-src"
    (cd "$tmp/prometheus-src" &&
      GOWORK=off go build -trimpath -tags remove_all_sd -ldflags "$ldflags" -o "$tmp/prometheus" ./cmd/prometheus)
    mv -f "$tmp/prometheus" "$bin/prometheus"
  fi

  if [ ! -x "$bin/alertmanager" ] || [ ! -x "$bin/amtool" ]; then
    ldflags="-s -w -X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}"
    echo ">> building alertmanager and amtool $ALERTMANAGER_VERSION" >&2
    GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" \
      "github.com/prometheus/alertmanager/cmd/alertmanager@$ALERTMANAGER_VERSION" \
      "github.com/prometheus/alertmanager/cmd/amtool@$ALERTMANAGER_VERSION"
    mv -f "$tmp/alertmanager" "$bin/alertmanager"
    mv -f "$tmp/amtool" "$bin/amtool"
  fi
  echo ">> alerting binaries built in $(( $(date +%s) - started ))s" >&2
fi

echo "$bin"
