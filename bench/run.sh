#!/usr/bin/env bash
# One command per benchmark, each building in release mode first.
#
#   bench/run.sh [--events N] [--streams N] [--batch N] [--paced-rate N] ...
#       durable ingest against raw COPY and naive INSERT, side by side on the
#       same rows (starts PostgreSQL with scripts/services.sh)
#   bench/run.sh standalone [--events N]
#       the same load against aforo standalone on its embedded SQLite store:
#       ingest alone, the in-process enricher draining the backlog, both at once
#   bench/run.sh pricing
#       marginal-revenue computations per second per core
#   bench/run.sh billrun [--subscriptions N] [--events M]
#       a bill run over N subscriptions × 5 meters and M events (default
#       10,000 and 10,000,000) beside one GROUP BY over the same events
#   bench/run.sh mcp [--calls N]
#       latency aforo mcp-proxy adds to a tools/call, per transport (stdio,
#       Streamable HTTP, legacy SSE), against the same MCP Python SDK server
#       called directly
#   bench/run.sh batch [MEGABYTES]
#       a streamed NDJSON batch upload (default 1024 MB, generated outside the
#       repository) to a running aforo ingest: rows/s and peak RSS
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aforo/target}"
if [ "${1:-}" = billrun ]; then
  shift
  eval "$(scripts/services.sh start)"
  cargo build --release --locked -p aforo-bench --bin billrun
  exec "$CARGO_TARGET_DIR/release/billrun" "$@"
fi
if [ "${1:-}" = mcp ]; then
  shift
  eval "$(scripts/pyenv.sh)"
  cargo build --release --locked -p aforo -p aforo-bench --bin aforo --bin mcp
  exec "$CARGO_TARGET_DIR/release/mcp" --aforo "$CARGO_TARGET_DIR/release/aforo" "$@"
fi
if [ "${1:-}" = standalone ]; then
  shift
  cargo build --release --locked -p aforo -p aforo-bench
  exec "$CARGO_TARGET_DIR/release/aforo-bench" --standalone "$@"
fi
if [ "${1:-}" = pricing ]; then
  cargo build --release --locked -p aforo-bench --bin pricing
  exec "$CARGO_TARGET_DIR/release/pricing"
fi
eval "$(scripts/services.sh start)"
if [ "${1:-}" = batch ]; then
  cargo build --release --locked -p aforo
  exec bench/batch.sh "${@:2}"
fi
cargo build --release --locked -p aforo -p aforo-bench
exec "$CARGO_TARGET_DIR/release/aforo-bench" --database-url "$AFORO_TEST_DATABASE_URL" "$@"
