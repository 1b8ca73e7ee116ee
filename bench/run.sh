#!/usr/bin/env bash
# One command for the ingest benchmark: starts PostgreSQL (scripts/services.sh),
# builds aforo and the load generator in release mode, and runs durable
# ingest, raw COPY and naive INSERT side by side on the same rows.
#
#   bench/run.sh [--events N] [--streams N] [--batch N] [--paced-rate N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aforo/target}"
eval "$(scripts/services.sh start)"
cargo build --release --locked -p aforo -p aforo-bench
exec "$CARGO_TARGET_DIR/release/aforo-bench" --database-url "$AFORO_TEST_DATABASE_URL" "$@"
