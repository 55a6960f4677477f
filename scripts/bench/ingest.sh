#!/usr/bin/env bash
# Ingest benchmark: the same NDJSON file produced once with `kcat -P` and once
# through the gateway's POST /events, in the same run, on the same broker.
# Prints events/s for both and the ratio. Needs the suite's infrastructure
# (scripts/up.sh); starts its own gateway on a spare port writing to a fresh
# topic, so the suite's `events` topic is not touched. Resident memory is read
# IDLE_SECONDS (10) after each round's load; BENCH_RESULTS=<file> appends the
# figures to it as key=value.
#   scripts/bench/ingest.sh [events=400000] [batch_lines=10000] [parallel_requests=4]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-400000}
BATCH=${2:-10000}
PARALLEL=${3:-4}
BROKER=$(kafka_bootstrap)   # every node of the suite's Kafka
PORT=${BENCH_GATEWAY_PORT:-8099}
RUN_ID=$(date +%s)
WORK="$RUN_DIR/bench-ingest"
mkdir -p "$WORK"
rm -f "$WORK"/chunk.*

kcat -L -b "$BROKER" -m 2 >/dev/null 2>&1 || die "no broker on $BROKER: run scripts/up.sh first"
(cd "$ROOT" && cargo build --release --quiet -p loadgen -p gateway)

log "generating $EVENTS events with loadgen (seed 42)"
"$ROOT/target/release/loadgen" --events "$EVENTS" --users 20000 --products 5000 \
  --start "$(date -u -d "30 days ago" +%Y-%m-%dT00:00:00Z)" --days 29 >"$WORK/events.ndjson"
# kcat gets the same lines keyed by the same entity as the gateway uses (user_id).
sed -E 's/^(.*"user_id":"([^"]*)".*)$/\2\t\1/' "$WORK/events.ndjson" >"$WORK/keyed.tsv"
split -l "$BATCH" -d -a 4 "$WORK/events.ndjson" "$WORK/chunk."
bytes=$(wc -c <"$WORK/events.ndjson")

now() { date +%s%N; }   # nanoseconds
count_on() { kcat -Q -b "$BROKER" $(for p in 0 1 2 3 4 5; do printf -- '-t %s:%s:-1 ' "$1" "$p"; done) 2>/dev/null \
  | awk '{s += $NF} END {print s}'; }

# Each side runs $ROUNDS times into a fresh topic; the median round is reported
# (one kcat round takes well under a second, so single runs are noisy).
ROUNDS=${ROUNDS:-3}
TOPICS=()
new_topic() {  # sets $t; not called in $(...), so TOPICS is kept for cleanup
  t="bench-$1-$RUN_ID-$2"
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --create --topic "$t" \
    --partitions 6 --config retention.ms=-1 >/dev/null
  TOPICS+=("$t")
}
cleanup() {
  kill "${gw_pid:-}" 2>/dev/null || true
  # One JVM for all: --topic takes a regex.
  ((${#TOPICS[@]} == 0)) || "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete \
    --topic "bench-(kcat|gateway)-$RUN_ID-.*" >/dev/null 2>&1 || true
}
trap cleanup EXIT
expect_count() {
  local n; n=$(count_on "$1")
  [[ $n == "$2" ]] || die "topic $1 holds $n messages, expected $2"
}

# 1. kcat, with the same delivery guarantees as the gateway (acks=all, idempotence).
#    One untimed round first, as the gateway gets a warm-up request: the first
#    timed round was 20-35% slower than the others in every run without it.
kcat_p() { kcat -P -b "$BROKER" -t "$1" -K $'\t' -X enable.idempotence=true -X acks=all -X linger.ms=5; }
new_topic kcat warmup
log "kcat -P warm-up round (not timed)"
kcat_p "$t" <"$WORK/keyed.tsv"
kcat_ns=()
for r in $(seq "$ROUNDS"); do
  new_topic kcat "$r"
  log "kcat -P round $r: $EVENTS events"
  t0=$(now)
  # stdin, not a file argument: kcat sends a file argument as one message.
  kcat_p "$t" <"$WORK/keyed.tsv"
  t1=$(now)
  kcat_ns+=($((t1 - t0)))
  expect_count "$t" "$EVENTS"
done

# 2. The gateway: a dedicated process per round (its topic is configuration),
#    warmed up by one request, then the file in batches of $BATCH lines over
#    $PARALLEL concurrent connections.
gw_ns=() rss_kb=0
for r in $(seq "$ROUNDS"); do
  new_topic gateway "$r"
  KAPPA__GATEWAY__ADDR=127.0.0.1:$PORT KAPPA__KAFKA__EVENTS_TOPIC=$t KAPPA__AUTH__ADMIN_TOKEN=bench \
    KAPPA__LOG__LEVEL=warn "$ROOT/target/release/gateway" >"$WORK/gateway.log" 2>&1 &
  gw_pid=$!
  wait_until 30 "bench gateway" curl -fsS "http://127.0.0.1:$PORT/readyz" || die "bench gateway did not start"
  curl -fsS -o /dev/null -H 'Authorization: Bearer bench' --data-binary '{"type":"page_access","page":"/warm-up"}' \
    "http://127.0.0.1:$PORT/events"
  log "gateway round $r: $EVENTS events in batches of $BATCH, $PARALLEL in parallel"
  t0=$(now)
  ls "$WORK"/chunk.* | xargs -P "$PARALLEL" -I{} curl -fsS -o /dev/null -H 'Authorization: Bearer bench' \
    -H 'content-type: application/x-ndjson' --data-binary @{} "http://127.0.0.1:$PORT/events"
  t1=$(now)
  gw_ns+=($((t1 - t0)))
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$gw_pid/status")
  ((rss > rss_kb)) && rss_kb=$rss
  # What the idle gateway keeps after the load (the last round's).
  sleep "${IDLE_SECONDS:-10}"
  idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
  kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  expect_count "$t" $((EVENTS + 1))
done

python3 - "$EVENTS" "$bytes" "${kcat_ns[*]}" "${gw_ns[*]}" "$rss_kb" "$BATCH" "$PARALLEL" "$idle_kb" <<'PY'
import os, statistics, sys
events, size, rss, batch, par = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
idle = int(sys.argv[8])
kcat_runs = [int(x) / 1e9 for x in sys.argv[3].split()]
gw_runs = [int(x) / 1e9 for x in sys.argv[4].split()]
kcat, gw = statistics.median(kcat_runs), statistics.median(gw_runs)
rounds = lambda runs: ", ".join(f"{events / r:,.0f}" for r in runs)
print(f"ingest benchmark: {events} loadgen events ({size/1e6:.1f} MB NDJSON), broker and clients on this {__import__('os').cpu_count()}-core machine")
print(f"  kcat -P (acks=all, idempotent)       {events/kcat:>10,.0f} events/s  ({kcat:.2f} s)")
print(f"  gateway POST /events ({batch}-line batches, {par} parallel)  {events/gw:>10,.0f} events/s  ({gw:.2f} s, peak RSS {rss/1024:.0f} MiB)")
print(f"  rounds (events/s): kcat {rounds(kcat_runs)}; gateway {rounds(gw_runs)}; medians above")
spread = lambda runs: max(runs) / min(runs) - 1
print(f"  spread of rounds (slowest/fastest - 1): kcat {spread(kcat_runs):.0%}, gateway {spread(gw_runs):.0%}")
print(f"  ratio gateway/kcat                   {kcat/gw:>10.2f}x")
print(f"  gateway resident memory idle after the load: {idle/1024:.0f} MiB")
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as out:
        out.write(f"ingest_events={events}\ningest_kcat_eps={events/kcat:.0f}\ningest_gateway_eps={events/gw:.0f}\n"
                  f"ingest_ratio={kcat/gw:.2f}\ningest_kcat_spread={spread(kcat_runs):.2f}\n"
                  f"ingest_gateway_spread={spread(gw_runs):.2f}\ngateway_peak_mib={rss/1024:.0f}\ngateway_idle_mib={idle/1024:.0f}\n")
PY
