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
# Then the case users meet: the running suite's own dashboard (LIVE_DASHBOARD,
# 127.0.0.1:8083, token .run/token) replaying the suite's `events` topic, with
# its mix of record types, after COLD_SECONDS of quiet, against kcat reading
# that topic (LIVE=0 skips it; it needs scripts/up.sh's suite, and waits for
# the dashboard's queued runs first). Last, the incremental case
# (scripts/bench/replay-incremental.sh: a topic grown from 1M to 10M events,
# an automatic run after each step beside a full replay; GROW=0 skips it).
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
replay() { BENCH_TOKEN=bench replay_at "127.0.0.1:$PORT"; }
# replay_at <host:port>: a full replay requested from that dashboard (token
# BENCH_TOKEN), timed the same way.
replay_at() {
  local t0 id run end auth="Authorization: Bearer $BENCH_TOKEN"
  t0=$(now)
  id=$(curl -fsS -X POST -H "$auth" -H 'content-type: application/json' \
    -d '{"from":"earliest"}' "http://$1/api/replays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  end=$((SECONDS + DEADLINE))
  until run=$(curl -fsS -H "$auth" "http://$1/api/replays/$id") && grep -qE '"state":"(succeeded|failed)"' <<<"$run"; do
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

# The live topic, cold: the suite's dashboard, idle for COLD_SECONDS, then a
# full replay of `events` as a user requests it; kcat reads the same topic.
: >"$WORK/live.txt"
if [[ ${LIVE:-1} == 1 ]]; then
  live=${LIVE_DASHBOARD:-127.0.0.1:8083}
  token=$(cat "$RUN_DIR/token" 2>/dev/null) || die "no $RUN_DIR/token: run scripts/up.sh first (or LIVE=0)"
  curl -fsS "http://$live/readyz" >/dev/null || die "no dashboard ready at $live: run scripts/up.sh first (or LIVE=0)"
  end=$((SECONDS + DEADLINE))
  while curl -fsS -H "Authorization: Bearer $token" "http://$live/api/replays?limit=50" | grep -qE '"state":"(queued|running)"'; do
    ((SECONDS < end)) || die "the suite's dashboard at $live still has replays queued or running after ${DEADLINE}s"
    sleep 1
  done
  log "live topic: the suite's dashboard quiet for ${COLD_SECONDS:-60} s, then a full replay of events, then kcat"
  sleep "${COLD_SECONDS:-60}"
  live_records=$(TOPIC=events topic_count)
  read -r live_ns live_run < <(BENCH_TOKEN=$token replay_at "$live")
  live_k=$(TOPIC=events kcat_read)
  echo "$live_k $live_ns $live_records $live_run" >"$WORK/live.txt"
fi

python3 - "$total" "$rss" "$results" "$total2" "$ns2" "$rss2" "$run2" "$idle" "$WORK/cold.txt" "$WORK/live.txt" <<'PY'
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
live = open(sys.argv[10]).read().split(" ", 3)
if len(live) == 4:
    live_k, live_r, live_records, live_run = int(live[0]) / 1e9, int(live[1]) / 1e9, int(live[2]), json.loads(live[3])
    assert live_run["state"] == "succeeded", live_run
    live_read = live_run["events"] + live_run["rejected"]
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
if len(live) == 4:
    print(f"  live topic, cold: the suite's dashboard after {os.environ.get('COLD_SECONDS', '60')} s of quiet, a full replay of `events` "
          f"({live_records:,} records of every type; the run read {live_read:,} as events or rejected): replay {live_r:.2f} s, "
          f"kcat -C {live_k:.2f} s: ratio {live_k / live_r:.2f}x")
print(f"  every run read all {total:,} records (events + rejected); dashboard peak RSS {rss / 1024:.0f} MiB, idle after the runs {idle / 1024:.0f} MiB")
if run2 is not None:
    print(f"  doubled to {total2:,} events: replay {total2 / (ns2 / 1e9):,.0f} events/s, peak RSS {rss2 / 1024:.0f} MiB")
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as out:
        out.write(f"replay_events={total}\nreplay_kcat_eps={total / kcat:.0f}\nreplay_eps={total / replay:.0f}\n"
                  f"replay_ratio={kcat / replay:.2f}\nreplay_cold_ratio={cold_k / cold_r:.2f}\n"
                  f"dashboard_peak_mib={rss / 1024:.0f}\ndashboard_idle_mib={idle / 1024:.0f}\n")
        if len(live) == 4:
            out.write(f"replay_live_records={live_records}\nreplay_live_cold_ratio={live_k / live_r:.2f}\n")
PY

# The incremental case: a topic grown step by step, each step's automatic
# (incremental) run beside a full replay of the whole topic (GROW=0 skips it;
# GROW_STEP, GROW_STEPS: 1,000,000 events x 10).
if [[ ${GROW:-1} == 1 ]]; then
  "$ROOT/scripts/bench/replay-incremental.sh" "${GROW_STEP:-1000000}" "${GROW_STEPS:-10}"
fi
