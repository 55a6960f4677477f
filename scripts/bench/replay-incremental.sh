#!/usr/bin/env bash
# Incremental batch runs against full replays, on a topic that grows: a
# topic and database of the run's own, a dashboard whose threshold is STEP
# new records (check every 0.5 s), and STEPS steps of (STEP more loadgen
# events; the automatic run the threshold starts, incremental from the
# second step on; then a full replay of the whole topic requested over
# HTTP). Time moves forward as it does for users: step i's events fall on
# the next DAYS days after step i-1's (the same 50,000 users and 5,000
# products), and SPREAD=all spreads every step over all STEPS x DAYS days
# instead (every run touches every day: the most merging an increment can
# need). Both runs are timed by their own records (started_at to
# finished_at, the dashboard's clock), the threshold's reaction time left
# out. Every run must read exactly what it covers: the step's records for
# the automatic one, the whole topic for the full one. With
# BENCH_RESULTS=<file>, the figures are appended to it as key=value.
#   scripts/bench/replay-incremental.sh [step=1000000] [steps=10]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

STEP=${1:-1000000}
STEPS=${2:-10}
DAYS=${DAYS:-6}
SPREAD=${SPREAD:-forward}
PORT=${BENCH_PORT:-8097}
DEADLINE=${BENCH_DEADLINE:-900}   # seconds any one run may take
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-grow loadgen dashboard
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC
AUTH="Authorization: Bearer bench"
BASE=http://127.0.0.1:$PORT

first_day=$(date -u -d "$((STEPS * DAYS + 1)) days ago" +%Y-%m-%d)
fill() {  # fill <step>
  local start days=$DAYS
  if [[ $SPREAD == all ]]; then
    start=$first_day days=$((STEPS * DAYS))
  else
    start=$(date -u -d "$first_day + $(((${1} - 1) * DAYS)) days" +%Y-%m-%d)
  fi
  "$ROOT/target/release/loadgen" --seed "$((100 + $1))" --events "$STEP" --users 50000 --products 5000 \
    --days "$days" --start "${start}T00:00:00Z" --kafka 2>>"$WORK/fill.log"
}

KAPPA__DATABASE__URL=$DB_URL KAPPA__DASHBOARD__ADDR=127.0.0.1:$PORT \
  KAPPA__DASHBOARD__SCHEDULE= KAPPA__DASHBOARD__THRESHOLD_BYTES=0 \
  KAPPA__DASHBOARD__THRESHOLD_EVENTS="$STEP" KAPPA__DASHBOARD__CHECK_INTERVAL_MS=500 \
  KAPPA__DASHBOARD__KEEP_RUNS=100 KAPPA__AUTH__ADMIN_TOKEN=bench KAPPA__LOG__LEVEL=warn \
  "$ROOT/target/release/dashboard" >>"$WORK/service.log" 2>&1 &
svc_pid=$!
SCRATCH_PIDS+=("$svc_pid")
wait_until 30 "the bench dashboard" curl -fsS "$BASE/readyz" || die "dashboard did not start"

# ended <id>: prints the run once it succeeded or failed (deadline DEADLINE s).
ended() {
  local run end=$((SECONDS + DEADLINE))
  until run=$(curl -fsS -H "$AUTH" "$BASE/api/replays/$1") && grep -qE '"state":"(succeeded|failed)"' <<<"$run"; do
    ((SECONDS < end)) || die "run $1 did not finish within ${DEADLINE}s"
    sleep 0.05
  done
  echo "$run"
}

# newest_threshold_run_after <id>: the id of the threshold's run queued after run <id>, once there is one.
threshold_run_after() {
  local id end=$((SECONDS + DEADLINE))
  until id=$(curl -fsS -H "$AUTH" "$BASE/api/replays" | python3 -c '
import json, sys
after = int(sys.argv[1])
ids = [r["id"] for r in json.load(sys.stdin)["runs"] if r["trigger"] == "threshold" and r["id"] > after]
print(min(ids) if ids else "")' "$1") && [[ -n $id ]]; do
    ((SECONDS < end)) || die "the threshold started no run within ${DEADLINE}s"
    sleep 0.2
  done
  echo "$id"
}

results=$WORK/grow.txt
: >"$results"
last=0
for ((i = 1; i <= STEPS; i++)); do
  fill "$i"
  total=$(topic_count)
  auto=$(ended "$(threshold_run_after "$last")")
  full_id=$(curl -fsS -X POST -H "$AUTH" -H 'content-type: application/json' -d '{"from":"earliest"}' \
    "$BASE/api/replays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  full=$(ended "$full_id")
  last=$full_id
  python3 -c '
import json, sys
total, auto, full = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({"total": total, "auto": auto, "full": full}))' "$total" "$auto" "$full" >>"$results"
  log "step $i of $STEPS: $total records; automatic run and full replay done"
done
rss=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")

python3 - "$results" "$STEP" "$rss" <<'PY'
import json, os, sys
from datetime import datetime
step, rss = int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(line) for line in open(sys.argv[1])]
def seconds(run):
    t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (t(run["finished_at"]) - t(run["started_at"])).total_seconds()
def read(run):
    return run["events"] + run["rejected"]
for i, row in enumerate(rows, 1):
    auto, full = row["auto"], row["full"]
    assert auto["state"] == "succeeded" and full["state"] == "succeeded", (auto, full)
    assert auto["kind"] == ("full" if i == 1 else "incremental"), auto
    assert read(auto) == auto["records"] and auto["records"] == step, f"step {i}: the automatic run read {read(auto)} of {auto['records']}, the step added {step}"
    assert read(full) == row["total"], f"step {i}: the full replay read {read(full)} of {row['total']}"
spread = os.environ.get("SPREAD", "forward")
days = int(os.environ.get("DAYS", "6"))
print(f"incremental runs vs full replays: a topic grown by {step:,} loadgen events a step to {rows[-1]['total']:,} "
      f"(50,000 users, 5,000 products; each step's events on "
      + (f"the {days} days after the last step's" if spread != "all" else f"all {days * len(rows)} days") + ")")
print("  timing: each run's started_at to finished_at (the dashboard's own records); the step's automatic run is")
print("  started by the record threshold, the full replay requested over HTTP after it")
print(f"  {'step':>4} {'topic':>12} {'automatic run':>28} {'full replay':>22} {'full/auto':>10}")
first = seconds(rows[0]["auto"])
incremental = [seconds(r["auto"]) for r in rows[1:]]
for i, row in enumerate(rows, 1):
    a, f = seconds(row["auto"]), seconds(row["full"])
    print(f"  {i:>4} {row['total']:>12,} {row['auto']['kind']:>11} {row['auto']['records']:>9,} {a:>6.2f} s "
          f"{row['full']['records']:>12,} {f:>7.2f} s {f / a:>9.1f}x")
worst = max(incremental) / first if incremental else 0
growth = seconds(rows[-1]["full"]) / seconds(rows[0]["full"])
print(f"  incremental runs: {min(incremental):.2f}-{max(incremental):.2f} s, at most {worst:.2f}x the first run's {first:.2f} s (goal <= 1.5x)")
print(f"  full replays grew {growth:.1f}x from step 1 to step {len(rows)}; dashboard peak RSS {rss / 1024:.0f} MiB")
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as out:
        out.write(f"grow_steps={len(rows)}\ngrow_step_events={step}\ngrow_first_s={first:.2f}\n"
                  f"grow_incremental_max_s={max(incremental):.2f}\ngrow_incremental_worst_ratio={worst:.2f}\n"
                  f"grow_full_first_s={seconds(rows[0]['full']):.2f}\ngrow_full_last_s={seconds(rows[-1]['full']):.2f}\n")
PY
