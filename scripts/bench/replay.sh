#!/usr/bin/env bash
# Replay benchmark of the dashboard, on a topic and database of its own:
# fill the topic with N loadgen events, time kcat reading it all to
# /dev/null and a full replay (from the run's own timings), report the
# dashboard's peak RSS; then double the data and replay again with a fresh
# process: peak memory should stay flat (it follows distinct users and
# products per day, not events).
#   scripts/bench/replay.sh [events=2000000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-2000000}
PORT=${BENCH_PORT:-8096}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-replay loadgen dashboard
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC

fill() {  # fill <events> <seed>
  "$ROOT/target/release/loadgen" --seed "$2" --events "$1" --users 50000 --products 5000 --days 60 \
    --start "$(date -u -d '61 days ago' +%Y-%m-%dT00:00:00Z)" --kafka 2>>"$WORK/fill.log"
}
now() { date +%s%N; }

# round <label>: kcat read + one replay by a fresh dashboard process; prints a result line.
round() {
  local total t0 t1 kcat_ns id run rss
  total=$(topic_count)
  t0=$(now); kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null; t1=$(now)
  kcat_ns=$((t1 - t0))
  KAPPA__DATABASE__URL=$DB_URL KAPPA__DASHBOARD__ADDR=127.0.0.1:$PORT \
    KAPPA__DASHBOARD__SCHEDULE= KAPPA__DASHBOARD__THRESHOLD_BYTES=0 KAPPA__AUTH__ADMIN_TOKEN=bench \
    KAPPA__LOG__LEVEL=warn "$ROOT/target/release/dashboard" >>"$WORK/service.log" 2>&1 &
  svc_pid=$!
  SCRATCH_PIDS+=("$svc_pid")
  wait_until 30 "the bench dashboard" curl -fsS "http://127.0.0.1:$PORT/readyz" || die "dashboard did not start"
  id=$(curl -fsS -X POST -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"from":"earliest"}' "http://127.0.0.1:$PORT/api/replays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  until run=$(curl -fsS "http://127.0.0.1:$PORT/api/replays/$id") && grep -qE '"state":"(succeeded|failed)"' <<<"$run"; do sleep 0.2; done
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")
  kill "$svc_pid"; wait "$svc_pid" 2>/dev/null || true
  python3 - "$1" "$total" "$kcat_ns" "$rss" "$run" <<'PY'
import datetime, json, sys
label, total, kcat_ns, rss, run = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
assert run["state"] == "succeeded", run
t = lambda k: datetime.datetime.fromisoformat(run[k].replace("Z", "+00:00"))
replay = (t("finished_at") - t("started_at")).total_seconds()
kcat = kcat_ns / 1e9
print(f"  {label}: {total:,} events  kcat -C {total / kcat:,.0f}/s ({kcat:.1f} s)  replay {total / replay:,.0f}/s ({replay:.1f} s)"
      f"  ratio {kcat / replay:.2f}x  dashboard peak RSS {rss / 1024:.0f} MiB")
PY
}

log "filling $TOPIC with $EVENTS loadgen events"
fill "$EVENTS" 21
first=$(round "N ")
log "doubling the data"
fill "$EVENTS" 22
second=$(round "2N")
echo "replay benchmark (loadgen: 50,000 users, 5,000 products, 60 days; broker, Postgres and dashboard on this machine)"
echo "$first"
echo "$second"
