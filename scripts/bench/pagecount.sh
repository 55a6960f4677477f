#!/usr/bin/env bash
# MapReduce, measured honestly (the article's warning: data movement can make
# a distributed job slower than one process on small data). On topics and a
# database of the run's own: N loadgen access-log lines on an input topic;
# then, in one run: kcat reading them to /dev/null; `pagecount local
# --topic` (one process, same parser); the distributed job with 1 mapper and
# 1 reducer, 2 and 2, each with the combiner on, and 1/1 with it off. Per
# run: lines/s, shuffle records and bytes, map and reduce seconds, and the
# ratio to the single-process count.
#   scripts/bench/pagecount.sh [lines=2000000] [chunk_lines=100000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

LINES=${1:-2000000}
CHUNK=${2:-100000}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-pagecount loadgen pagecount
export KAPPA__KAFKA__ACCESS_LOGS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL KAPPA__AUTH__ADMIN_TOKEN=bench \
  KAPPA__LOG__LEVEL=warn
COORDINATOR=8390

log "producing $LINES access-log lines (loadgen) to $TOPIC"
"$ROOT/target/release/loadgen" --format access-log --events "$LINES" --kafka --topic "$TOPIC" 2>"$WORK/loadgen.log"
total=$(topic_count)
((total == LINES)) || die "the topic holds $total records, $LINES were produced"

now() { date +%s%N; }
t0=$(now)
kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null
kcat_ns=$(($(now) - t0))
t0=$(now)
"$ROOT/target/release/pagecount" local --topic "$TOPIC" >"$WORK/local.txt"
local_ns=$(($(now) - t0))

start() {  # start <name> <env...>
  local name=$1; shift
  env "$@" "$ROOT/target/release/pagecount" >>"$WORK/$name.log" 2>&1 &
  SCRATCH_PIDS+=("$!")
}
# One run: its own tasks and shuffle topics (6 partitions), its own workers.
run() {  # run <label> <mappers> <reducers> <combiner>
  local label=$1 mappers=$2 reducers=$3 combiner=$4 pids_before=${#SCRATCH_PIDS[@]} port=8400
  local topics=(KAPPA__PAGECOUNT__TASKS_TOPIC="$TOPIC-$label-tasks" KAPPA__PAGECOUNT__SHUFFLE_TOPIC="$TOPIC-$label-shuffle")
  start "$label-coordinator" "${topics[@]}" KAPPA__PAGECOUNT__ROLE=coordinator KAPPA__PAGECOUNT__ADDR=127.0.0.1:$COORDINATOR
  wait_until 60 coordinator curl -fsS "http://127.0.0.1:$COORDINATOR/readyz" || die "the coordinator did not start"
  for ((i = 1; i <= mappers; i++)); do
    port=$((port + 1))
    start "$label-map-$i" "${topics[@]}" KAPPA__PAGECOUNT__ROLE=map KAPPA__PAGECOUNT__INSTANCE=$i KAPPA__PAGECOUNT__ADDR=127.0.0.1:$port
    wait_until 60 "mapper $i" curl -fsS "http://127.0.0.1:$port/readyz" || die "mapper $i did not start"
  done
  for ((i = 1; i <= reducers; i++)); do
    port=$((port + 1))
    start "$label-reduce-$i" "${topics[@]}" KAPPA__PAGECOUNT__ROLE=reduce KAPPA__PAGECOUNT__INSTANCE=$i KAPPA__PAGECOUNT__ADDR=127.0.0.1:$port
    wait_until 60 "reducer $i" curl -fsS "http://127.0.0.1:$port/readyz" || die "reducer $i did not start"
  done
  sleep 3  # the groups settle their assignments
  local id
  id=$(curl -fsS -H "Authorization: Bearer bench" -H 'content-type: application/json' \
    -d "{\"chunk_lines\": $CHUNK, \"combiner\": $combiner}" "http://127.0.0.1:$COORDINATOR/jobs" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  wait_until 1800 "job $id" bash -c "curl -fsS -H 'Authorization: Bearer bench' http://127.0.0.1:$COORDINATOR/jobs/$id | grep -q '\"state\":\"succeeded\"'" \
    || die "job $id did not succeed; see $WORK/$label-*.log"
  curl -fsS -H "Authorization: Bearer bench" "http://127.0.0.1:$COORDINATOR/jobs/$id" >"$WORK/$label.json"
  for ((k = pids_before; k < ${#SCRATCH_PIDS[@]}; k++)); do kill "${SCRATCH_PIDS[$k]}" 2>/dev/null || true; done
  sleep 2
  for t in tasks shuffle; do
    "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete --topic "$TOPIC-$label-$t" >/dev/null 2>&1 || true
  done
}
log "distributed: 1 mapper, 1 reducer, combiner on"
run one 1 1 true
log "distributed: 2 mappers, 2 reducers, combiner on"
run two 2 2 true
log "distributed: 1 mapper, 1 reducer, combiner off"
run plain 1 1 false

python3 - "$LINES" "$kcat_ns" "$local_ns" "$WORK" "$CHUNK" <<'PY'
import json, sys
lines, kcat_ns, local_ns, work, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
local = open(f"{work}/local.txt").readline().split()
rate = lambda seconds: lines / seconds
local_s = local_ns / 1e9
print(f"MapReduce page count: {lines:,} loadgen access-log lines on a 6-partition topic, chunks of {int(chunk):,} lines; broker, Postgres and workers on this machine")
print(f"  {'what':40} {'lines/s':>12} {'seconds':>8} {'shuffle records':>16} {'shuffle MB':>10} {'vs local':>9}")
print(f"  {'kcat -C to /dev/null':40} {rate(kcat_ns / 1e9):12,.0f} {kcat_ns / 1e9:8.1f}")
print(f"  {'pagecount local (one process)':40} {rate(local_s):12,.0f} {local_s:8.1f} {'-':>16} {'-':>10} {1:9.2f}x   ({local_s and (kcat_ns / 1e9) / local_s:.2f}x kcat)")
for label, what in [("one", "distributed 1 map / 1 reduce, combiner"), ("two", "distributed 2 map / 2 reduce, combiner"), ("plain", "distributed 1 map / 1 reduce, no combiner")]:
    job = json.load(open(f"{work}/{label}.json"))
    total = job["seconds"]["total"]
    assert job["lines"]["read"] == lines, job
    print(f"  {what:40} {rate(total):12,.0f} {total:8.1f} {job['shuffle']['records']:16,} {job['shuffle']['bytes'] / 1e6:10.1f} {local_s / total:9.2f}x   (map {job['seconds']['map']:.1f} s, reduce {job['seconds']['reduce'] or 0:.1f} s after the last marker)")
print("  seconds: job created to succeeded (distributed), process start to end (local); 'vs local' is local time / this time")
PY
