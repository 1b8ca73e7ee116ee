#!/usr/bin/env bash
# Builds helm, which the chart's tests run (helm lint, helm template), from
# its Go module into a cache outside the repository, keyed by version, when
# missing; prints its path as a shell export. Logs go to stderr.
#
#   eval "$(scripts/helm.sh)"    # sets AFORO_HELM
#
# The cache root is $AFORO_CACHE_DIR (default ~/.cache/aforo); deleting it
# only costs time (a first build takes a few minutes).
set -euo pipefail

HELM_VERSION=v3.22.0
CACHE_DIR=${AFORO_CACHE_DIR:-$HOME/.cache/aforo}
BIN="$CACHE_DIR/bin/helm-$HELM_VERSION"

log() { echo "helm: $*" >&2; }

mkdir -p "$CACHE_DIR/bin"
# One build at a time: a second caller waits, then finds the binary.
exec 9>"$CACHE_DIR/bin/.helm.lock"
flock 9
if [ ! -x "$BIN" ]; then
  if ! command -v go >/dev/null; then
    log "building helm $HELM_VERSION needs go on PATH"
    exit 1
  fi
  log "building helm $HELM_VERSION from its Go module (a few minutes the first time)"
  tmp=$(mktemp -d "$CACHE_DIR/bin/.helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv "$tmp/helm" "$BIN"
  log "built $BIN"
fi
echo "export AFORO_HELM=$BIN"
