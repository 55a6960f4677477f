#!/usr/bin/env bash
# Replay benchmark of the dashboard, on a topic and database of its own:
# fill the topic with N loadgen events, then ROUNDS rounds of (kcat reading
# the whole topic to /dev/null; a full replay requested over HTTP from a
# dashboard that is already running). Both sides are timed the same way:
# wall clock from the command (kcat's start, the POST) to the result
# (kcat's exit, the run seen `succeeded`), process start-up of the long-running
# service excluded as it would be for a user. Medians of the rounds and their
# ratio are printed, with the dashboard's peak RSS. Every run must read
# exactly the topic's records (events + rejected). Then the data is doubled
# and one more replay shows how peak memory grows (it follows distinct users
# and products per day, not events; DOUBLE=0 skips it). Resident memory is
# read again IDLE_SECONDS (10) after the last run: what the idle service keeps.
# Then a cold round after COLD_SECONDS (60) of quiet: a replay, then kcat.
# With BENCH_RESULTS=<file>, the figures are also appended to it as key=value.
#   scripts/bench/replay.sh [events=2000000] [rounds=3]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-2000000}
ROUNDS=${2:-3}
PORT=${BENCH_PORT:-8096}
DEADLINE=${BENCH_DEADLINE:-900}   # seconds any one replay may take
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-replay loadgen dashboard
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC

fill() {  # fill <events> <seed>
  "$ROOT/target/release/loadgen" --seed "$2" --events "$1" --users 50000 --products 5000 --days 60 \
    --start "$(date -u -d '61 days ago' +%Y-%m-%dT00:00:00Z)" --kafka 2>>"$WORK/fill.log"
}
now() { date +%s%N; }

start_dashboard() {
  KAPPA__DATABASE__URL=$DB_URL KAPPA__DASHBOARD__ADDR=127.0.0.1:$PORT \
    KAPPA__DASHBOARD__SCHEDULE= KAPPA__DASHBOARD__THRESHOLD_BYTES=0 KAPPA__AUTH__ADMIN_TOKEN=bench \
    KAPPA__LOG__LEVEL=warn "$ROOT/target/release/dashboard" >>"$WORK/service.log" 2>&1 &
  svc_pid=$!
  SCRATCH_PIDS+=("$svc_pid")
  wait_until 30 "the bench dashboard" curl -fsS "http://127.0.0.1:$PORT/readyz" || die "dashboard did not start"
}
stop_dashboard() { kill "$svc_pid"; wait "$svc_pid" 2>/dev/null || true; }

# replay -> prints "<wall ns> <run json>" once the run finished (deadline: DEADLINE s).
replay() {
  local t0 id run end
  t0=$(now)
  id=$(curl -fsS -X POST -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"from":"earliest"}' "http://127.0.0.1:$PORT/api/replays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  end=$((SECONDS + DEADLINE))
  until run=$(curl -fsS "http://127.0.0.1:$PORT/api/replays/$id") && grep -qE '"state":"(succeeded|failed)"' <<<"$run"; do
    ((SECONDS < end)) || die "replay $id did not finish within ${DEADLINE}s"
    sleep 0.05
  done
  echo "$(($(now) - t0)) $run"
}

kcat_read() {  # -> wall ns
  local t0; t0=$(now)
  kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null
  echo $(($(now) - t0))
}

log "filling $TOPIC with $EVENTS loadgen events"
fill "$EVENTS" 21
total=$(topic_count)
start_dashboard
results="$WORK/rounds.txt"
: >"$results"
for ((r = 1; r <= ROUNDS; r++)); do
  log "round $r of $ROUNDS: kcat, then a replay"
  k=$(kcat_read)
  read -r ns run < <(replay)
  echo "$k $ns $run" >>"$results"
done
rss=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")
# What the idle service keeps once the runs are over (and the audit after
# the last one has finished): resident memory IDLE_SECONDS after the run.
sleep "${IDLE_SECONDS:-10}"
idle=$(awk '/VmRSS/ {print $2}' "/proc/$svc_pid/status")
# The cold case: one more round after COLD_SECONDS (60) of quiet in all, the
# way a scheduled replay meets the service (memory handed back, threads
# parked, pages of the topic maybe evicted): kcat reads after the same quiet.
sleep $((${COLD_SECONDS:-60} - ${IDLE_SECONDS:-10} > 0 ? ${COLD_SECONDS:-60} - ${IDLE_SECONDS:-10} : 0))
log "cold round, after ${COLD_SECONDS:-60} s of quiet: a replay, then kcat"
read -r cold_ns cold_run < <(replay)
cold_k=$(kcat_read)
echo "$cold_k $cold_ns $cold_run" >"$WORK/cold.txt"
stop_dashboard

if [[ ${DOUBLE:-1} == 1 ]]; then
  log "doubling the data"
  fill "$EVENTS" 22
  total2=$(topic_count)
  start_dashboard
  read -r ns2 run2 < <(replay)
  rss2=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")
  stop_dashboard
else
  total2=0 ns2=0 rss2=0 run2=null
fi

python3 - "$total" "$rss" "$results" "$total2" "$ns2" "$rss2" "$run2" "$idle" "$WORK/cold.txt" <<'PY'
import json, os, statistics, sys
total, rss, path, total2, ns2, rss2, run2 = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), json.loads(sys.argv[7])
idle = int(sys.argv[8])
def checked(run, records):
    assert run["state"] == "succeeded", run
    read = run["events"] + run["rejected"]
    assert read == records, f"run {run['id']} read {read} records, the topic holds {records}"
rounds = []
for line in open(path):
    k, r, run = line.split(" ", 2)
    run = json.loads(run)
    checked(run, total)
    rounds.append((int(k) / 1e9, int(r) / 1e9))
if run2 is not None:
    checked(run2, total2)
cold_k, cold_r, cold_run = open(sys.argv[9]).read().split(" ", 2)
checked(json.loads(cold_run), total)
cold_k, cold_r = int(cold_k) / 1e9, int(cold_r) / 1e9
kcat = statistics.median(k for k, _ in rounds)
replay = statistics.median(r for _, r in rounds)
print(f"replay benchmark: {total:,} loadgen events (50,000 users, 5,000 products, 60 days); broker, Postgres and dashboard on this machine")
print(f"  timing: wall clock from the command to the result, both sides; median of {len(rounds)} rounds")
for i, (k, r) in enumerate(rounds, 1):
    print(f"    round {i}: kcat -C {k:.2f} s, replay {r:.2f} s")
print(f"  kcat -C to /dev/null   {total / kcat:>10,.0f} events/s ({kcat:.2f} s)")
print(f"  full replay            {total / replay:>10,.0f} events/s ({replay:.2f} s)")
print(f"  ratio replay/kcat      {kcat / replay:>10.2f}x")
print(f"  cold, after {os.environ.get('COLD_SECONDS', '60')} s of quiet: replay {cold_r:.2f} s, kcat -C {cold_k:.2f} s: ratio {cold_k / cold_r:.2f}x")
print(f"  every run read all {total:,} records (events + rejected); dashboard peak RSS {rss / 1024:.0f} MiB, idle after the runs {idle / 1024:.0f} MiB")
if run2 is not None:
    print(f"  doubled to {total2:,} events: replay {total2 / (ns2 / 1e9):,.0f} events/s, peak RSS {rss2 / 1024:.0f} MiB")
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as out:
        out.write(f"replay_events={total}\nreplay_kcat_eps={total / kcat:.0f}\nreplay_eps={total / replay:.0f}\n"
                  f"replay_ratio={kcat / replay:.2f}\nreplay_cold_ratio={cold_k / cold_r:.2f}\n"
                  f"dashboard_peak_mib={rss / 1024:.0f}\ndashboard_idle_mib={idle / 1024:.0f}\n")
PY
