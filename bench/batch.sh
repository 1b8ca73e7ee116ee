#!/usr/bin/env bash
# The batch-upload benchmark: a generated NDJSON file (outside the
# repository) uploaded over HTTP with `aforo batch upload` to a running
# `aforo ingest` on PostgreSQL; reports rows/s and the server's peak RSS
# (VmHWM from /proc). Called as `bench/run.sh batch [MEGABYTES]` (default 1024).
set -euo pipefail
export AFORO_LOG=${AFORO_LOG:-warn}
cd "$(dirname "$0")/.."
MEGABYTES=${1:-1024}
CACHE_DIR=${AFORO_CACHE_DIR:-$HOME/.cache/aforo}
BIN="$CARGO_TARGET_DIR/release/aforo"
WORK="$CACHE_DIR/bench-batch"
mkdir -p "$WORK"
FILE="$WORK/events-${MEGABYTES}MB.ndjson"

if [ ! -s "$FILE" ]; then
  echo "generating $FILE (${MEGABYTES} MB)" >&2
  python3 - "$FILE" "$MEGABYTES" <<'PY'
import datetime, json, sys
path, megabytes = sys.argv[1], int(sys.argv[2])
limit = megabytes * 1_000_000
now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10)
with open(path, "w") as f:
    written, n = 0, 0
    while written < limit:
        n += 1
        line = json.dumps({
            "id": f"bench-{n}", "source": "bench", "type": "api.call",
            "customer": f"cust-{n % 1000}", "time": now.isoformat(),
            "properties": {"route": "/v1/translate", "ms": n % 500, "tokens": n % 4096,
                           "region": "eu-west-1", "model": "m-large"},
        }) + "\n"
        f.write(line)
        written += len(line)
PY
fi
ROWS=$(wc -l <"$FILE")
BYTES=$(stat -c %s "$FILE")

ADMIN_URL=${AFORO_TEST_DATABASE_URL:?run through bench/run.sh, which starts PostgreSQL}
DB="aforo_bench_batch_$$"
psql "$ADMIN_URL" -qc "CREATE DATABASE $DB" >/dev/null
DB_URL="${ADMIN_URL%/*}/$DB"
cleanup() {
  [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BIN" tenants create bench --database-url "$DB_URL" >/dev/null
KEY=$("$BIN" keys create --tenant bench --database-url "$DB_URL" 2>/dev/null)
"$BIN" ingest --database-url "$DB_URL" --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
  >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER=$!
for _ in $(seq 300); do grep -q " ready: " "$WORK/server.out" && break; sleep 0.1; done
HTTP=$(grep -o 'http=[^ ]*' "$WORK/server.out" | cut -d= -f2)
[ -n "$HTTP" ] || { cat "$WORK/server.err" >&2; exit 1; }
RSS_IDLE=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")

START=$(date +%s.%N)
"$BIN" batch upload "$FILE" --api-key "$KEY" --http "$HTTP" >"$WORK/upload.out" 2>"$WORK/upload.err"
END=$(date +%s.%N)
PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")
cat "$WORK/upload.out"

python3 - "$START" "$END" "$ROWS" "$BYTES" "$PEAK" "$RSS_IDLE" <<'PY'
import sys
start, end, rows, size, peak, idle = map(float, sys.argv[1:])
secs = end - start
print(f"batch upload: {int(rows)} rows, {size/1e6:.0f} MB NDJSON in {secs:.1f} s")
print(f"  {rows/secs:,.0f} rows/s, {size/1e6/secs:.1f} MB/s")
print(f"  aforo ingest RSS: {idle/1024:.0f} MiB idle, peak {peak/1024:.0f} MiB (VmHWM)")
PY
