#!/usr/bin/env bash
# Throughput as instances are added. One topic of N loadgen events (the
# realistic mix), consumed from scratch by:
#  - the recommendation worker (exactly-once into PostgreSQL: state and
#    offsets in one transaction per batch), with 1 instance, then with 2 in
#    one consumer group (each round its own group and database);
#  - the image branch of the product DAG (Kafka transactions: outputs and
#    offsets in one transaction), 1 then 2 instances. None of the mix's
#    records is an upload, so this is the cost of a Kafka-transaction worker
#    reading past what is not its own, the shared stream's common case.
# A round is timed from the processes' start to the commit that covers the
# topic's last record. Baseline: kcat -C reading the same topic, same run.
# Where the bound is: each round's CPU seconds per second of wall time, of
# the workers, the broker node(s), PostgreSQL and the whole machine, against
# its cores.
# Runs on the suite's Kafka as it is (one broker, or KAFKA_BROKERS=3: the
# topic then has replication factor 3) and the suite's PostgreSQL; the
# suite's own topics and database are not touched.
#   scripts/bench/scale.sh [events=1000000]
# BENCH_RESULTS=<file> appends the figures to it as key=value.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-1000000}
PORT=${BENCH_PORT:-8400}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-scale loadgen recommendation products
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__AUTH__ADMIN_TOKEN=bench KAPPA__LOG__LEVEL=warn
ROUND_DBS=()
trap 'for d in "${ROUND_DBS[@]}"; do psql -h 127.0.0.1 -U kappa -d kappa -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done; scratch_cleanup' EXIT

now() { date +%s%N; }
log "generating $EVENTS loadgen events and producing them (acks=all)"
"$ROOT/target/release/loadgen" --seed 7 --events "$EVENTS" --users 20000 --products 5000 --days 30 \
  --start "$(date -u -d '31 days ago' +%Y-%m-%dT00:00:00Z)" >"$WORK/events.ndjson"
t0=$(now)
"$ROOT/target/release/loadgen" --input "$WORK/events.ndjson" --kafka 2>"$WORK/produce.log"
produce_ns=$(($(now) - t0))
total=$(topic_count)
((total == EVENTS)) || die "the topic holds $total records, $EVENTS were generated"
# What the topic takes on the brokers' disks, every replica counted.
disk_kib=$(du -sk "$RUN_DIR"/kafka-*/logs/"$TOPIC"-* 2>/dev/null | awk '{s += $1} END {print s + 0}')
replicas=$(kcat -L -b "$BROKER" -t "$TOPIC" 2>/dev/null | awk '$1 == "partition" { for (k = 1; k <= NF; k++) if ($k == "replicas:") { print split($(k + 1), a, ",") - ($(k + 1) ~ /,$/); exit } }')

# acks=all latency: one record at a time, each waited for (the leader has
# it and, on the cluster, min.insync.replicas of the replicas too).
log "produce latency: 500 records one at a time, acks=all"
python3 -m pip install --quiet confluent-kafka >>"$WORK/pip.log" 2>&1 || die "pip install confluent-kafka failed; see $WORK/pip.log"
latency=$(python3 - "$BROKER" "$TOPIC" <<'PY'
import statistics, sys, time
from confluent_kafka import Producer
p = Producer({"bootstrap.servers": sys.argv[1], "acks": "all", "enable.idempotence": True, "linger.ms": 0})
# Views the workers read like any other (keyed by their user, as the gateway does).
def view(i):
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return ('{"type":"interaction","id":"probe-%d","user_id":"probe","product_id":"probe",'
            '"action":"view","ts":"%s"}' % (i, ts)).encode()
p.produce(sys.argv[2], view(-1), key=b"probe")
p.flush(10)
ms = []
for i in range(500):
    t0 = time.perf_counter()
    p.produce(sys.argv[2], view(i), key=b"probe")
    p.flush(10)
    ms.append((time.perf_counter() - t0) * 1000)
q = statistics.quantiles(ms, n=100)
print(f"{q[49]:.2f} {q[98]:.2f}")
PY
)
total=$(topic_count)

log "kcat: reading the $total records to /dev/null"
t0=$(now)
kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null
kcat_ns=$(($(now) - t0))

# CPU ticks so far: "<workers> <broker> <postgres> <machine busy>".
cpu_ticks() {  # cpu_ticks <worker pid...>
  python3 - "$RUN_DIR" "$@" <<'PY'
import glob, os, sys
run, workers = sys.argv[1], sys.argv[2:]
def ticks(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])  # utime + stime
    except (OSError, IndexError):
        return 0
brokers = [open(p).read().strip() for p in glob.glob(f"{run}/kafka*.pid")]
postgres = [p for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "postgres"] \
    if os.path.isdir("/proc") else []
cpu = open("/proc/stat").readline().split()[1:]
busy = sum(map(int, cpu)) - int(cpu[3]) - int(cpu[4])  # all but idle and iowait
print(sum(map(ticks, workers)), sum(map(ticks, brokers)), sum(map(ticks, postgres)), busy)
PY
}

# wait_committed <worker> <group> <deadline s> <pid...>: until the round's
# instances committed every record of the topic (the recommendation: the
# offsets it stored, read from /stats; a Kafka-transaction worker: per
# partition the furthest kappa_sink_committed_offset any instance reports).
# One process polls every 50 ms, so the waiting costs next to no CPU.
wait_committed() {
  python3 - "$total" "$PORT" "$@" <<'PY'
import json, os, sys, time, urllib.request
total, port, worker, group, deadline, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], time.time() + float(sys.argv[5]), sys.argv[6:]
def get(i, path):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port + i}{path}", timeout=2).read().decode()
    except OSError:
        return None
def committed():
    if worker == "recommendation":
        body = get(1, "/stats")
        return sum(json.loads(body)["next_offsets"].values()) if body else 0
    best = {}
    for i in range(1, len(pids) + 1):
        for line in (get(i, "/metrics") or "").splitlines():
            if line.startswith("kappa_sink_committed_offset{") and f'consumer="{group}"' in line:
                p = line.split('partition="')[1].split('"')[0]
                best[p] = max(best.get(p, 0), int(float(line.rsplit(" ", 1)[1])))
    return sum(best.values())
while (done := committed()) < total:
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            sys.exit(f"{worker} instance (pid {pid}) died")
    if time.time() > deadline:
        sys.exit(f"{worker}: {done} of {total} records committed at the deadline")
    time.sleep(0.05)
PY
}

RESULTS=()
# round <worker> <instances>: start them on a group (and, for the
# recommendation, a database) of the round's own; time until every record
# is committed; stop them.
round() {
  local worker=$1 n=$2 group="$TOPIC-$1-$2" pids=() i port db="" before after t0 ns
  if [[ $worker == recommendation ]]; then
    db="${DB}_r$n"
    psql -h 127.0.0.1 -U kappa -d kappa -qc "CREATE DATABASE $db" >/dev/null
    ROUND_DBS+=("$db")
  fi
  before=$(cpu_ticks)
  t0=$(now)
  for ((i = 1; i <= n; i++)); do
    port=$((PORT + i))
    case $worker in
      recommendation)
        env KAPPA__DATABASE__URL="postgres://kappa:kappa@127.0.0.1:5432/$db" KAPPA__RECOMMENDATION__ADDR=127.0.0.1:$port \
          KAPPA__RECOMMENDATION__GROUP="$group" "$ROOT/target/release/recommendation" >>"$WORK/$group-$i.log" 2>&1 & ;;
      products-image)
        env KAPPA__DATABASE__URL="$DB_URL" KAPPA__PRODUCTS__ADDR=127.0.0.1:$port KAPPA__PRODUCTS__ROLE=image \
          KAPPA__PRODUCTS__GROUP="$group" KAPPA__PRODUCTS__INSTANCE="$i" "$ROOT/target/release/products" >>"$WORK/$group-$i.log" 2>&1 & ;;
    esac
    pids+=("$!") && SCRATCH_PIDS+=("$!")
  done
  wait_committed "$worker" "$group" 1800 "${pids[@]}" || die "see $WORK/$group-*.log"
  ns=$(($(now) - t0))
  after=$(cpu_ticks "${pids[@]}")
  # The workers' ticks are read at the end only: they started from zero.
  read -r w _ _ _ <<<"$after"
  read -r _ b0 p0 m0 <<<"$before"
  read -r _ b1 p1 m1 <<<"$after"
  RESULTS+=("$worker $n $ns $w $((b1 - b0)) $((p1 - p0)) $((m1 - m0))")
  kill "${pids[@]}" 2>/dev/null || true
  for i in "${pids[@]}"; do wait "$i" 2>/dev/null || true; done
  log "$worker x$n: $total records in $((ns / 1000000)) ms"
}

for worker in recommendation products-image; do
  for n in 1 2; do
    log "$worker: $n instance(s) from scratch"
    round "$worker" "$n"
  done
done

python3 - "$total" "$kcat_ns" "$produce_ns" "$(nproc)" "$(getconf CLK_TCK)" "$(kafka_brokers)" "${replicas:-1}" "$latency" "$disk_kib" "${RESULTS[@]}" <<'PY'
import os, sys
total, kcat, produce, cores, hz, brokers, replicas = int(sys.argv[1]), int(sys.argv[2]) / 1e9, int(sys.argv[3]) / 1e9, int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
p50, p99 = map(float, sys.argv[8].split())
disk_kib = int(sys.argv[9])
rows = [r.split() for r in sys.argv[10:]]
print(f"scale benchmark: {total:,} loadgen events on a 6-partition topic; {brokers} broker node(s), replication factor {replicas}; "
      f"workers, broker and PostgreSQL on this machine ({cores} cores)")
print(f"  loadgen --kafka (acks=all, idempotent)   {total / produce:>10,.0f} events/s; the topic takes {disk_kib / 1024:,.0f} MiB on the brokers' disks, every replica counted")
print(f"  one record at a time, acks=all           p50 {p50:.2f} ms, p99 {p99:.2f} ms")
print(f"  kcat -C to /dev/null                     {total / kcat:>10,.0f} events/s")
print(f"  {'worker':<16}{'instances':>10}{'events/s':>11}{'vs kcat':>9}{'x1 inst':>9}   CPU s per s: {'workers':>8}{'broker':>8}{'postgres':>9}{'rest':>6}{'machine':>9}")
results, first = {}, {}
for worker, n, ns, w, b, p, m in rows:
    secs = int(ns) / 1e9
    rate = total / secs
    first.setdefault(worker, rate)
    cpu = [int(x) / hz / secs for x in (w, b, p, m)]
    speedup = rate / first[worker]
    print(f"  {worker:<16}{n:>10}{rate:>11,.0f}{rate * kcat / total:>8.2f}x{speedup:>8.2f}x   {'':12}{cpu[0]:>8.2f}{cpu[1]:>8.2f}{cpu[2]:>9.2f}{cpu[3] - sum(cpu[:3]):>6.2f}{cpu[3]:>9.2f}")
    bound = ("CPU: the machine's cores are busy" if cpu[3] >= 0.9 * cores
             else "not CPU (the machine has idle time): waits on commits, the broker or the database")
    key = f"scale_{worker.replace('-', '_')}_{n}"
    results[key + "_events_per_second"] = round(rate)
    results[key + "_machine_cpu"] = round(cpu[3], 2)
    print(f"  {'':<16}{'':>10} bound: {bound}; busiest part: "
          f"{max(zip(cpu[:3], ('the workers', 'the broker', 'PostgreSQL')))[1]}")
results["scale_kcat_events_per_second"] = round(total / kcat)
results["scale_produce_p50_ms"], results["scale_produce_p99_ms"] = p50, p99
print("  events/s: from the instances' start to the commit covering the last record; "
      "CPU s per s: CPU time over the round's wall time (1.00 = one core busy); "
      "rest: the machine's other processes (the suite, if it runs, and this script)")
path = os.environ.get("BENCH_RESULTS")
if path:
    with open(path, "a") as f:
        for k, v in results.items():
            f.write(f"{k}={v}\n")
PY
