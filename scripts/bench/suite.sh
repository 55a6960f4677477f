#!/usr/bin/env bash
# The whole suite on ONE events topic, the way users run it: every worker
# kind (recommendation; image, video and metadata branches; the creator;
# both mailers) and the dashboard's replay on a scratch topic and database
# of the run's own, with a users service, a gateway, a products API and a
# Mailpit of its own. The mix is loadgen's default, its users signed up
# through the users service (--register-users, a share of them: the others'
# purchases are refused by the mailers, as in real traffic).
#  1. catch-up, cold: the workers are paused (SIGSTOP) on an idle topic while
#     the backlog is written, then resumed together, with a full replay
#     started at the same moment; per worker, records/s from the resume to
#     its committed end (every partition past its last record), beside
#     `kcat -C` reading the same topic: started with them (the same load),
#     and alone afterwards (median of 3);
#  2. SMTP alone: plain smtplib into the same Mailpit, 16 connections (what
#     the mailers' own mails are bound by);
#  3. memory: each worker's resident set 60 s after the catch-up (the
#     recommendation's also per user and product of its model);
#  4. live, warm: SECONDS s at RATE events/s of the same mix (loadgen
#     --realtime), with one mail_requested and one product upload (a PNG,
#     the MP4 fixture, metadata) through the gateway every second: request
#     to Mailpit per mode, and upload to `active`, p50/p99.
# BENCH_RESULTS=<file> appends the figures as key=value. Not part of CI.
#   scripts/bench/suite.sh [events=1000000] [seconds=60] [rate=5000]
# Env: REGISTERED (share of users signed up, default 0.9), USERS (loadgen
# users, default 50000), IDLE_SECONDS (before the memory reading, 60).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-1000000}
LIVE_SECONDS=${2:-60}
RATE=${3:-5000}
REGISTERED=${REGISTERED:-0.9}
USERS=${USERS:-50000}
export IDLE_SECONDS=${IDLE_SECONDS:-60}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-suite gateway users recommendation dashboard products mailer loadgen
py() { python3 "$ROOT/scripts/bench/suite.py" "$@"; }
BIN=$ROOT/target/release
SMTP=$((20000 + RANDOM % 10000)) MAILPIT_HTTP=$((30000 + RANDOM % 10000))
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL KAPPA__AUTH__ADMIN_TOKEN=bench \
  KAPPA__LOG__LEVEL=warn

MAILPIT_ARGS="--ignore-duplicate-ids" MAILPIT_SMTP_PORT=$SMTP MAILPIT_HTTP_PORT=$MAILPIT_HTTP \
  MAILPIT_PID_FILE=$WORK/mailpit.pid MAILPIT_LOG_FILE=$WORK/mailpit.log MAILPIT_DB_FILE=$WORK/mailpit.db \
  "$ROOT/scripts/mailpit.sh" start
trap 'MAILPIT_PID_FILE=$WORK/mailpit.pid "$ROOT/scripts/mailpit.sh" stop; scratch_cleanup' EXIT

# name:port:binary:settings (comma-separated KEY=VALUE). The workers (the
# processes paused during the backlog) are the ones with a consumer group.
GATEWAY=8490 USERS_PORT=8491 DASHBOARD=8493 API=8494
SERVICES=(
  "gateway:$GATEWAY:gateway:KAPPA__GATEWAY__ADDR=127.0.0.1:$GATEWAY"
  "users:$USERS_PORT:users:KAPPA__USERS__ADDR=127.0.0.1:$USERS_PORT"
  "dashboard:$DASHBOARD:dashboard:KAPPA__DASHBOARD__ADDR=127.0.0.1:$DASHBOARD,KAPPA__DASHBOARD__SCHEDULE=,KAPPA__DASHBOARD__THRESHOLD_BYTES=0,KAPPA__DASHBOARD__AUDIT_CONSUMER=$TOPIC-recommendation"
  "products-api:$API:products:KAPPA__PRODUCTS__ADDR=127.0.0.1:$API,KAPPA__PRODUCTS__ROLE=api"
)
WORKERS=(
  "recommendation:8492:recommendation:KAPPA__RECOMMENDATION__ADDR=127.0.0.1:8492,KAPPA__RECOMMENDATION__GROUP=$TOPIC-recommendation"
  "image:8495:products:KAPPA__PRODUCTS__ADDR=127.0.0.1:8495,KAPPA__PRODUCTS__ROLE=image,KAPPA__PRODUCTS__GROUP=$TOPIC-image"
  "video:8496:products:KAPPA__PRODUCTS__ADDR=127.0.0.1:8496,KAPPA__PRODUCTS__ROLE=video,KAPPA__PRODUCTS__GROUP=$TOPIC-video"
  "metadata:8497:products:KAPPA__PRODUCTS__ADDR=127.0.0.1:8497,KAPPA__PRODUCTS__ROLE=metadata,KAPPA__PRODUCTS__GROUP=$TOPIC-metadata"
  "creator:8498:products:KAPPA__PRODUCTS__ADDR=127.0.0.1:8498,KAPPA__PRODUCTS__ROLE=creator,KAPPA__PRODUCTS__GROUP=$TOPIC-creator"
  "stateless:8499:mailer:KAPPA__MAILER__ADDR=127.0.0.1:8499,KAPPA__MAILER__MODE=stateless,KAPPA__MAILER__GROUP=$TOPIC-stateless,KAPPA__MAILER__USERS_URL=http://127.0.0.1:$USERS_PORT,KAPPA__MAILER__SMTP_PORT=$SMTP"
  "stateful:8500:mailer:KAPPA__MAILER__ADDR=127.0.0.1:8500,KAPPA__MAILER__MODE=stateful,KAPPA__MAILER__GROUP=$TOPIC-stateful,KAPPA__MAILER__SMTP_PORT=$SMTP,KAPPA__MAILER__DATA_DIR=$WORK/store"
)
rm -rf "$WORK/store"
declare -A PID=()
for entry in "${SERVICES[@]}" "${WORKERS[@]}"; do
  IFS=: read -r name port binary settings <<<"$entry"
  IFS=, read -r -a vars <<<"$settings"
  env "${vars[@]}" "$BIN/$binary" >"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  SCRATCH_PIDS+=("$!")
done
for entry in "${SERVICES[@]}" "${WORKERS[@]}"; do
  IFS=: read -r name port _ <<<"$entry"
  wait_until 90 "$name on :$port" curl -fsS "http://127.0.0.1:$port/readyz" || die "$name did not start; see $WORK/$name.log"
done
worker_urls=()
for entry in "${WORKERS[@]}"; do
  IFS=: read -r name port _ <<<"$entry"
  group=$TOPIC-$name
  worker_urls+=("$group=http://127.0.0.1:$port")
  # Every partition assigned before the pause: the resume starts reading.
  wait_until 60 "$name assigned" bash -c "curl -fsS http://127.0.0.1:$port/metrics | grep -q '^kappa_sink_partitions_assigned{consumer=\"$group\"} 6'" \
    || die "$name was not assigned the topic's partitions"
done

# ------------------------------------------------------------ 1. catch-up
log "pausing the workers; writing $EVENTS loadgen events ($USERS users, $REGISTERED of them signed up first)"
for entry in "${WORKERS[@]}"; do kill -STOP "${PID[${entry%%:*}]}"; done
KAPPA_TOKEN=bench "$BIN/loadgen" --seed 19 --events "$EVENTS" --users "$USERS" --products 5000 --days 30 \
  --start "$(date -u -d '31 days ago' +%Y-%m-%dT00:00:00Z)" --register-users "$REGISTERED" \
  --users-url "http://127.0.0.1:$USERS_PORT" --kafka 2>"$WORK/loadgen.log" || die "loadgen failed: $(tail -n 2 "$WORK/loadgen.log")"
signups=$(grep -o 'users signed up.*' "$WORK/loadgen.log" || true)
# The users service's outbox has published every sign-up.
outbox_done() { [[ $(psql "$DB_URL" -tAc "SELECT count(*) FROM users_outbox WHERE sent_at IS NULL") == 0 ]]; }
wait_until 120 "the users outbox to drain" outbox_done || die "the users outbox did not drain"
py ends "$BROKER" "$TOPIC" >"$WORK/ends.json"
total=$(python3 -c 'import json,sys; print(sum(json.load(open(sys.argv[1])).values()))' "$WORK/ends.json")
log "resuming the workers on $total records, with a full replay"
resumed=$(date +%s.%N)
for entry in "${WORKERS[@]}"; do kill -CONT "${PID[${entry%%:*}]}"; done
# kcat reads the topic beside them, under the same load.
( t0=$(date +%s%N); kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null; echo $(( $(date +%s%N) - t0 )) >"$WORK/kcat-beside.ns" ) &
kcat_beside=$!
replay=$(curl -fsS -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
  -d '{"from":"earliest"}' "http://127.0.0.1:$DASHBOARD/api/replays" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
py watch "$WORK/ends.json" "$WORK/caught-up.json" "$resumed" "${worker_urls[@]}"
wait "$kcat_beside"
mails_by_mode=$(psql "$DB_URL" -tA -F= -c "SELECT mode, count(*) FROM mail_log WHERE state = 'sent' GROUP BY mode" | tr '\n' ',')
replay_state() { curl -fsS -H 'Authorization: Bearer bench' "http://127.0.0.1:$DASHBOARD/api/replays/$replay" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
wait_until 600 "the replay" bash -c "[[ \$(curl -fsS -H 'Authorization: Bearer bench' http://127.0.0.1:$DASHBOARD/api/replays/$replay | grep -o '\"state\":\"[a-z]*\"') != '\"state\":\"running\"' ]]" \
  || die "the replay did not finish"
[[ $(replay_state) == succeeded ]] || die "replay $replay $(replay_state)"
replay_seconds=$(curl -fsS -H 'Authorization: Bearer bench' "http://127.0.0.1:$DASHBOARD/api/replays/$replay" \
  | python3 -c 'import json,sys; from datetime import datetime as d; r=json.load(sys.stdin); print((d.fromisoformat(r["finished_at"].replace("Z","+00:00")) - d.fromisoformat(r["started_at"].replace("Z","+00:00"))).total_seconds())')
caught_up_at=$SECONDS

log "kcat -C on the same topic (3 rounds)"
kcat_times=()
for round in 1 2 3; do
  t0=$(date +%s%N)
  kcat -C -b "$BROKER" -t "$TOPIC" -o beginning -e -q >/dev/null
  kcat_times+=($(( $(date +%s%N) - t0 )))
done
kcat_ns=$(printf '%s\n' "${kcat_times[@]}" | sort -n | sed -n 2p)

# ------------------------------------------------------------ 2. SMTP alone
mails_sent=$(psql "$DB_URL" -tAc "SELECT count(*) FROM mail_log WHERE state = 'sent'")
read -r smtp_rate _ < <(py smtp "$SMTP" 5000)

# ------------------------------------------------------------ 3. memory
log "idle for $IDLE_SECONDS s, then each worker's resident set"
sleep $((IDLE_SECONDS - (SECONDS - caught_up_at) > 0 ? IDLE_SECONDS - (SECONDS - caught_up_at) : 0))
declare -A RSS=()
for entry in "${WORKERS[@]}"; do
  name=${entry%%:*}
  RSS[$name]=$(py rss "${PID[$name]}")
done
read -r rec_users rec_products < <(psql "$DB_URL" -tA -F' ' -c \
  "SELECT (SELECT count(*) FROM rec_users), (SELECT count(*) FROM rec_popularity)")

# ------------------------------------------------------------ 4. live
log "live: $LIVE_SECONDS s at $RATE events/s, a mail request and an upload every second"
for i in $(seq 0 59); do
  curl -fsS -o /dev/null -H 'Authorization: Bearer bench' -H 'content-type: application/json' \
    -d "{\"id\":\"suite-m$i\",\"email\":\"suite-m$i@example.com\"}" "http://127.0.0.1:$USERS_PORT/users" || true
done
wait_until 60 "the users outbox to drain" outbox_done || die "the users outbox did not drain"
# The same users (signed up in the catch-up: none again, and no user update
# on the topic, `--register-users 0`).
KAPPA_TOKEN=bench "$BIN/loadgen" --seed 23 --events $((RATE * LIVE_SECONDS)) --users "$USERS" --products 5000 \
  --rate "$RATE" --realtime --register-users 0 --kafka 2>"$WORK/live-loadgen.log" &
loadgen_pid=$!
SCRATCH_PIDS+=("$loadgen_pid")
py live "$LIVE_SECONDS" "http://127.0.0.1:$GATEWAY" bench "$(date +%s)" suite-m \
  "$ROOT/services/products/tests/fixtures/clip.mp4" "$WORK/live.json"
wait "$loadgen_pid" || die "the live loadgen failed: $(tail -n 2 "$WORK/live-loadgen.log")"
live_rate=$(grep -o 'in [0-9.]*s ([0-9]*/s)' "$WORK/live-loadgen.log" | grep -o '([0-9]*' | tr -d '(')
mail_latency=$(py mail-latency "$WORK/live.json" "http://127.0.0.1:$MAILPIT_HTTP")
upload_latency=$(py upload-latency "$WORK/live.json" "$DB_URL")

# ------------------------------------------------------------ report
python3 - "$WORK/caught-up.json" "$total" "$kcat_ns" "$(<"$WORK/kcat-beside.ns")" "$mails_by_mode" "$replay_seconds" "$smtp_rate" "$mails_sent" \
  "$mail_latency" "$upload_latency" "$rec_users" "$rec_products" "$RATE" "$LIVE_SECONDS" "${live_rate:-0}" \
  "$EVENTS" "$USERS" "$REGISTERED" "$signups" "${BENCH_RESULTS:-/dev/null}" \
  "$(for n in "${!RSS[@]}"; do printf '%s=%s,' "$n" "${RSS[$n]}"; done)" <<'PY'
import json, os, sys
(caught, total, kcat_ns, beside_ns, mails_by_mode, replay_s, smtp_rate, mails_sent, mail_lat, upload_lat, rec_users,
 rec_products, rate, live_s, live_rate, events, users, registered, signups, results, rss) = sys.argv[1:]
caught, total, events, users = json.load(open(caught)), int(total), int(events), int(users)
kcat = total / (int(kcat_ns) / 1e9)
beside = total / (int(beside_ns) / 1e9)
mails = {m: int(n) for m, n in (kv.split("=") for kv in mails_by_mode.strip(",").split(",") if kv)}
mail_lat, upload_lat = json.loads(mail_lat), json.loads(upload_lat)
rss = dict(kv.split("=") for kv in rss.strip(",").split(","))
order = ["recommendation", "image", "video", "metadata", "creator", "stateless", "stateful"]
groups = {name: next(g for g in caught if g.endswith("-" + name)) for name in order}
rate_of = {n: total / caught[groups[n]] for n in order}
out = {}
print(f"suite benchmark: {events:,} loadgen events ({users:,} users, {float(registered):.0%} signed up through the users service) "
      f"on one 6-partition topic; every worker kind, the broker, Postgres and Mailpit on this machine")
print(f"  {signups}")
print(f"  catch-up, cold: workers paused while {total:,} records were written, resumed together with a full replay;")
print(f"  per worker, records/s from the resume to its committed end; x kcat: beside / alone")
print(f"  {'kcat -C beside them':<28} {beside:>12,.0f} records/s  ({int(beside_ns) / 1e9:.2f} s)")
print(f"  {'kcat -C alone (median of 3)':<28} {kcat:>12,.0f} records/s  ({int(kcat_ns) / 1e9:.2f} s)")
print(f"  {'dashboard replay':<28} {total / float(replay_s):>12,.0f} records/s  ({float(replay_s):.2f} s)   "
      f"{total / float(replay_s) / beside:.2f}x / {total / float(replay_s) / kcat:.2f}x")
for n in order:
    mailed = f"   {mails.get(n, 0):,} mails, {mails.get(n, 0) / caught[groups[n]]:,.0f}/s" if n in mails else ""
    print(f"  {n:<28} {rate_of[n]:>12,.0f} records/s  ({caught[groups[n]]:.2f} s)   "
          f"{rate_of[n] / beside:.2f}x / {rate_of[n] / kcat:.2f}x{mailed}")
    out[f"suite_{n}_eps"] = rate_of[n]
    out[f"suite_{n}_seconds"] = caught[groups[n]]
print(f"  mails sent during the catch-up (both modes): {int(mails_sent):,}; SMTP alone into the same Mailpit "
      f"(smtplib, 16 connections): {float(smtp_rate):,.0f} mails/s")
for m, n in mails.items():
    out[f"suite_{m}_mails"] = n
print(f"  resident set {os.environ['IDLE_SECONDS']} s after the catch-up (MiB): " + ", ".join(f"{n} {float(rss[n]):.0f}" for n in order))
rec_bytes = float(rss["recommendation"]) * 2**20
print(f"  recommendation model: {int(rec_users):,} users, {int(rec_products):,} products: "
      f"{rec_bytes / max(1, int(rec_users)):,.0f} B of resident set per user, {rec_bytes / max(1, int(rec_products)):,.0f} B per product")
print(f"  live, warm: {live_s} s at {int(rate):,} events/s (reached {int(live_rate):,}/s), a mail request and an upload every second")
for mode in ("stateless", "stateful"):
    m = mail_lat[mode]
    print(f"    mail request -> Mailpit, {mode:<9}  p50 {m['p50_ms']:7.0f} ms  p99 {m['p99_ms']:7.0f} ms  max {m['max_ms']:7.0f} ms  ({m['n']} mails)")
    print(f"      slowest: {m['slowest']} (sent at, seconds into the phase)")
    out[f"suite_mail_{mode}_p50_ms"], out[f"suite_mail_{mode}_p99_ms"] = m["p50_ms"], m["p99_ms"]
print(f"    upload -> active            p50 {upload_lat['p50_ms']:7.0f} ms  p99 {upload_lat['p99_ms']:7.0f} ms  max {upload_lat['max_ms']:7.0f} ms  ({upload_lat['n']} products)")
out.update(suite_kcat_eps=kcat, suite_kcat_beside_eps=beside, suite_replay_eps=total / float(replay_s), suite_records=total,
           suite_smtp_rate=float(smtp_rate), suite_mails_sent=int(mails_sent),
           suite_upload_p50_ms=upload_lat["p50_ms"], suite_upload_p99_ms=upload_lat["p99_ms"],
           suite_rec_users=int(rec_users), suite_rec_products=int(rec_products), suite_live_rate=int(live_rate))
for n in order:
    out[f"suite_{n}_rss_mib"] = float(rss[n])
with open(results, "a") as f:
    for k, v in out.items():
        f.write(f"{k}={v}\n")
PY
