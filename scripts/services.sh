#!/usr/bin/env bash
# Installs (from Debian's packages) and starts the services aforo's tests and
# benchmarks need, on loopback, and prints their URLs as shell exports.
#
#   eval "$(scripts/services.sh)"      # PostgreSQL 15, Redis, grpcurl, faketime
#   scripts/services.sh stop
#
# Starting also drops test databases older than an hour.
#
# State lives outside the repository: PostgreSQL's cluster under
# $AFORO_PG_DIR (default /var/tmp/aforo/pg15), tools under
# $AFORO_CACHE_DIR (default ~/.cache/aforo). Deleting either only costs time.
set -euo pipefail

PG_PORT=${AFORO_PG_PORT:-55432}
REDIS_PORT=${AFORO_REDIS_PORT:-56379}
PG_DIR=${AFORO_PG_DIR:-/var/tmp/aforo/pg15}
CACHE_DIR=${AFORO_CACHE_DIR:-$HOME/.cache/aforo}
PG_BIN=/usr/lib/postgresql/15/bin
GRPCURL_VERSION=v1.9.3

log() { echo "services: $*" >&2; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

apt_install() {
  log "installing $* from Debian's packages"
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

ensure_packages() {
  local missing=()
  [ -x "$PG_BIN/postgres" ] || missing+=(postgresql-15 postgresql-client-15)
  command -v redis-server >/dev/null || missing+=(redis-server)
  # libfaketime, for the end-to-end tests on the calendar's hard days
  # (scripts/hard-days.sh).
  command -v faketime >/dev/null || missing+=(faketime)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  # The Debian package starts its own cluster and server on the default
  # ports; ours run beside them on their own ports, so leave those be.
}

start_postgres() {
  if [ ! -s "$PG_DIR/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $PG_DIR"
    mkdir -p "$PG_DIR"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$(dirname "$PG_DIR")"; fi
    as_pg "$PG_BIN/initdb" -D "$PG_DIR" -U postgres -A trust -E UTF8 --no-instructions >&2
  fi
  if as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
    return
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$PG_DIR \
        -c max_connections=300 -c shared_buffers=512MB -c max_wal_size=4GB" >&2
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    return
  fi
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$CACHE_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes \
    --save '' --appendonly no --dir "$CACHE_DIR/redis" \
    --pidfile "$CACHE_DIR/redis/redis.pid" --logfile "$CACHE_DIR/redis/redis.log" >&2
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "Redis did not answer; see $CACHE_DIR/redis/redis.log"
  exit 1
}

# grpcurl, a real gRPC client, built from its Go module.
ensure_grpcurl() {
  local bin="$CACHE_DIR/bin/grpcurl-$GRPCURL_VERSION"
  if [ ! -x "$bin" ]; then
    log "building grpcurl $GRPCURL_VERSION from its Go module"
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION" >&2
    mkdir -p "$CACHE_DIR/bin"
    mv "$tmp/grpcurl" "$bin"
    rm -rf "$tmp"
  fi
  echo "$bin"
}

stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR" -m fast stop >&2 || true
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >&2 || true
}

# Tests create a database each (aforo_test_…, aforo_e2e_…, aforo_billbench_…,
# named by a UUIDv7 whose first 48 bits are its creation time in ms); drop
# those older than an hour, so a machine that runs the suite often does not
# fill its disk. Younger ones may belong to a run in progress.
prune_databases() {
  local now_ms cutoff db hex
  now_ms=$(($(date +%s) * 1000))
  cutoff=$((now_ms - 3600 * 1000))
  for db in $(as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
      "SELECT datname FROM pg_database WHERE datname ~ '^aforo_(test|e2e|billbench)_[0-9a-f]{32}$'"); do
    hex=${db##*_}
    if [ $((16#${hex:0:12})) -lt "$cutoff" ]; then
      as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc \
        "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || log "could not drop $db"
    fi
  done
}

case "${1:-start}" in
  start)
    ensure_packages
    start_postgres
    prune_databases
    start_redis
    grpcurl=$(ensure_grpcurl)
    echo "export AFORO_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    echo "export AFORO_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    echo "export AFORO_GRPCURL=$grpcurl"
    ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
