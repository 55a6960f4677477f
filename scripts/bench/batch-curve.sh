#!/usr/bin/env bash
# The recommendation service's batches against throughput, WAL and latency:
# scripts/bench/streaming.sh once per (`max_batch_ms`, `max_batch_events`)
# pair (catch-up from scratch, then event -> visible at RATE events/s), one
# row each. The defaults in config/default.toml were chosen from this curve:
# the window bounds latency under a steady load, the size is how much of a
# backlog one commit takes (each row it touches written once per batch).
#   scripts/bench/batch-curve.sh [events=1000000] [seconds=30]
# Env: WINDOWS (default "2"), SIZES (default "5000 20000 50000 100000"), RATE (5000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-1000000}
SECONDS_AT_RATE=${2:-30}
RATE=${RATE:-5000}
WORK="$RUN_DIR/bench-curve"
mkdir -p "$WORK"
rows=""
for ms in ${WINDOWS:-2}; do
  for size in ${SIZES:-5000 20000 50000 100000}; do
    log "---- max_batch_ms=$ms max_batch_events=$size"
    rm -f "$WORK/$ms-$size.env"
    KAPPA__RECOMMENDATION__MAX_BATCH_MS=$ms KAPPA__RECOMMENDATION__MAX_BATCH_EVENTS=$size \
      BENCH_RESULTS="$WORK/$ms-$size.env" RATES=$RATE PEER=0 \
      "$ROOT/scripts/bench/streaming.sh" "$EVENTS" "$SECONDS_AT_RATE" >"$WORK/$ms-$size.txt"
    rows+="$ms $size $(tr '\n' ' ' <"$WORK/$ms-$size.env")"$'\n'
  done
done
python3 - "$RATE" "$EVENTS" "$rows" <<'PY'
import sys
rate, events = sys.argv[1], int(sys.argv[2])
print(f"recommendation batches: catch-up of {events:,} events from scratch, then event -> visible at {rate}/s")
print(f"  {'max_batch_ms':>12}  {'max_batch_events':>16}  {'catch-up events/s':>17}  {'WAL B/event':>11}  {'peak RSS MiB':>12}  {'p50 ms':>7}  {'p99 ms':>7}")
for line in sys.argv[3].strip().splitlines():
    ms, size, *pairs = line.split()
    r = dict(p.split("=", 1) for p in pairs)
    print(f"  {ms:>12}  {int(size):>16,}  {int(r['recommendation_eps']):>17,}  {int(r['wal_bytes_per_event']):>11,}"
          f"  {int(r['recommendation_peak_mib']):>12,}  {float(r[f'latency_p50_ms_{rate}']):>7.1f}  {float(r[f'latency_p99_ms_{rate}']):>7.1f}")
PY
