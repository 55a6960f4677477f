#!/usr/bin/env bash
# The recommendation service's batch window against throughput and latency:
# scripts/bench/streaming.sh once per `max_batch_ms` value (catch-up from
# scratch, then event -> visible at RATE events/s), one row each. The
# default in config/default.toml was chosen from this curve.
#   scripts/bench/batch-curve.sh [events=200000] [seconds=30]
# Env: WINDOWS (default "50 25 10 5 2"), RATE (5000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-200000}
SECONDS_AT_RATE=${2:-30}
RATE=${RATE:-5000}
WORK="$RUN_DIR/bench-curve"
mkdir -p "$WORK"
rows=""
for ms in ${WINDOWS:-50 25 10 5 2}; do
  log "---- max_batch_ms=$ms"
  rm -f "$WORK/$ms.env"
  KAPPA__RECOMMENDATION__MAX_BATCH_MS=$ms BENCH_RESULTS="$WORK/$ms.env" RATES=$RATE PEER=0 \
    "$ROOT/scripts/bench/streaming.sh" "$EVENTS" "$SECONDS_AT_RATE" >"$WORK/$ms.txt"
  rows+="$ms $(tr '\n' ' ' <"$WORK/$ms.env")"$'\n'
done
python3 - "$RATE" "$EVENTS" "$rows" <<'PY'
import sys
rate, events = sys.argv[1], int(sys.argv[2])
print(f"recommendation batch window: catch-up of {events:,} events from scratch, then event -> visible at {rate}/s")
print(f"  {'max_batch_ms':>12}  {'catch-up events/s':>17}  {'p50 ms':>7}  {'p99 ms':>7}")
for line in sys.argv[3].strip().splitlines():
    ms, *pairs = line.split()
    r = dict(p.split("=", 1) for p in pairs)
    print(f"  {ms:>12}  {int(r['recommendation_eps']):>17,}  {float(r[f'latency_p50_ms_{rate}']):>7.1f}  {float(r[f'latency_p99_ms_{rate}']):>7.1f}")
PY
