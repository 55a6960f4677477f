#!/usr/bin/env bash
# The article's trade-off, measured: the same stream of mail requests through
# the stateless worker (asks the users service) and the stateful one (its own
# store from user_updated events), side by side, on a topic, database, users
# service, Mailpit and two workers of the run's own.
#  1. baseline: the same number of mails straight into Mailpit over SMTP
#     (Python smtplib, 16 connections), no Kafka, no lookups;
#  2. burst: M mail requests at once; mails/s per mode and its ratio to the
#     baseline, calls to the users service;
#  3. paced: twice P requests at R/s, a share of them right after the user's
#     address changed (through the users service, as a person would): first
#     with the outbox relay woken on every write, then with it polling only;
#     per mode: request-to-delivered p50/p99, mails sent to an address that
#     was not the user's latest when the mail was requested (and by how many
#     versions), mean seconds per stage (address, smtp, log);
#  4. rebuild: the stateful store's rebuild time from empty for N users.
#   scripts/bench/mail.sh [users=2000] [mails=4000] [paced=2000] [rate=100] [changed_share=0.1] [rebuild_users=100000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

USERS=${1:-2000}
MAILS=${2:-4000}
PACED=${3:-2000}
RATE=${4:-100}
SHARE=${5:-0.1}
REBUILD=${6:-100000}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-mail gateway users mailer
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL KAPPA__AUTH__ADMIN_TOKEN=bench \
  KAPPA__LOG__LEVEL=warn
SMTP=$((20000 + RANDOM % 10000)) HTTP=$((30000 + RANDOM % 10000))
GATEWAY_PORT=8190 USERS_PORT=8191 OTHER_USERS_PORT=8192 STATELESS_PORT=8196 STATEFUL_PORT=8197
rm -rf "$WORK"/store-*  # the stateful stores start empty

# A Mailpit of the run's own (every copy kept: duplicates would show).
MAILPIT_ARGS= MAILPIT_SMTP_PORT=$SMTP MAILPIT_HTTP_PORT=$HTTP MAILPIT_PID_FILE=$WORK/mailpit.pid \
  MAILPIT_LOG_FILE=$WORK/mailpit.log MAILPIT_DB_FILE=$WORK/mailpit.db \
  "$ROOT/scripts/mailpit.sh" start
trap 'MAILPIT_PID_FILE=$WORK/mailpit.pid "$ROOT/scripts/mailpit.sh" stop; scratch_cleanup' EXIT

start() {  # start <name> <binary> <env...>
  local name=$1 binary=$2; shift 2
  env "$@" "$ROOT/target/release/$binary" >>"$WORK/$name.log" 2>&1 &
  SCRATCH_PIDS+=("$!")
}
# Two users instances on one database: the first relays its outbox (woken by
# its own writes, polling for the other's every relay_interval_ms, 200 ms by
# default); the second relays nothing.
start users users KAPPA__USERS__ADDR=127.0.0.1:$USERS_PORT
start users-2 users KAPPA__USERS__ADDR=127.0.0.1:$OTHER_USERS_PORT KAPPA__USERS__RELAY=false
# Mail requests arrive through a gateway (each answered once on the topic).
start gateway gateway KAPPA__GATEWAY__ADDR=127.0.0.1:$GATEWAY_PORT
for port in $USERS_PORT $OTHER_USERS_PORT $GATEWAY_PORT; do
  wait_until 30 "the users service and the gateway" curl -fsS "http://127.0.0.1:$port/readyz" || die "users did not start"
done

log "creating $USERS users through the users service"
python3 - "$USERS" "$USERS_PORT" <<'PY'
import json, sys, urllib.request, concurrent.futures
users, port = int(sys.argv[1]), sys.argv[2]
def create(i):
    body = json.dumps({"id": f"b{i}", "email": f"b{i}@example.com"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/users", body, {"Authorization": "Bearer bench", "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(create, range(users)))
PY
for mode in stateless stateful; do
  port=$STATELESS_PORT; [[ $mode == stateful ]] && port=$STATEFUL_PORT
  start "mailer-$mode" mailer KAPPA__MAILER__ADDR=127.0.0.1:$port KAPPA__MAILER__MODE=$mode \
    KAPPA__MAILER__GROUP="$TOPIC-$mode" KAPPA__MAILER__SMTP_PORT=$SMTP \
    KAPPA__MAILER__USERS_URL=http://127.0.0.1:$USERS_PORT KAPPA__MAILER__DATA_DIR="$WORK/store-$mode"
  wait_until 60 "the $mode mailer" curl -fsS "http://127.0.0.1:$port/readyz" || die "the $mode mailer did not start"
done

log "baseline: $MAILS mails straight into Mailpit over SMTP (16 connections)"
read -r smtp_rate smtp_p50 < <(python3 "$ROOT/scripts/bench/suite.py" smtp "$SMTP" "$MAILS")
echo "  baseline, SMTP alone (Python smtplib, 16 connections): $smtp_rate mails/s, p50 $smtp_p50 ms per mail"
echo "$smtp_rate" >"$WORK/smtp.rate"

log "burst: $MAILS requests at once; then twice $PACED at $RATE/s, $SHARE of them right after an address change"
python3 - "$USERS" "$MAILS" "$PACED" "$RATE" "$SHARE" "$USERS_PORT" "$OTHER_USERS_PORT" "$GATEWAY_PORT" "$STATELESS_PORT" "$STATEFUL_PORT" "$DB_URL" "$(<"$WORK/smtp.rate")" <<'PY'
import json, random, subprocess, sys, time, urllib.request, datetime
users, mails, paced, rate, share, port, other_port, gateway, stateless, stateful, db, raw = sys.argv[1:14]
raw = float(raw)
users, mails, paced, rate, share = int(users), int(mails), int(paced), float(rate), float(share)
rng = random.Random(7)
latest = {f"b{i}": (f"b{i}@example.com", 1) for i in range(users)}

def put(port, user, email):
    body = json.dumps({"email": email}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/users/{user}", body,
                                 {"Authorization": "Bearer bench", "Content-Type": "application/json"}, method="PUT")
    return json.load(urllib.request.urlopen(req))["version"]

def post(lines):
    if lines:
        req = urllib.request.Request(f"http://127.0.0.1:{gateway}/events", "\n".join(lines).encode(),
                                     {"Authorization": "Bearer bench", "Content-Type": "application/x-ndjson"})
        urllib.request.urlopen(req).read()

def sql(query):
    out = subprocess.run(["psql", db, "-At", "-F", "\t", "-c", query], capture_output=True, text=True, check=True)
    return [line.split("\t") for line in out.stdout.splitlines()]

def produce(phase, n, rate, share, port=port):
    """n requests (ids 01<phase>...); returns what each user's latest version was at its request."""
    expected, changed, started, lines = {}, 0, time.time(), []
    for i in range(n):
        if rate:
            time.sleep(max(0.0, started + i / rate - time.time()))
        user = f"b{rng.randrange(users)}"
        if rng.random() < share:
            version = latest[user][1] + 1
            email = f"{user}+v{version}@example.com"
            assert put(port, user, email) == version
            latest[user] = (email, version)
            changed += 1
        rid = f"01{phase}00000-0000-7000-8000-{i:012x}"
        expected[rid] = latest[user][1]
        ts = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        lines.append(json.dumps({"type": "mail_requested", "id": rid, "user_id": user,
                                 "subject": f"{phase} {i}", "body": "b", "ts": ts}))
        if rate:  # one request at a time, as it happens
            post(lines)
            lines = []
    post(lines)  # the burst: one NDJSON body
    return expected, changed, started

def wait_sent(phase, n):
    deadline = time.time() + 900
    while True:
        rows = sql(f"SELECT mode, count(*) FROM mail_log WHERE state = 'sent' AND event_id::text LIKE '01{phase}%' GROUP BY mode")
        if len(rows) == 2 and all(int(c) >= n for _, c in rows):
            return
        if time.time() > deadline:
            sys.exit(f"phase {phase}: only {rows} of {n} per mode sent")
        time.sleep(0.2)

def calls():
    text = urllib.request.urlopen(f"http://127.0.0.1:{stateless}/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("kappa_mailer_users_calls_total"))

# Burst: how fast each mode drains a backlog.
calls0 = calls()
_, _, started = produce("a", mails, 0, 0)
wait_sent("a", mails)
burst = {mode: float(last) - started for mode, last in
         sql("SELECT mode, extract(epoch FROM max(sent_at)) FROM mail_log WHERE event_id::text LIKE '01a%' GROUP BY mode")}
burst_calls = calls() - calls0

# Paced: staleness and latency while keeping up; the address changes through
# the instance that relays at once (b), then through the other one (c).
def paced_phase(phase, users_port):
    expected, changed, _ = produce(phase, paced, rate, share, users_port)
    wait_sent(phase, paced)
    per = {"stateless": [], "stateful": []}
    for mode, rid, version, ms in sql("SELECT mode, event_id::text, user_version, "
                                      "extract(epoch FROM sent_at - requested_at) * 1000 "
                                      f"FROM mail_log WHERE state = 'sent' AND event_id::text LIKE '01{phase}%'"):
        per[mode].append((expected[rid] - int(version), float(ms)))
    return per, changed
phases = [("published at once (the relay woken by the write)", *paced_phase("b", port)),
          ("published by another instance's relay (polling, relay_interval_ms)", *paced_phase("c", other_port))]

print(f"mail benchmark: {users:,} users; both workers side by side on this machine (one Postgres, one Mailpit)")
print(f"  burst of {mails:,} requests: time from the first request to the last mail sent")
print(f"  {'mode':<10} {'mails/s':>8} {'of SMTP alone':>14} {'users calls':>12}")
for mode in ("stateless", "stateful"):
    c = burst_calls if mode == "stateless" else 0
    r = mails / burst[mode]
    print(f"  {mode:<10} {r:>8,.0f} {r / raw:>13.2f}x {c:>12,.0f}")
print(f"  stateful/stateless: {burst['stateless'] / burst['stateful']:.2f}x")
for title, per, changed in phases:
    print(f"  paced: {paced:,} requests at {rate:,.0f}/s, {changed} of them right after the user's address change, "
          f"{title}")
    print(f"  {'mode':<10} {'stale':>6} {'max behind':>11} {'newer':>6} {'p50 ms':>7} {'p99 ms':>7}")
    for mode in ("stateless", "stateful"):
        behind = [b for b, _ in per[mode]]
        lat = sorted(ms for _, ms in per[mode])
        p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
        stale = [b for b in behind if b > 0]
        newer = [b for b in behind if b < 0]
        print(f"  {mode:<10} {len(stale):>6} {max(stale, default=0):>11} {len(newer):>6} {p(0.5):>7.0f} {p(0.99):>7.0f}")
def means(port):
    """Mean ms per call of each timed stage, from a mailer's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    sums, counts = {}, {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            name = line.split("{")[0]
            if name.endswith(suffix) and name[: -len(suffix)] in ("kappa_mailer_stage_seconds", "kappa_sink_commit_seconds", "kappa_sink_batch_size"):
                stage = line.split('stage="')[1].split('"')[0] if 'stage="' in line else name[: -len(suffix)].split("_")[-2]
                into[stage] = into.get(stage, 0) + float(line.split()[-1])
    return {k: sums[k] / counts[k] for k in sums if counts.get(k)}
print("  where a mail's time goes (means over the whole run): per mail, the address lookup, SMTP, marking it sent;")
print("  per batch, the commit and the batch size")
for mode, mport in (("stateless", stateless), ("stateful", stateful)):
    m = means(mport)
    print(f"  {mode:<10} address {m.get('address', 0) * 1e3:6.1f} ms  smtp {m.get('smtp', 0) * 1e3:6.1f} ms  "
          f"log {m.get('log', 0) * 1e3:6.1f} ms  commit {m.get('commit', 0) * 1e3:6.1f} ms  batch {m.get('batch', 0):6.1f} mails")
print("  stale: sent to an older address than the user's at request time (by up to 'max behind' versions);")
print("  newer: the user changed again before the mail left; latency: request to SMTP acceptance (mail log)")
PY

log "rebuild: $REBUILD user_updated events, then a stateful mailer with an empty store"
python3 - "$REBUILD" <<'PY' | kcat -P -b "$BROKER" -t "$TOPIC" -K$'\t' -X partitioner=murmur2_random
import sys
for i in range(int(sys.argv[1])):
    print(f'r{i}\t{{"type":"user_updated","user_id":"r{i}","email":"r{i}@example.com","version":1}}')
PY
t0=$(date +%s%N)
start mailer-rebuild mailer KAPPA__MAILER__ADDR=127.0.0.1:8198 KAPPA__MAILER__MODE=stateful \
  KAPPA__MAILER__GROUP="$TOPIC-rebuild" KAPPA__MAILER__SMTP_PORT=$SMTP KAPPA__MAILER__DATA_DIR="$WORK/store-rebuild"
wait_until 600 "the rebuilt store" curl -fsS "http://127.0.0.1:8198/readyz" || die "the store did not catch up"
t1=$(date +%s%N)
records=$(topic_count)
python3 - "$t0" "$t1" "$records" "$REBUILD" <<'PY'
import sys
t0, t1, records, users = map(int, sys.argv[1:5])
s = (t1 - t0) / 1e9
print(f"  stateful store rebuilt from empty: {records:,} records on the topic ({users:,} new users among them) "
      f"read in {s:.1f} s, {records / s:,.0f} records/s (process start to ready)")
PY
