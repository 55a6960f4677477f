#!/usr/bin/env bash
# Memory per request at the gateway: peak resident memory (VmHWM) of a fresh
# gateway before and after one large POST /events, for a body of many small
# events (the worst case per byte) and one of fewer, larger events, each
# close to the body limit and the events-per-request limit. Writes to a
# scratch topic (the suite's `events` topic is not touched).
#   scripts/bench/ingest-memory.sh [events_small=100000] [events_large=100000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
source "$ROOT/scripts/bench/scratch.sh"

SMALL=${1:-100000}
LARGE=${2:-100000}
PORT=${BENCH_GATEWAY_PORT:-8098}
scratch bench-ingest-memory gateway

python3 - "$WORK" "$SMALL" "$LARGE" <<'PY'
import sys
work, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{work}/small.ndjson", "w") as f:
    for i in range(small):
        f.write('{"type":"interaction","user_id":"u%d","product_id":"p%d","action":"view","ts":"2026-11-20T00:00:00Z"}\n' % (i % 5000, i % 700))
pad = "x" * 520
with open(f"{work}/large.ndjson", "w") as f:
    for i in range(large):
        f.write('{"type":"product_uploaded","product_id":"p%d","metadata":{"title":"%s"},"assets":[]}\n' % (i, pad))
PY

TOKEN=bench-$RANDOM$RANDOM
measure() {  # measure <file>: one fresh gateway, one POST; prints a result line
  local file=$1 pid status before after
  KAPPA__AUTH__ADMIN_TOKEN=$TOKEN KAPPA__GATEWAY__ADDR=127.0.0.1:$PORT \
    KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL \
    "$ROOT/target/release/gateway" >"$WORK/gateway.log" 2>&1 &
  pid=$!
  SCRATCH_PIDS+=("$pid")
  wait_until 30 "gateway on :$PORT" curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" || die "gateway did not start"
  before=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  status=$(curl -sS -o "$WORK/answer.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H 'content-type: application/x-ndjson' --data-binary "@$file" "http://127.0.0.1:$PORT/events")
  [[ $status == 202 ]] || { head -c 300 "$WORK/answer.json" >&2; die "POST answered $status"; }
  after=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c 'import sys; name, size, events, before, after = sys.argv[1:]; size, before, after = int(size) / 2**20, int(before) / 1024, int(after) / 1024
print(f"{name:<14} {size:6.1f} MiB body {int(events):>8} events   peak RSS {before:5.0f} -> {after:5.0f} MiB   (+{(after - before) / size:.1f}x the body)")' \
    "$(basename "$file")" "$(stat -c %s "$file")" "$(wc -l <"$file")" "$before" "$after"
}

echo "gateway $(git -C "$ROOT" rev-parse --short HEAD), peak resident memory (VmHWM) around one POST /events"
measure "$WORK/small.ndjson"
measure "$WORK/large.ndjson"
