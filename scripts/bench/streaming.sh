#!/usr/bin/env bash
# Streaming benchmark of the recommendation service, on a topic, database
# and consumer group of its own (the suite's data is not touched):
#  1. throughput: preload N loadgen interactions, then time kcat reading the
#     whole topic to /dev/null and a fresh instance consuming it to the end
#     with exactly-once commits (state + offsets in one transaction per batch);
#  2. latency: loadgen stamps events with the wall clock at 1,000 / 2,000 /
#     5,000 events/s for D seconds each while latency-probe sends a marked
#     pair of interactions every 100 ms (a long-lived producer) and polls the
#     HTTP API until it is visible; p50/p99 of sent -> visible;
#  3. the instance's peak RSS;
#     Also the PostgreSQL WAL written during that catch-up, per event.
#  4. the peers: Kafka Streams apps (exactly_once_v2) reading the same topic
#     from scratch, count-by-key and the co-occurrence model
#     (scripts/bench/streams-peer.sh; PEER=0 skips them).
# BENCH_RESULTS=<file> appends the figures to it as key=value.
#   scripts/bench/streaming.sh [events=1000000] [seconds_per_rate=60]
# Env: RATES (default "1000 2000 5000"); BENCH_RECOMMENDATION_BIN, another
# recommendation binary to measure (e.g. an older build, for a comparison).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-1000000}
SECONDS_PER_RATE=${2:-60}
RATES=${RATES:-"1000 2000 5000"}
PORT=${BENCH_PORT:-8093}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-streaming loadgen recommendation
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC

log "generating $EVENTS events (loadgen: 20000 users, 5000 products), then producing that file"
"$ROOT/target/release/loadgen" --seed 11 --events "$EVENTS" --users 20000 --products 5000 --days 30 \
  --start "$(date -u -d '31 days ago' +%Y-%m-%dT00:00:00Z)" >"$WORK/preload.ndjson"
# Counted in the very lines that go on the topic.
interactions=$(grep -c '"type":"interaction"' "$WORK/preload.ndjson" || true)
"$ROOT/target/release/loadgen" --input "$WORK/preload.ndjson" --kafka 2>"$WORK/preload.log"
total=$(topic_count)
((total == EVENTS)) || die "the topic holds $total records, $EVENTS were generated"

now() { date +%s%N; }
log "kcat: reading $total messages to /dev/null"
t0=$(now)
kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null
t1=$(now)
kcat_ns=$((t1 - t0))

# WAL the cluster writes (pg_stat_wal is cluster-wide: anything else running
# on this PostgreSQL, such as an idle suite, counts too).
wal_bytes() { psql -h 127.0.0.1 -U kappa -d "$DB" -qAt -c "SELECT wal_bytes FROM pg_stat_wal"; }
log "recommendation: consuming $total messages from scratch, exactly-once"
wal0=$(wal_bytes)
t0=$(now)
start_recommendation "$PORT"
wait_committed "$total" 1800
t1=$(now)
svc_ns=$((t1 - t0))
wal=$(($(wal_bytes) - wal0))
rss_after_catchup=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")

# The peers on the same topic and box, reading the same records from scratch
# while the service is idle, exactly_once_v2 both: a Kafka Streams
# count-by-key app (bench/peers/streams-count: what the runtime alone costs)
# and the co-occurrence app (bench/peers/streams-cooc: the recommendation's
# own model in RocksDB stores). PEER=0 skips them.
peer_line="streams-count records=0 seconds=0 records_per_second=0"
cooc_line="streams-cooc records=0 seconds=0 records_per_second=0"
if [[ ${PEER:-1} == 1 ]]; then
  log "Kafka Streams peer: counting the $total records by key, exactly_once_v2"
  peer_line=$(STREAMS_PEER=count "$ROOT/scripts/bench/streams-peer.sh" "$TOPIC" "$total")
  log "Kafka Streams peer: the co-occurrence model over the $total records, exactly_once_v2"
  cooc_line=$(STREAMS_PEER=cooc "$ROOT/scripts/bench/streams-peer.sh" "$TOPIC" "$total")
fi

# Latency: every 100 ms a probe user views two fresh products through one
# long-lived producer (target/release/latency-probe); visible = the second
# shows up as similar to the first through the HTTP API.
probe() {  # probe <seconds> -> one latency (ms) per line
  "$ROOT/target/release/latency-probe" --api "127.0.0.1:$PORT" --seconds "$1" --every-ms 100
}
grown_past() { (($(topic_count) > $1)); }
latency_report=""
for rate in $RATES; do
  log "latency at $rate events/s for ${SECONDS_PER_RATE}s"
  before=$(topic_count)
  "$ROOT/target/release/loadgen" --seed "$rate" --events $((rate * (SECONDS_PER_RATE + 60))) --users 20000 --products 5000 \
    --realtime --rate "$rate" --kafka 2>"$WORK/load-$rate.log" &
  load_pid=$!
  SCRATCH_PIDS+=("$load_pid")
  # Measure once the load is flowing, not after a guessed pause.
  wait_until 30 "loadgen to reach the topic" grown_past "$before" \
    || die "loadgen produced nothing; see $WORK/load-$rate.log"
  from=$(topic_count) t0=$(now)
  probe "$SECONDS_PER_RATE" >"$WORK/latency-$rate.txt"
  to=$(topic_count) t1=$(now)
  kill "$load_pid" 2>/dev/null || true
  wait "$load_pid" 2>/dev/null || true
  reached=$(( (to - from) * 1000000000 / (t1 - t0) ))
  latency_report+="$rate $reached $(tr '\n' ' ' <"$WORK/latency-$rate.txt")"$'\n'
  # The next rate starts with no backlog: wait until everything is committed.
  wait_committed "$(topic_count)" 300
done
rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$svc_pid/status")

python3 - "$total" "$interactions" "$kcat_ns" "$svc_ns" "$rss_after_catchup" "$rss_peak" "$SECONDS_PER_RATE" "$latency_report" "$peer_line" "$cooc_line" "$wal" <<'PY'
import os, statistics, sys
def peer_rate(line):
    peer = dict(kv.split("=", 1) for kv in line.split()[1:])
    # Timed like the service: to the commit that covers the last record.
    secs = float(peer.get("committed_seconds", peer["seconds"]))
    return secs, (int(peer["records"]) / secs if secs else 0.0)
peer_secs, peer_eps = peer_rate(sys.argv[9])
cooc_secs, cooc_eps = peer_rate(sys.argv[10])
results = {}
total, interactions, kcat, svc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1e9, int(sys.argv[4]) / 1e9
rss_catchup, rss_peak, secs = int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
print(f"streaming benchmark: {total:,} loadgen events ({interactions:,} interactions) on a 6-partition topic; broker, Postgres and service on this machine")
print(f"  kcat -C to /dev/null                 {total / kcat:>10,.0f} events/s  ({kcat:.1f} s)")
print(f"  recommendation, exactly-once commits {total / svc:>10,.0f} events/s  ({svc:.1f} s, from process start to the last commit)")
print(f"  ratio recommendation/kcat            {kcat / svc:>10.2f}x")
wal = int(sys.argv[11])
print(f"  PostgreSQL WAL during the catch-up   {wal / total:>10,.0f} bytes/event  ({wal / 2**20:,.0f} MiB, pg_stat_wal, cluster-wide)")
if peer_eps:
    print(f"  Kafka Streams count-by-key peer      {peer_eps:>10,.0f} events/s  (exactly_once_v2, {peer_secs:.1f} s from start to the last commit)")
    print(f"  ratio recommendation/peer            {total / svc / peer_eps:>10.2f}x")
if cooc_eps:
    print(f"  Kafka Streams co-occurrence peer     {cooc_eps:>10,.0f} events/s  (exactly_once_v2, {cooc_secs:.1f} s from start to the last commit)")
    print(f"  ratio recommendation/cooc peer       {total / svc / cooc_eps:>10.2f}x")
results.update(streaming_events=total, streaming_kcat_eps=round(total / kcat), recommendation_eps=round(total / svc),
               peer_eps=round(peer_eps), recommendation_peer_ratio=round(total / svc / peer_eps, 2) if peer_eps else 0,
               cooc_peer_eps=round(cooc_eps), recommendation_cooc_ratio=round(total / svc / cooc_eps, 2) if cooc_eps else 0,
               wal_bytes_per_event=round(wal / total))
for line in sys.argv[8].strip().splitlines():
    rate, reached, *values = line.split()
    ok = sorted(float(v) for v in values if v != "timeout")
    lost = sum(v == "timeout" for v in values)
    if not ok:
        print(f"  latency at {rate}/s: no samples")
        continue
    p = lambda q: ok[min(len(ok) - 1, int(q * len(ok)))]
    print(f"  event -> visible over HTTP at {rate:>5}/s (reached {int(reached):,}/s): p50 {p(0.5):6.1f} ms  p99 {p(0.99):6.1f} ms  ({len(ok)} probes over {secs} s{f', {lost} timed out' if lost else ''})")
    results.update({f"latency_p50_ms_{rate}": p(0.5), f"latency_p99_ms_{rate}": p(0.99), f"latency_reached_{rate}": reached})
print(f"  peak RSS: {rss_catchup / 1024:.0f} MiB after catch-up, {rss_peak / 1024:.0f} MiB at the end")
results.update(recommendation_peak_mib=round(rss_peak / 1024))
if os.environ.get("BENCH_RESULTS"):
    with open(os.environ["BENCH_RESULTS"], "a") as out:
        out.writelines(f"{k}={v}\n" for k, v in results.items())
PY
