#!/usr/bin/env bash
# Builds the Kubernetes control plane the operator's tests run against:
# kube-apiserver and etcd, from their Go modules, at the versions pinned in
# tests/controlplane/go.mod. The binaries land in a cache outside the
# repository, keyed by version, and are built only when missing (a build
# takes minutes; deleting the cache only costs time). Prints the directory as
# a shell export; logs go to stderr.
#
#   eval "$(scripts/controlplane.sh)"    # sets AFORO_CONTROLPLANE_BIN
#
# The cache root is $AFORO_CACHE_DIR (default ~/.cache/aforo); the binaries
# go to $AFORO_CACHE_DIR/controlplane/<k8s-version>-etcd-<etcd-version>/.
set -euo pipefail
cd "$(dirname "$0")/.."

MODULE=tests/controlplane
CACHE_DIR=${AFORO_CACHE_DIR:-$HOME/.cache/aforo}

log() { echo "controlplane: $*" >&2; }

# The version a module is required at in go.mod (read without Go, so that a
# warm cache needs no Go toolchain).
required_version() {
  awk -v module="$1" '$1 == module && $2 ~ /^v/ { print $2 } $1 == "require" && $2 == module { print $3 }' \
    "$MODULE/go.mod" | head -n 1
}

K8S_VERSION=$(required_version k8s.io/kubernetes)
ETCD_VERSION=$(required_version go.etcd.io/etcd/server/v3)
if [ -z "$K8S_VERSION" ] || [ -z "$ETCD_VERSION" ]; then
  log "cannot read the k8s.io/kubernetes and go.etcd.io/etcd/server/v3 versions from $MODULE/go.mod"
  exit 1
fi
OUT="$CACHE_DIR/controlplane/$K8S_VERSION-etcd-$ETCD_VERSION"

build() {
  if ! command -v go >/dev/null; then
    log "building kube-apiserver and etcd needs go on PATH (the version named in $MODULE/go.mod or newer)"
    exit 1
  fi
  local minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local tmp
  tmp=$(mktemp -d "$CACHE_DIR/controlplane/.build.XXXXXX")
  chmod 755 "$tmp"
  # A failed or interrupted build leaves nothing behind in the cache.
  trap 'rm -rf "$tmp"' EXIT
  log "building kube-apiserver $K8S_VERSION and etcd $ETCD_VERSION from their Go modules (several minutes the first time)"
  (
    cd "$MODULE"
    export CGO_ENABLED=0
    go build -mod=readonly -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    go build -mod=readonly -trimpath -ldflags "-s -w" \
      -o "$tmp/etcd" go.etcd.io/etcd/server/v3
  ) >&2
  rm -rf "$OUT"
  mv -T "$tmp" "$OUT"
  trap - EXIT
  log "built into $OUT"
}

mkdir -p "$CACHE_DIR/controlplane"
# One build at a time: a second caller waits, then finds the binaries.
exec 9>"$CACHE_DIR/controlplane/.lock"
flock 9
if [ ! -x "$OUT/kube-apiserver" ] || [ ! -x "$OUT/etcd" ]; then
  build
fi
echo "export AFORO_CONTROLPLANE_BIN=$OUT"
