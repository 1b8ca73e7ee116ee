#!/usr/bin/env bash
# Runs the end-to-end tests whose outcome depends on the calendar again,
# under libfaketime, at the calendar's hard moments: the last and the first
# minute of a month, 28 and 29 February of a leap year, and New Year's Eve.
# Each test binary starts two seconds before midnight (or two after), so
# its tests start on one day and end on the next, or start in a month's
# first seconds.
#
#   scripts/hard-days.sh                          # every moment below
#   scripts/hard-days.sh 2028-02-29T23:59:58Z     # one moment (any `date -d` time)
#   AFORO_HARD_DAYS_TESTS="billing enrich" scripts/hard-days.sh
#
# The test process and every aforo process it starts are shifted by one
# offset (FAKETIME="+N" seconds, computed as each test binary starts), so
# they agree on the time and the clock goes on running. The monotonic clock
# (timers, timeouts) and file times are left alone. PostgreSQL keeps the
# real time: aforo passes every time it stores and never asks the database
# for now(). The tests date their data relative to the moment they start
# (cli/tests/common: `Months`), so they mean the same at any moment.
#
# It needs the services scripts/test.sh starts (their exports in the
# environment) and the faketime package (scripts/services.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/aforo/target}"

moments=("$@")
if [ ${#moments[@]} -eq 0 ]; then
  moments=(
    2027-04-30T23:59:58Z # the last minute of a 30-day month
    2027-05-01T00:00:02Z # the first minute of a month
    2028-02-28T23:59:58Z # 28 February of a leap year, into the 29th
    2028-02-29T23:59:58Z # the leap day, into 1 March
    2027-12-31T23:59:58Z # New Year's Eve, into 1 January
  )
fi
read -r -a tests <<<"${AFORO_HARD_DAYS_TESTS:-billing enrich catalog ingest}"

lib=$(dpkg -L libfaketime 2>/dev/null | grep '/libfaketime\.so\.1$' | head -n 1 || true)
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  echo "hard-days: libfaketime is not installed (scripts/services.sh installs the faketime package)" >&2
  exit 1
fi

# Build first, on the real clock, then run the binaries themselves: cargo
# must not see a shifted clock.
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
mapfile -t binaries < <(
  cargo test -p aforo --locked --no-run --message-format=json "${args[@]}" |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + " " + m["executable"])
'
)
if [ ${#binaries[@]} -ne ${#tests[@]} ]; then
  echo "hard-days: expected ${#tests[@]} test binaries, cargo built ${#binaries[@]}" >&2
  exit 1
fi

for moment in "${moments[@]}"; do
  target=$(date -u -d "$moment" +%s)
  for entry in "${binaries[@]}"; do
    name=${entry%% *}
    binary=${entry#* }
    offset=$((target - $(date -u +%s)))
    sign=+
    if [ "$offset" -lt 0 ]; then sign=-; offset=$((-offset)); fi
    export LD_PRELOAD="$lib" FAKETIME="$sign$offset" FAKETIME_DONT_FAKE_MONOTONIC=1 \
      FAKETIME_DONT_RESET=1 NO_FAKE_STAT=1
    # A run that silently kept the real clock would prove nothing.
    seen=$(date -u +%s)
    if [ $((seen - target)) -gt 60 ] || [ $((target - seen)) -gt 60 ]; then
      echo "hard-days: libfaketime did not shift the clock (wanted $target, got $seen)" >&2
      exit 1
    fi
    echo "== tests/$name.rs from $(date -u +%Y-%m-%dT%H:%M:%SZ) (libfaketime)"
    # As cargo test would run it: tests find the repository's files through
    # CARGO_MANIFEST_DIR.
    (cd cli && CARGO_MANIFEST_DIR="$PWD" "$binary")
    unset LD_PRELOAD FAKETIME FAKETIME_DONT_FAKE_MONOTONIC FAKETIME_DONT_RESET NO_FAKE_STAT
  done
done
