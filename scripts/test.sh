#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts what the
# tests need (PostgreSQL 15 and Redis from Debian's packages, grpcurl from
# its Go module, the webhook providers' signing libraries from PyPI and npm),
# then runs rustfmt, clippy and every test against both
# stores (SQLite and PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

# Build outside the repository so fresh clones reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aforo/target}"

eval "$(scripts/services.sh start)"
eval "$(scripts/pyenv.sh)"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== tests (SQLite and PostgreSQL)"
cargo test --workspace --locked
