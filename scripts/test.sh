#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the
# tests need (PostgreSQL 15, Redis and libfaketime from Debian's packages,
# grpcurl from its Go module, the webhook providers' signing libraries from
# PyPI and npm) and builds kube-apiserver, etcd and helm from their Go
# modules, then runs rustfmt, clippy and every test against both stores
# (SQLite and PostgreSQL) and a real Kubernetes control plane, and last the
# calendar's end-to-end tests again on its hard days (scripts/hard-days.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outside the repository so fresh clones reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aforo/target}"

eval "$(scripts/services.sh start)"
# kube-apiserver and etcd for the tests against a real control plane, built
# from their Go modules when missing (minutes, once per version). Assigned
# first, so that a failed build stops the script (eval of a failed command
# substitution would not).
controlplane=$(scripts/controlplane.sh)
eval "$controlplane"
# helm, for the chart's tests (helm lint, helm template), the same way.
helm=$(scripts/helm.sh)
eval "$helm"
eval "$(scripts/pyenv.sh)"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== aforo-core has no I/O dependencies"
io=$(cargo tree -p aforo-core -e normal --prefix none --locked | awk '{print $1}' |
  grep -Ex 'tokio|sqlx|axum|tonic|hyper|reqwest|deadpool-redis' | sort -u || true)
if [ -n "$io" ]; then
  echo "aforo-core must stay pure, but depends on: $io" >&2
  exit 1
fi
echo "== tests (SQLite and PostgreSQL)"
cargo test --workspace --locked
echo "== the calendar's end-to-end tests on its hard days (libfaketime)"
scripts/hard-days.sh
