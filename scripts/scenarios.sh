#!/usr/bin/env bash
# Fault scenarios that check their own outcome, run against the started suite
# (scripts/up.sh first). Each scenario does something to the system (poison
# records, a 5 MiB event, duplicate ids, SIGKILL / SIGSTOP of workers, the
# broker or PostgreSQL crashed, the users service stopped) and computes its
# verdict from the system's own answers: the HTTP APIs, /metrics, the DLQ
# topic read with kcat, Mailpit's API. Never from logs.
#   scripts/scenarios.sh [--quick | --all | name ...]      (default: --quick)
# Quick (each well under a minute, the suite keeps serving): poison, oversize,
# duplicates, lag, missing-asset, mixed-load. Destructive (kill or stop parts of the
# suite; leave it up again with scripts/up.sh): worker-kill, broker-restart,
# db-restart, users-down. The long one, on the three-node cluster only
# (KAFKA_BROKERS=3 scripts/up.sh; not in --all): cluster-failover.
# Prints one table row per scenario (what was done, expected, observed,
# verdict, seconds) and exits non-zero if any failed.
# Every run uses its own keys (users, products, pages scn-<run>-..., and a UTC
# day of the past no other run used, so per-day counters are exact), so the
# scenarios run on a live suite without disturbing what else it holds.
# Restarts go through scripts/up.sh without its build step: a scenario tests
# the binaries that are running, it never rebuilds them.
# Env: WORKER_KILL_EVENTS (200000), RESTART_EVENTS (100000, broker-restart and
# db-restart), LAG_EVENTS (60000), MIXED_EVENTS (100000), SCENARIO_TIMEOUT (seconds a scenario waits
# for an outcome, 180), RECOVERY_SECONDS (30); cluster-failover: FAILOVER_EVENTS
# (200000), FAILOVER_LINES (100000), FAILOVER_BATCH (1000 events a request),
# FAILOVER_PAUSE (1 s between requests: the load outlasts the three
# failovers), FAILOVER_DOWN_SECONDS (10).
# Helpers defined inside a scenario are called through quiet_until:
# shellcheck disable=SC2317
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROKER=$(kafka_bootstrap)   # every node of the suite's Kafka
TOPIC=${EVENTS_TOPIC:-events}
DATABASE_URL=postgres://kappa:kappa@127.0.0.1:5432/kappa
DLQ_TOPIC=${DLQ_TOPIC:-events.dlq}
ACCESS_TOPIC=${ACCESS_TOPIC:-access-logs}
export EVENTS_TOPIC=$TOPIC KAPPA_TOKEN_FILE=$RUN_DIR/token
TIMEOUT=${SCENARIO_TIMEOUT:-180}
RECOVERY=${RECOVERY_SECONDS:-30}
# The workers that consume the events topic, by consumer group (each
# instance's /metrics is asked: urls_of).
EVENT_CONSUMERS=(mailer-stateless mailer-stateful products-image products-video products-metadata products-creator)
# Every worker kind, by pid file name: the processes a consumer group of its
# own runs in (extra instances are found in .run/).
KINDS=(recommendation products-image products-video products-metadata products-creator
  mailer-stateless mailer-stateful pagecount-map pagecount-reduce)
# What worker-kill kills: the kinds, the products API (killed with them while
# uploads are in flight) and the pagecount coordinator.
WORKERS=("${KINDS[@]}" products pagecount)

QUICK=(poison oversize duplicates redrive lag missing-asset mixed-load)
DESTRUCTIVE=(worker-kill broker-restart db-restart job-crash users-down users-hang)
CLUSTER=(cluster-failover)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '/^# \(shellcheck\|Helpers defined\)/d; $d; s/^# \{0,1\}//' >&2; exit 2; }
selected=()
(($# > 0)) || set -- --quick
for arg in "$@"; do
  case $arg in
    --quick) selected+=("${QUICK[@]}") ;;
    --all) selected+=("${QUICK[@]}" "${DESTRUCTIVE[@]}") ;;
    -h | --help) usage ;;
    *)
      [[ " ${QUICK[*]} ${DESTRUCTIVE[*]} ${CLUSTER[*]} " == *" $arg "* ]] || { log "unknown scenario '$arg'"; usage; }
      selected+=("$arg") ;;
  esac
done

[[ -s $KAPPA_TOKEN_FILE ]] || die "no $(rel "$KAPPA_TOKEN_FILE"): start the suite with scripts/up.sh first"
for tool in kcat curl python3; do command -v "$tool" >/dev/null || die "$tool not found (scripts/up.sh installs kcat and curl)"; done
curl -fsS -o /dev/null --max-time 3 http://127.0.0.1:8080/readyz || die "the gateway is not ready: start the suite with scripts/up.sh"

# This run's id, in every key it uses.
RUN=$(date -u +%m%d%H%M%S)$(printf %02d $((RANDOM % 100)))
TMP=$(mktemp -d "${TMPDIR:-/tmp}/scenarios.XXXXXX")
RESTORE=$TMP/restore   # commands that put the suite back, run after each scenario
: >"$RESTORE"
cleanup() {
  restore
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

kit() { python3 "$ROOT/scripts/scenarios/kit.py" "$@"; }
# on_fail_restore <command...>: run it after the scenario unless the scenario
# put things back itself (restored), e.g. when it failed half-way.
on_fail_restore() { printf '%q ' "$@" >>"$RESTORE"; echo >>"$RESTORE"; }
restored() { : >"$RESTORE"; }
restore() {
  [[ -s $RESTORE ]] || return 0
  log "putting the suite back: $(tr '\n' ';' <"$RESTORE")"
  # shellcheck disable=SC1090  # the commands on_fail_restore wrote
  (set +e; source "$RESTORE") >>"$TMP/restore.log" 2>&1 || log "restoring failed; run scripts/up.sh"
  : >"$RESTORE"
}

# ------------------------------------------------------------ row notes
# A scenario writes what it did, what it expects and what it saw into the
# row; its exit status is the verdict (0 PASS).
ROW=$TMP/row
did() { printf '%s' "$*" >"$ROW/done"; }
expect() { printf '%s' "$*" >"$ROW/expected"; }
saw() { [[ -s $ROW/observed ]] && printf '; ' >>"$ROW/observed"; printf '%s' "$*" >>"$ROW/observed"; }
fail() { saw "$*"; exit 1; }
phase() { echo "[$(date +%T)] $*" >&2; }   # progress, shown when a scenario fails

# ------------------------------------------------------------ helpers
# produce [kcat args]: key:value lines on stdin to the events topic, placed
# the way the services' clients place keys, idempotent.
produce() { kcat -P -b "$BROKER" -t "$TOPIC" -K: -X partitioner=murmur2_random -X enable.idempotence=true; }
# dlq_since <ms>: the DLQ's records written since then, one JSON line each.
dlq_since() { kcat -C -b "$BROKER" -t "$DLQ_TOPIC" -o "s@$1" -e -J -q 2>/dev/null || true; }
uuid() { cat /proc/sys/kernel/random/uuid; }
# quiet_until <seconds> <command...>: poll (0.3 s) until it succeeds.
quiet_until() {
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < end)) || return 1; sleep 0.3; done
}
get() { curl -fsS --max-time 10 -H "Authorization: Bearer $(<"$KAPPA_TOKEN_FILE")" "$@"; }
post_json() {  # post_json <url> <json>
  curl -fsS --max-time 30 -H "Authorization: Bearer $(<"$KAPPA_TOKEN_FILE")" -H 'content-type: application/json' -d "$2" "$1"
}
field() { kit json "$1"; }
# Users are published through the users service's outbox. Its unsent gauge
# is refreshed after each relay round and may still read 0 from before the
# new rows: the published counter must have grown by them too.
published() { kit metric http://127.0.0.1:8081/metrics kappa_outbox_published_total; }
outbox_past() {  # outbox_past <count>: that many published, none unsent
  (($(published) >= $1)) && [[ $(kit metric http://127.0.0.1:8081/metrics kappa_outbox_unsent) == 0 ]]
}
create_users() {  # create_users <id...>: each with <id>@example.com
  local u want status
  want=$(published)
  for u in "$@"; do
    status=$(kit create-user "$u" "$u@example.com") || fail "POST /users $u failed"
    if [[ $status == 201 ]]; then want=$((want + 1)); fi
  done
  quiet_until 30 outbox_past "$want" || fail "the users outbox did not publish the new users within 30 s"
}
day_is() {  # day_is <day> <expected json>: the recommendation's counters of that day
  [[ $(kit rec-day "$1") == "$2" ]]
}
mail_count() { kit mail-count "to:$1"; }
mails_are() {  # mails_are <address> <stateless> <stateful>
  local c; c=$(mail_count "$1")
  [[ $(field '["stateless"]' <<<"$c") == "$2" && $(field '["stateful"]' <<<"$c") == "$3" ]]
}
all_past() {  # all_past <acks>: every events consumer committed past them
  local args=(recommendation) c
  for c in "${EVENT_CONSUMERS[@]}"; do args+=("$c=$(urls_of "$c")"); done
  kit passed "$1" "${args[@]}"
}
urls_of() {  # urls_of <name>: the base url of each of its instances, comma-separated
  local n p urls=""
  while read -r n p; do
    [[ $n == "$1" || $n =~ ^$1-[0-9]+$ ]] && urls+="${urls:+,}http://127.0.0.1:$p"
  done < <(suite_processes)
  echo "$urls"
}
not_ready() {  # prints the services whose /readyz is not 200
  local name port
  while read -r name port; do
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" || echo "$name"
  done < <(suite_processes)
}
all_ready() { [[ -z $(not_ready) ]]; }
suite_pids() { local n p; while read -r n p; do printf '%s=%s ' "$n" "$(cat "$RUN_DIR/$n.pid" 2>/dev/null)"; done < <(suite_processes); }
# scripts/up.sh without its build: it starts what is not running from the
# binaries in target/ (a scenario never rebuilds what it tests).
up_nobuild() { KAPPA_NO_BUILD=1 "$ROOT/scripts/up.sh" >>"$TMP/up.log" 2>&1; }
topic_ends() {  # topic_ends <topic>: "partition end" lines
  local t=$1 n p args=()
  n=$(kcat -L -b "$BROKER" -t "$t" 2>/dev/null | grep -c 'partition [0-9]*,')
  for ((p = 0; p < n; p++)); do args+=(-t "$t:$p:-1"); done
  kcat -Q -b "$BROKER" "${args[@]}" | awk '{gsub(/[][]/, "", $2); print $2, $4}' | sort -n
}
fmt() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }   # 1234567 -> 1,234,567
no_dead_letters() {  # no_dead_letters <since_ms> <acks>: none of the events was dead-lettered
  local codes; codes=$(dlq_since "$1" | kit dlq-origins "$2")
  [[ $codes == '{}' ]] || fail "dead letters of this run's events: $codes"
}
mail_users_count() {  # mail_users_count <prefix> <n>: summed counts over <prefix>-m0..n-1
  local i c sl=0 sf=0
  for ((i = 0; i < $2; i++)); do
    c=$(mail_count "$1-m$i@example.com")
    sl=$((sl + $(field '["distinct_stateless"]' <<<"$c"))) sf=$((sf + $(field '["distinct_stateful"]' <<<"$c")))
  done
  echo "$sl $sf"
}

# ------------------------------------------------------------ quick scenarios

scn_poison() {
  local base="scn-$RUN-poison" day t0 long good acks
  day=$(kit free-day "$RUN-poison")
  did "5 records typed into kcat: malformed JSON, an unknown type, a NUL in user_id, a 3,000-char user_id, a view keyed by another user (on day $day); then a good view on each of their keys through the gateway"
  expect "each in $DLQ_TOPIC with its dlq.code (invalid_json, unknown_type, invalid_field, invalid_field, key_mismatch) and nothing else; day $day counts views=5 (the wrong-keyed view not applied); every events worker past the good views"
  long=$(python3 -c "import sys; p=sys.argv[1]; print(p + 'x' * (3000 - len(p)))" "$base-long-")
  t0=$(kit now-ms)
  {
    echo "$base-json:{\"type\":\"interaction\",\"user_id\":\"$base-json\",\"product_id\":\"$base-p\",\"action\":\"view\""
    echo "$base-type:{\"type\":\"scn_no_such_type\",\"user_id\":\"$base-type\"}"
    echo "$base-nul:{\"type\":\"interaction\",\"user_id\":\"$base-nul\\u0000\",\"product_id\":\"$base-p\",\"action\":\"view\"}"
    echo "$base-long:{\"type\":\"interaction\",\"user_id\":\"$long\",\"product_id\":\"$base-p\",\"action\":\"view\"}"
    echo "$base-wrongkey:{\"type\":\"interaction\",\"user_id\":\"$base-km\",\"product_id\":\"$base-p\",\"action\":\"view\",\"ts\":\"${day}T12:00:00Z\"}"
  } | produce
  # The good events, keyed like the poison ones: same partitions, after them.
  good=$TMP/good.ndjson acks=$TMP/good.acks
  for k in json type nul long wrongkey; do
    echo "{\"type\":\"interaction\",\"id\":\"$(uuid)\",\"user_id\":\"$base-$k\",\"product_id\":\"$base-good\",\"action\":\"view\",\"ts\":\"${day}T13:00:00Z\"}"
  done >"$good"
  kit post "$good" "$acks" >/dev/null
  local spec
  spec=$(printf '{"%s-json":"invalid_json","%s-type":"unknown_type","%s-nul":"invalid_field","%s-long":"invalid_field","%s-km":"key_mismatch"}' \
    "$base" "$base" "$base" "$base" "$base")
  # A worker acknowledges a dead letter before its offset moves past the
  # record: once every worker is past the good events, every copy is there.
  quiet_until 60 all_past "$acks" || saw "not every worker got past the good events: $(all_past "$acks")"
  dlq_since "$t0" | kit dlq "$spec" >"$TMP/dlq.json"
  local verdict
  verdict=$(python3 - "$TMP/dlq.json" "$spec" "$base" <<'PY'
import json, sys
found, spec, base = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3]
must = {f"{base}-nul": "U+0000", f"{base}-long": "3000 bytes", f"{base}-km": f'the key "{base}-wrongkey"'}
parts, bad = [], []
for m, code in spec.items():
    codes, reasons = found[m]["codes"], found[m]["reasons"]
    short = m[len(base) + 1:]
    parts.append(f"{short} " + (",".join(f"{c}x{n}" for c, n in sorted(codes.items())) or "none"))
    if not codes.get(code) or set(codes) != {code}:
        bad.append(f"{short}: expected only {code}, got {codes or 'nothing'}")
    elif m in must and not all(must[m] in r for r in reasons):
        bad.append(f"{short}: reason lacks {must[m]!r}: {reasons[0]!r}")
    if any(not o.startswith("events:") for o in found[m]["origins"]):
        bad.append(f"{short}: origin {found[m]['origins']}")
print("DLQ: " + ", ".join(parts))
print("; ".join(bad))
PY
)
  saw "$(head -n 1 <<<"$verdict")"
  local problems; problems=$(sed -n 2p <<<"$verdict")
  saw "day $day: $(kit rec-day "$day" | tr -d '{}"')"
  day_is "$day" '{"add_to_cart": 0, "clicks": 0, "purchases": 0, "revenue_cents": 0, "views": 5}' || fail "expected views=5"
  [[ -z $problems ]] || fail "$problems"
  all_past "$acks" >/dev/null || fail "workers behind: $(all_past "$acks")"
  saw "recommendation, mailers and DAG workers past the good events"
}

scn_oversize() {
  local user="scn-$RUN-big" marker="scn-$RUN-oversize-end" size=$((5 * 1024 * 1024)) ack token p o check sha
  did "a mail_requested with a 5 MiB body POSTed to the gateway (user $user created first)"
  expect "202 with a claim_check token; the record on the topic a small envelope with claim_check and not the body; GET /claims/{token} the exact payload; both mailers resolve it: one 5 MiB mail each in Mailpit, its text ending in the body's last bytes"
  create_users "$user"
  kit big-mail "$user" "scn $RUN oversize" "$marker" "$size" "$TMP/big.json" >/dev/null
  ack=$(kit post-one "$TMP/big.json") || fail "POST /events: $(head -c 300 <<<"$ack")"
  token=$(field '["events"][0].get("claim_check") or ""' <<<"$ack")
  p=$(field '["events"][0]["partition"]' <<<"$ack") o=$(field '["events"][0]["offset"]' <<<"$ack")
  [[ -n $token ]] || fail "the gateway's answer has no claim_check: $ack"
  kcat -C -b "$BROKER" -t "$TOPIC" -p "$p" -o "$o" -c 1 -e -J -q >"$TMP/envelope.json"
  check=$(kit envelope-check "$TMP/envelope.json" "$token" "$marker") || fail "record $TOPIC:$p:$o: $check"
  sha=$(field '["sha256"]' <<<"$check")
  saw "record $TOPIC:$p:$o is a $(field '["bytes"]' <<<"$check") B envelope with claim_check $token (payload $(fmt "$(field '["size"]' <<<"$check")") B not on the topic)"
  local claim; claim=$(kit claim-check "$token" "$sha" "$marker" "$TMP/big.json") || fail "GET /claims/$token: $claim"
  saw "GET /claims: $claim, sha256 as in the envelope, every field as posted"
  quiet_until 60 mails_are "$user@example.com" 1 1 || fail "mails: $(mail_count "$user@example.com")"
  local c texts; c=$(mail_count "$user@example.com")
  texts=$(kit mail-text-ends "to:$user@example.com" "$marker") || fail "$texts"
  saw "Mailpit: 1 stateless + 1 stateful mail, up to $(fmt "$(field '["max_size"]' <<<"$c")") B, texts of $texts chars ending in the marker"
}

scn_duplicates() {
  local prefix="scn-$RUN-dup" day mailuser expected acks1=$TMP/dup1.acks acks2=$TMP/dup2.acks
  day=$(kit free-day "$RUN-dup")
  mailuser="$prefix-m0"
  did "300 events with ids (294 interactions on day $day, 3 purchases and 3 mail requests of user $mailuser) sent twice through the gateway: half of them twice in one request, the other half again in a second request after the first was applied; then a full replay"
  expect "applied once everywhere: the recommendation's day counters and the replay's daily metrics equal one copy, each repeat counted by every reader of its type (kappa_sink_duplicates_skipped_total: the recommendation worker the 297 interactions, each mailer the 6 purchases and mail requests; kappa_replay_duplicates_skipped_total: all 300); 6 mails per mailer (Mailpit and kappa_mailer_sent_total)"
  create_users "$mailuser"
  kit gen-run "$prefix" "$day" 300 8 5 "$mailuser" "$RUN-dup" "$TMP/dup.ndjson" "$TMP/dup.expected" 100 >/dev/null
  expected=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["day"], sort_keys=True))' "$TMP/dup.expected")
  local sent_sl sent_sf skipped_rec skipped_replay skipped_sl skipped_sf
  skipped_rec=$(kit metric http://127.0.0.1:8082/metrics kappa_sink_duplicates_skipped_total)
  skipped_sl=$(kit metric http://127.0.0.1:8086/metrics kappa_sink_duplicates_skipped_total)
  skipped_sf=$(kit metric http://127.0.0.1:8087/metrics kappa_sink_duplicates_skipped_total)
  skipped_replay=$(kit metric http://127.0.0.1:8083/metrics kappa_replay_duplicates_skipped_total)
  sent_sl=$(kit metric http://127.0.0.1:8086/metrics kappa_mailer_sent_total)
  sent_sf=$(kit metric http://127.0.0.1:8087/metrics kappa_mailer_sent_total)
  head -n 150 "$TMP/dup.ndjson" >"$TMP/h1" && tail -n +151 "$TMP/dup.ndjson" >"$TMP/h2"
  cat "$TMP/h1" "$TMP/h1" "$TMP/h2" >"$TMP/copy1"
  kit post "$TMP/copy1" "$acks1" >/dev/null || fail "POST of the first request failed"
  quiet_until 60 all_past "$acks1" || fail "workers did not get past the first request: $(all_past "$acks1")"
  kit post "$TMP/h2" "$acks2" >/dev/null
  quiet_until 60 all_past "$acks2" || fail "workers did not get past the second request: $(all_past "$acks2")"
  local got; got=$(kit rec-day "$day")
  saw "recommendation day $day: $(tr -d '{}"' <<<"$got")"
  local ok=1
  [[ $got == "$expected" ]] || { ok=0; saw "expected $(tr -d '{}"' <<<"$expected")"; }
  # The batch half: a full replay reads the topic, both copies included.
  local run state totals
  run=$(post_json http://127.0.0.1:8083/api/replays '{"from":"earliest"}' | field '["id"]')
  replay_done() { state=$(get "http://127.0.0.1:8083/api/replays/$run" | field '["state"]'); [[ $state == succeeded || $state == failed ]]; }
  quiet_until "$TIMEOUT" replay_done || fail "replay $run not finished"
  [[ $state == succeeded ]] || fail "replay $run $state"
  totals=$(get "http://127.0.0.1:8083/api/metrics/daily?run=$run&from=$day&to=$day" | python3 -c '
import json, sys
t = json.load(sys.stdin)["totals"]
print(json.dumps({k: t.get(k, 0) for k in ("views", "clicks", "add_to_cart", "purchases", "revenue_cents")}, sort_keys=True))')
  saw "replay $run: $(tr -d '{}"' <<<"$totals")"
  [[ $totals == "$expected" ]] || ok=0
  # Each repeat is counted by every worker that reads its type (a worker
  # skips the others unparsed and keeps no window of them): the interactions
  # by the recommendation worker, the purchases and mail requests by each
  # mailer; at least all 300 by the replay (it reads the whole topic: earlier
  # runs' repeats too).
  local interactions mails
  interactions=$(field '["interactions"]' <"$TMP/dup.expected")
  mails=$(field '["mails"]' <"$TMP/dup.expected")
  skipped_rec=$(($(kit metric http://127.0.0.1:8082/metrics kappa_sink_duplicates_skipped_total) - skipped_rec))
  skipped_replay=$(($(kit metric http://127.0.0.1:8083/metrics kappa_replay_duplicates_skipped_total) - skipped_replay))
  skipped_sl=$(($(kit metric http://127.0.0.1:8086/metrics kappa_sink_duplicates_skipped_total) - skipped_sl))
  skipped_sf=$(($(kit metric http://127.0.0.1:8087/metrics kappa_sink_duplicates_skipped_total) - skipped_sf))
  saw "duplicates skipped: recommendation +$skipped_rec of $interactions interactions, mailers +$skipped_sl/+$skipped_sf of $mails, replay +$skipped_replay"
  ((skipped_rec == interactions && skipped_sl == mails && skipped_sf == mails && skipped_replay >= 300)) || ok=0
  quiet_until 30 mails_are "$mailuser@example.com" 6 6 || true
  local c d_sl d_sf
  c=$(mail_count "$mailuser@example.com")
  d_sl=$(($(kit metric http://127.0.0.1:8086/metrics kappa_mailer_sent_total) - sent_sl))
  d_sf=$(($(kit metric http://127.0.0.1:8087/metrics kappa_mailer_sent_total) - sent_sf))
  saw "Mailpit: $(field '["stateless"]' <<<"$c") stateless, $(field '["stateful"]' <<<"$c") stateful; sent_total +$d_sl stateless, +$d_sf stateful"
  [[ $(field '["stateless"]' <<<"$c") == 6 && $(field '["stateful"]' <<<"$c") == 6 && $d_sl == 6 && $d_sf == 6 ]] || ok=0
  ((ok)) || exit 1
}

redriven() { python3 -c 'import json,sys; print(len(json.load(sys.stdin)["redriven"]))'; }  # copies a redrive answer made
scn_redrive() {
  local base="scn-$RUN-redrive" day day2 t0 acks=$TMP/rd.acks answer n copies range problems=""
  day=$(kit free-day "$RUN-redrive") day2=$(kit free-day "$RUN-redrive-2")
  did "a view without an id keyed by another user typed into kcat (day $day): every consumer that reads views dead-letters it (key_mismatch), each a dead letter of its own; POST /dlq/redrive of its origin range, then the same range again, then again with again=true; then a full replay"
  expect "one copy for all its dead letters (rekeyed by its user), the same range again refused as already_redriven, again=true one more copy that every consumer skips as a repeat (the id derived from its first origin); the recommendation's day $day and the replay's count 1 view"
  t0=$(kit now-ms)
  echo "$base-wrongkey:{\"type\":\"interaction\",\"user_id\":\"$base-u\",\"product_id\":\"$base-p\",\"action\":\"view\",\"ts\":\"${day}T12:00:00Z\"}" | produce
  # A good view on the same key after it (another day): past it, every
  # consumer has dead-lettered the record.
  after_view() {
    echo "{\"type\":\"interaction\",\"id\":\"$(uuid)\",\"user_id\":\"$1\",\"product_id\":\"$base-good\",\"action\":\"view\",\"ts\":\"${day2}T13:00:00Z\"}" >"$TMP/rd.ndjson"
    kit post "$TMP/rd.ndjson" "$acks" >/dev/null
    quiet_until 60 all_past "$acks" || fail "workers did not get past $1's view: $(all_past "$acks")"
  }
  after_view "$base-wrongkey"
  range=$(dlq_since "$t0" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if sys.argv[1] in (m.get("payload") or ""):
        h = dict(zip(m["headers"][0::2], m["headers"][1::2]))
        o = int(h["dlq.origin.offset"])
        print(json.dumps({"topic": h["dlq.origin.topic"], "partition": int(h["dlq.origin.partition"]), "from_offset": o, "to_offset": o + 1}))
        break' "$base-u")
  [[ -n $range ]] || fail "no dead letter of the record"
  answer=$(post_json http://127.0.0.1:8080/dlq/redrive "{\"origin\": $range}")
  n=$(field '["matched"]' <<<"$answer") copies=$(redriven <<<"$answer")
  saw "first redrive: $n dead letters matched, $copies copy"
  ((n >= 2)) || problems+="only $n dead letter(s); "
  ((copies == 1)) || problems+="$copies copies; "
  after_view "$base-u"
  answer=$(post_json http://127.0.0.1:8080/dlq/redrive "{\"origin\": $range}")
  saw "the same range again: $(python3 -c 'import json,sys; a=json.load(sys.stdin); print(len(a["redriven"]), "copies, refused", a["refused_counts"])' <<<"$answer")"
  [[ $(redriven <<<"$answer") == 0 ]] || problems+="the second redrive published; "
  answer=$(post_json http://127.0.0.1:8080/dlq/redrive "{\"origin\": $range, \"again\": true}")
  copies=$(redriven <<<"$answer")
  saw "again=true: $copies copy"
  ((copies == 1)) || problems+="again=true gave $copies copies; "
  after_view "$base-u"
  local got; got=$(kit rec-day "$day")
  saw "recommendation day $day: $(tr -d '{}"' <<<"$got")"
  [[ $got == '{"add_to_cart": 0, "clicks": 0, "purchases": 0, "revenue_cents": 0, "views": 1}' ]] || problems+="the recommendation counts $got; "
  local run state views
  run=$(post_json http://127.0.0.1:8083/api/replays '{"from":"earliest"}' | field '["id"]')
  replay_done() { state=$(get "http://127.0.0.1:8083/api/replays/$run" | field '["state"]'); [[ $state == succeeded || $state == failed ]]; }
  quiet_until "$TIMEOUT" replay_done || fail "replay $run not finished"
  views=$(get "http://127.0.0.1:8083/api/metrics/daily?run=$run&from=$day&to=$day" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"].get("views", 0))')
  saw "replay $run: views $views"
  ((views == 1)) || problems+="the replay counts $views views; "
  [[ -z $problems ]] || fail "$problems"
}

scn_lag() {
  local prefix="scn-$RUN-lag" day n=${LAG_EVENTS:-60000} expected max=0 lag parts locked t_zero=""
  local app="kappa-scn-lag-$RUN" psql; psql="$(pg_bin)/psql"
  local release="SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$app'"
  sql() { "$psql" -X -qAt "$DATABASE_URL" -c "$1"; }
  day=$(kit free-day "$RUN-lag")
  did "the recommendation's offset rows locked by a session of the scenario's own (SELECT ... FOR UPDATE): its commits wait, its process runs on; $(fmt "$n") interactions on day $day sent; the lock released"
  expect "kappa_sink_consumer_lag{consumer=recommendation}, summed over partitions, reaches the $(fmt "$n") events sent while no commit can pass, then falls to 0 after the release; day $day counts exactly the events sent"
  kit gen-run "$prefix" "$day" "$n" 2000 20000 "" "$RUN-lag" "$TMP/lag.ndjson" "$TMP/lag.expected" >/dev/null
  expected=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["day"], sort_keys=True))' "$TMP/lag.expected")
  # Every partition has its offset row: one record each, committed, first.
  parts=$(kcat -L -b "$BROKER" -t "$TOPIC" | grep -c 'partition [0-9]*,')
  kit sentinels "$prefix" "$parts" "$TMP/lag-ends.ndjson"
  kit post "$TMP/lag-ends.ndjson" "$TMP/lag-ends.acks" >/dev/null || fail "POST of one record per partition failed"
  quiet_until 60 kit passed "$TMP/lag-ends.acks" recommendation || fail "the recommendation did not commit one record per partition within 60 s"
  lag=$(kit lag http://127.0.0.1:8082/metrics recommendation)
  saw "lag before: $lag"
  on_fail_restore "$psql" -X -q "$DATABASE_URL" -c "$release"
  PGAPPNAME=$app "$psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "BEGIN" \
    -c "SELECT 1 FROM consumer_offsets WHERE consumer = 'recommendation' AND topic = '$TOPIC' FOR UPDATE" \
    -c "SELECT pg_sleep(300)" >"$TMP/lag-lock.log" 2>&1 &
  holding() {  # the session waits in its sleep, the rows locked
    [[ $(sql "SELECT count(*) FROM pg_stat_activity WHERE application_name = '$app' AND query LIKE 'SELECT pg_sleep%'") == 1 ]]
  }
  quiet_until 30 holding || fail "the lock session did not start: $(cat "$TMP/lag-lock.log")"
  locked=$(sql "SELECT count(*) FROM consumer_offsets WHERE consumer = 'recommendation' AND topic = '$TOPIC'")
  ((locked == parts)) || fail "precondition: $locked offset rows of the recommendation locked, expected $parts"
  kit post "$TMP/lag.ndjson" "$TMP/lag.acks" >/dev/null || fail "POST /events failed"
  reaches() { (($(kit lag http://127.0.0.1:8082/metrics recommendation) >= n)); }
  quiet_until 60 reaches || fail "with no commit passing, the lag did not reach $(fmt "$n") within 60 s: $(kit lag http://127.0.0.1:8082/metrics recommendation)"
  max=$(kit lag http://127.0.0.1:8082/metrics recommendation)
  saw "lag $(fmt "$max") while the offset rows are locked"
  sql "$release" >/dev/null
  restored
  local released; released=$(kit now-ms)
  local end=$((SECONDS + 60))
  while ((SECONDS < end)); do
    lag=$(kit lag http://127.0.0.1:8082/metrics recommendation 2>/dev/null) || { sleep 0.1; continue; }
    if ((lag == 0)); then t_zero=$(($(kit now-ms) - released)); break; fi
    sleep 0.1
  done
  saw "lag 0 at +${t_zero:-never} ms after the release"
  quiet_until 30 day_is "$day" "$expected" || true
  local got; got=$(kit rec-day "$day")
  if [[ $got == "$expected" ]]; then saw "day $day exact ($(field '["views"]' <<<"$got") views)"; else saw "day $day: $got, expected $expected"; fi
  [[ -n $t_zero ]] || fail "the lag did not fall to 0 within 60 s"
  [[ $got == "$expected" ]] || exit 1
}

scn_missing_asset() {
  local id="scn-$RUN-missing" token sha answer status
  token=$(uuid)
  sha=$(printf 'not stored' | sha256sum | cut -d' ' -f1)
  did "a product_uploaded for $id whose image names claim-check token $token, which is not in the store (sent through the gateway)"
  expect "the image branch fails the part (payload not found), the creator decides: status rejected with that reason; the metadata part processed"
  printf '{"type":"product_uploaded","product_id":"%s","metadata":{"title":"Scenario lamp","price":"9.90","currency":"EUR"},"assets":[{"part":"image-1","kind":"image","token":"%s","sha256":"%s","size":1234,"content_type":"image/png"}]}' \
    "$id" "$token" "$sha" >"$TMP/upload.json"
  answer=$(kit post-one "$TMP/upload.json") || fail "POST /events: $(head -c 300 <<<"$answer")"
  decided() { status=$(get "http://127.0.0.1:8084/products/$id" | field '["status"]') && [[ $status != pending ]]; }
  quiet_until 60 decided || fail "product $id not decided within 60 s: $(get "http://127.0.0.1:8084/products/$id" | head -c 300)"
  get "http://127.0.0.1:8084/products/$id" >"$TMP/product.json"
  local verdict
  verdict=$(python3 - "$TMP/product.json" "$token" <<'PY'
import json, sys
p, token = json.load(open(sys.argv[1])), sys.argv[2]
parts = {x["part"]: x for x in p["parts"]}
image, meta = parts.get("image-1", {}), parts.get("metadata", {})
print(f'status {p["status"]}, reason "{p["reason"]}"; image-1 {image.get("state")} ("{image.get("reason")}"), metadata {meta.get("state")}')
ok = (p["status"] == "rejected" and token in (p["reason"] or "") and "not found" in (p["reason"] or "")
      and image.get("state") == "failed" and token in (image.get("reason") or "") and meta.get("state") == "processed")
sys.exit(0 if ok else 1)
PY
) || fail "$verdict"
  saw "$verdict"
  local pending; pending=$(get "http://127.0.0.1:8084/pending-joins?limit=1000")
  [[ $pending != *"\"$id\""* ]] || fail "still in /pending-joins"
}

scn_mixed_load() {
  local n=${MIXED_EVENTS:-100000} user="scn-$RUN-mix" product="scn-$RUN-mixprod" t0 acks=$TMP/mix.acks parts
  did "$(fmt "$n") loadgen events (interactions and user updates of its own users, who are not in the users service: the stateless mailer refuses their purchases, the stateful one mails them) with loadgen --kafka, then a mail request for $user (created first) and a product upload through the gateway, then one record per partition after them"
  expect "every events worker (recommendation, mailers, branches, creator) committed past the last record of every partition within $TIMEOUT s; one mail to $user from each mailer; the product active"
  create_users "$user"
  t0=$SECONDS
  KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__LOG__LEVEL=warn "$ROOT/target/release/loadgen" --events "$n" \
    --seed "$((10#$RUN % 100000))" --kafka >"$TMP/loadgen.log" 2>&1 || fail "loadgen: $(tail -n 1 "$TMP/loadgen.log")"
  echo "{\"type\":\"mail_requested\",\"id\":\"$(uuid)\",\"user_id\":\"$user\",\"subject\":\"scn $RUN mixed load\",\"body\":\"after the load\"}" >"$TMP/mix-mail.ndjson"
  kit post "$TMP/mix-mail.ndjson" "$acks" >/dev/null || fail "POST of the mail request failed"
  kit upload "$product" "Scenario lamp after the load" "$ROOT/services/products/tests/fixtures/clip.mp4" >/dev/null \
    || fail "the upload failed"
  parts=$(kcat -L -b "$BROKER" -t "$TOPIC" | grep -c 'partition [0-9]*,')
  kit sentinels "scn-$RUN" "$parts" "$TMP/mix-ends.ndjson"
  kit post "$TMP/mix-ends.ndjson" "$acks" >/dev/null || fail "POST of the partitions' last records failed"
  saw "sent in $((SECONDS - t0)) s"
  if quiet_until "$TIMEOUT" all_past "$acks"; then
    saw "every events worker past every partition's last record $((SECONDS - t0)) s after the load began"
  else
    fail "after $TIMEOUT s: $(all_past "$acks")"
  fi
  quiet_until 60 mails_are "$user@example.com" 1 1 || fail "mails to $user: $(mail_count "$user@example.com")"
  decided() { [[ $(get "http://127.0.0.1:8084/products/$product" | field '["status"]') == active ]]; }
  quiet_until 60 decided || fail "product $product: $(get "http://127.0.0.1:8084/products/$product" | head -c 300)"
  saw "the mail in Mailpit from both mailers; product $product active"
}

# ------------------------------------------------------------ destructive scenarios

# A run for the destructive scenarios: <n> events of day <day> for users
# <prefix>-u*, purchases and mail requests of <mails> users <prefix>-m*
# (created in the users service), in $TMP/<name>.{ndjson,expected}.
prepare_run() {  # prepare_run <name> <prefix> <day> <n> <mail users>
  local name=$1 prefix=$2 day=$3 n=$4 m=$5 i users=()
  for ((i = 0; i < m; i++)); do users+=("$prefix-m$i"); done
  create_users "${users[@]}"
  kit gen-run "$prefix" "$day" "$n" 5000 500 "$(IFS=,; echo "${users[*]}")" "$RUN-$name" \
    "$TMP/$name.ndjson" "$TMP/$name.expected" 1000 >/dev/null
}
expected_of() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d[sys.argv[2]], sort_keys=True) if isinstance(d[sys.argv[2]], dict) else d[sys.argv[2]])' "$1" "$2"; }
# start_sender <name> <batch> <pause>: POSTs the run in the background (retrying
# failed ids with the same ids); progress in $TMP/<name>.progress.
start_sender() {
  : >"$TMP/$1.acks"; echo "0 1" >"$TMP/$1.progress"
  kit post "$TMP/$1.ndjson" "$TMP/$1.acks" "$2" "$3" "$TMP/$1.progress" 900 >"$TMP/$1.sender" 2>&1 &
  SENDER=$!
}
sent_at_least() {  # sent_at_least <name> <fraction percent>
  local sent total; read -r sent total <"$TMP/$1.progress"
  ((sent * 100 >= total * $2))
}
wait_sender() { wait "$SENDER" || fail "sending failed: $(tail -n 2 "$TMP/$1.sender")"; saw "sent: $(tail -n 1 "$TMP/$1.sender" | tr -d '{}"')"; }
upload_products() {  # upload_products <prefix> <from> <to>
  local i
  for ((i = $2; i < $3; i++)); do
    kit upload "$1-prod$i" "Scenario product $i" "$ROOT/services/products/tests/fixtures/clip.mp4" >/dev/null
  done
}
products_status() {  # products_status <prefix> <n>: counts by status, e.g. "active=12 "
  local i s; declare -A by=()
  for ((i = 0; i < $2; i++)); do
    s=$(get "http://127.0.0.1:8084/products/$1-prod$i" 2>/dev/null | field '["status"]' 2>/dev/null || echo missing)
    by[$s]=$((${by[$s]:-0} + 1))
  done
  for s in "${!by[@]}"; do printf '%s=%s ' "$s" "${by[$s]}"; done
}
products_decided() { local st; st=$(products_status "$@"); [[ $st != *pending* && $st != *missing* ]]; }
# check_counts <name> <prefix> <day> <mail users> <products>: once every
# worker is past the run's events and every product is decided, the run's
# outcome, exact: the day's counters, mails per worker, products active.
check_counts() {
  local name=$1 prefix=$2 day=$3 m=$4 np=$5 expected mails ok=1 got
  expected=$(expected_of "$TMP/$name.expected" day) mails=$(expected_of "$TMP/$name.expected" mails)
  quiet_until "$TIMEOUT" all_past "$TMP/$name.acks" || { ok=0; saw "after $TIMEOUT s: $(all_past "$TMP/$name.acks")"; }
  got=$(kit rec-day "$day")
  if [[ $got == "$expected" ]]; then saw "day $day exact: $(tr -d '{}"' <<<"$got")"
  else ok=0; saw "day $day: $(tr -d '{}"' <<<"$got"), expected $(tr -d '{}"' <<<"$expected")"; fi
  # A mail is in Mailpit before its request's offset commits.
  got=$(mail_users_count "$prefix" "$m")
  if [[ $got == "$mails $mails" ]]; then saw "mails $mails per worker"
  else ok=0; saw "mails (stateless stateful) $got, expected $mails each"; fi
  if ((np > 0)); then
    quiet_until "$TIMEOUT" products_decided "$prefix" "$np" || true
    got=$(products_status "$prefix" "$np")
    if [[ $got == "active=$np " ]]; then saw "products: $got"; else ok=0; saw "products: $got(of $np)"; fi
  fi
  ((ok))
}
# replay_exact <name> <day>: a full replay's daily metrics of the day equal
# the run's expected counters.
replay_exact() {
  local run state totals expected
  expected=$(expected_of "$TMP/$1.expected" day)
  run=$(post_json http://127.0.0.1:8083/api/replays '{"from":"earliest"}' | field '["id"]')
  replay_done() { state=$(get "http://127.0.0.1:8083/api/replays/$run" | field '["state"]'); [[ $state == succeeded || $state == failed ]]; }
  quiet_until "$TIMEOUT" replay_done || true
  totals=$(get "http://127.0.0.1:8083/api/metrics/daily?run=$run&from=$2&to=$2" | python3 -c '
import json, sys
t = json.load(sys.stdin)["totals"]
print(json.dumps({k: t.get(k, 0) for k in ("views", "clicks", "add_to_cart", "purchases", "revenue_cents")}, sort_keys=True))' || echo "replay $state")
  if [[ $totals == "$expected" ]]; then saw "replay $run exact"; else saw "replay $run: $(tr -d '{}"' <<<"$totals")"; return 1; fi
}
# job_exact <job> <name>: the page-count job succeeds with every page of
# $TMP/<name>.expected counted exactly.
job_exact() {
  local id=$1 state pages
  job_done() { state=$(get "http://127.0.0.1:8085/jobs/$id" | field '["state"]'); [[ $state != running ]]; }
  quiet_until "$TIMEOUT" job_done || true
  [[ $state == succeeded ]] || { saw "job $id ${state:-unknown}: $(get "http://127.0.0.1:8085/jobs/$id" | field '["chunks"]')"; return 1; }
  if pages=$(kit check-pages "$id" "$TMP/$2.expected"); then saw "page-count job $id: $pages"; else saw "page-count job $id: $pages"; return 1; fi
}
kill_workers() {  # SIGKILL every worker process; prints what it killed
  local worker f
  for worker in "${WORKERS[@]}"; do
    for f in "$RUN_DIR/$worker.pid" "$RUN_DIR/$worker"-[0-9]*.pid; do
      if [[ -e $f ]] && pid_alive "$f"; then
        killed_entry "$(basename "$f" .pid)" "$f"
        kill_pidfile "$f"
      fi
    done
  done
}

# job_mid <job>: the page-count job is mapping: some chunks done, still running.
job_mid() {
  local j; j=$(get "http://127.0.0.1:8085/jobs/$1")
  (($(field '["chunks"]["done"]' <<<"$j") > 0)) && [[ $(field '["state"]' <<<"$j") == running ]]
}
# access_log_run <name> <lines>: the run's own access-log lines on the topic;
# prints the job's `offsets` for exactly them (expected counts in $TMP/<name>.expected).
access_log_run() {
  local before after
  kit gen-access-log "scn-$RUN-$1" "$2" 300 "$RUN-$1" "$TMP/$1.log" "$TMP/$1.expected" >/dev/null
  before=$(topic_ends "$ACCESS_TOPIC")
  kcat -P -b "$BROKER" -t "$ACCESS_TOPIC" -X enable.idempotence=true -l "$TMP/$1.log"
  after=$(topic_ends "$ACCESS_TOPIC")
  python3 -c '
import json, sys
b = dict(l.split() for l in sys.argv[1].splitlines()); a = dict(l.split() for l in sys.argv[2].splitlines())
print(json.dumps({p: [int(b[p]), int(a[p])] for p in a if int(a[p]) > int(b[p])}))' "$before" "$after"
}

# proc_start <pid>: when the process started (clock ticks since boot), which
# tells it from a later process given the same pid (pids are reused).
proc_start() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }
# killed_entry <name> <pidfile>: "name:pid@start" of the process it names.
killed_entry() { local pid; pid=$(<"$2"); printf '%s:%s@%s ' "$1" "$pid" "$(proc_start "$pid")"; }
# restarted_all <name:pid@start ...>: every process killed is gone and its
# pid file names a new, live process (up.sh started it again).
restarted_all() {
  local entry name pid start now problems=""
  for entry in $1; do
    name=${entry%%:*} pid=${entry##*:} start=${pid##*@} pid=${pid%@*}
    if [[ -n $start && $(proc_start "$pid") == "$start" && $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]; then
      problems+="$name (pid $pid) still alive; "
    fi
    now=$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)
    if [[ -z $now || $now == "$pid" ]] || ! pid_alive "$RUN_DIR/$name.pid"; then
      problems+="$name not restarted (pid file: ${now:-none}); "
    fi
  done
  [[ -z $problems ]] || { echo "$problems"; return 1; }
}

scn_worker_kill() {
  local prefix="scn-$RUN-wk" day n=${WORKER_KILL_EVENTS:-200000} lines=100000 killed t0 before after offsets job
  day=$(kit free-day "$RUN-wk")
  did "$(fmt "$n") events of day $day through the gateway in batches, $(fmt $lines) access-log lines counted by a page-count job, 12 product uploads; at 40% sent, with the job mapping, SIGKILL of every worker kind, then scripts/up.sh"
  expect "exact counts after the restart: the day's counters, one mail per request and worker, 12 products active, the job's page counts; no event dead-lettered"
  prepare_run wk "$prefix" "$day" "$n" 10
  t0=$(kit now-ms)
  offsets=$(access_log_run wk-pages "$lines")
  phase "sending"
  start_sender wk 10000 0.3
  upload_products "$prefix" 0 6 >"$TMP/uploads.log" 2>&1 &
  local uploads=$!
  quiet_until 120 sent_at_least wk 40 || fail "sending stalled: $(cat "$TMP/wk.progress")"
  job=$(post_json http://127.0.0.1:8085/jobs "{\"offsets\":$offsets,\"chunk_lines\":5000}" | field '["id"]')
  # The precondition: the job is mapping (some chunks done, not all) when
  # the workers die, or the kill would test nothing of MapReduce.
  quiet_until 20 job_mid "$job" || fail "precondition: job $job was not mapping when the workers were to be killed: $(get "http://127.0.0.1:8085/jobs/$job" | head -c 300)"
  local at_kill applied
  applied=$(kit rec-day "$day" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(v for k, v in d.items() if k != "revenue_cents"))')
  at_kill="$(cut -d' ' -f1 "$TMP/wk.progress") sent, $applied applied by recommendation, job $job at $(get "http://127.0.0.1:8085/jobs/$job" | field '["chunks"]["done"]') of $(get "http://127.0.0.1:8085/jobs/$job" | field '["chunks"]["total"]') chunks"
  on_fail_restore up_nobuild
  phase "killing the workers"
  killed=$(kill_workers)
  (($(wc -w <<<"$killed") >= ${#WORKERS[@]})) || fail "precondition: only $(wc -w <<<"$killed") of the ${#WORKERS[@]} worker kinds were running to be killed: $killed"
  saw "killed $(wc -w <<<"$killed") worker processes when $at_kill"
  wait "$uploads" || fail "uploads failed: $(tail -n 2 "$TMP/uploads.log")"
  upload_products "$prefix" 6 12
  local t_up=$SECONDS
  up_nobuild || fail "scripts/up.sh failed: $(tail -n 3 "$TMP/up.log")"
  restored
  local not_restarted
  not_restarted=$(restarted_all "$killed") || fail "after up.sh: $not_restarted"
  saw "up.sh restarted them in $((SECONDS - t_up)) s, each with a new pid"
  wait_sender wk
  phase "checking the counts"
  local ok=1
  check_counts wk "$prefix" "$day" 10 12 || ok=0
  # Counted since the restart: mails sent again (the crash hit between SMTP
  # and the log; same Message-ID, so Mailpit keeps one).
  saw "resent after the crash: stateless $(kit metric http://127.0.0.1:8086/metrics kappa_mailer_resent_total), stateful $(kit metric http://127.0.0.1:8087/metrics kappa_mailer_resent_total)"
  phase "waiting for job $job"
  job_exact "$job" wk-pages || ok=0
  no_dead_letters "$t0" "$TMP/wk.acks"
  saw "no event dead-lettered"
  ((ok))
}

# restart_scenario <name> <what> <crash command> <start command>: the shared
# body of broker-restart and db-restart.
restart_scenario() {
  local name=$1 what=$2 crash=$3 start=$4 prefix="scn-$RUN-$1" day n=${RESTART_EVENTS:-100000} t0 pids t_back waited
  day=$(kit free-day "$RUN-$name")
  did "$(fmt "$n") events of day $day through the gateway (failed ids retried with the same ids) and 8 product uploads; at 30% sent, $what killed, restarted 5 s later"
  expect "every service ready again within $RECOVERY s of the restart, unaided (same pids); exact counts: day counters, a replay's, mails, 8 products active; no event dead-lettered"
  prepare_run "$name" "$prefix" "$day" "$n" 5
  t0=$(kit now-ms)
  pids=$(suite_pids)
  start_sender "$name" 5000 0.2
  upload_products "$prefix" 0 4 >"$TMP/uploads.log" 2>&1 &
  local uploads=$!
  quiet_until 120 sent_at_least "$name" 30 || fail "sending stalled"
  on_fail_restore up_nobuild
  phase "$crash"
  $crash >>"$TMP/infra.log" 2>&1 || fail "$crash failed: $(tail -n 2 "$TMP/infra.log")"
  sleep 5
  $start >>"$TMP/infra.log" 2>&1 || fail "$start failed: $(tail -n 2 "$TMP/infra.log")"
  t_back=$SECONDS
  if quiet_until "$RECOVERY" all_ready; then
    waited=$((SECONDS - t_back)); saw "all services ready ${waited} s after the restart"
  else
    saw "not ready $RECOVERY s after the restart: $(not_ready | tr '\n' ' ')"; waited=never
  fi
  local same=1
  [[ $(suite_pids) == "$pids" ]] || { same=0; saw "services restarted: $(diff <(tr ' ' '\n' <<<"$pids") <(suite_pids | tr ' ' '\n') | grep '^>' | tr '\n' ' ')"; }
  wait "$uploads" || fail "uploads failed: $(tail -n 2 "$TMP/uploads.log")"
  upload_products "$prefix" 4 8
  wait_sender "$name"
  phase "checking the counts"
  local ok=1
  [[ $waited != never && $same == 1 ]] || ok=0
  check_counts "$name" "$prefix" "$day" 5 8 || ok=0
  replay_exact "$name" "$day" || ok=0
  no_dead_letters "$t0" "$TMP/$name.acks"
  saw "no event dead-lettered"
  ((ok))
}

scn_broker_restart() {
  restart_scenario broker-restart "the broker (SIGKILL, scripts/kafka.sh kill)" \
    "$ROOT/scripts/kafka.sh kill" "$ROOT/scripts/kafka.sh start"
}

scn_db_restart() {
  restart_scenario db-restart "PostgreSQL (pg_ctl -m immediate, scripts/postgres.sh crash)" \
    "$ROOT/scripts/postgres.sh crash" "$ROOT/scripts/postgres.sh start"
}

scn_job_crash() {
  local lines=${JOB_CRASH_LINES:-200000} offsets job old entry t_back
  did "$(fmt "$lines") access-log lines of the run's own and a page-count job over exactly them; once it maps (some chunks done, the job running: checked), SIGKILL of the pagecount coordinator and of the broker (scripts/kafka.sh kill); the broker started again 5 s later, then scripts/up.sh"
  expect "the coordinator is started again with a new pid; the job succeeds, every page of the run counted exactly (nothing lost, nothing counted twice across the crash)"
  offsets=$(access_log_run jc "$lines")
  job=$(post_json http://127.0.0.1:8085/jobs "{\"offsets\":$offsets,\"chunk_lines\":2000}" | field '["id"]')
  quiet_until 30 job_mid "$job" || fail "precondition: job $job was not mapping when it was to be crashed: $(get "http://127.0.0.1:8085/jobs/$job" | head -c 300)"
  saw "job $job at $(get "http://127.0.0.1:8085/jobs/$job" | field '["chunks"]["done"]') of $(get "http://127.0.0.1:8085/jobs/$job" | field '["chunks"]["total"]') chunks when crashed"
  old=$(<"$RUN_DIR/pagecount.pid") entry=$(killed_entry pagecount "$RUN_DIR/pagecount.pid")
  on_fail_restore "$ROOT/scripts/kafka.sh" start
  on_fail_restore up_nobuild
  kill_pidfile "$RUN_DIR/pagecount.pid"
  "$ROOT/scripts/kafka.sh" kill >>"$TMP/broker.log" 2>&1
  sleep 5
  t_back=$SECONDS
  "$ROOT/scripts/kafka.sh" start >>"$TMP/broker.log" 2>&1 || fail "the broker did not start: $(tail -n 3 "$TMP/broker.log")"
  up_nobuild || fail "scripts/up.sh failed: $(tail -n 3 "$TMP/up.log")"
  restored
  local not_restarted; not_restarted=$(restarted_all "$entry") || fail "after up.sh: $not_restarted"
  saw "broker back and the coordinator restarted (pid $old -> $(<"$RUN_DIR/pagecount.pid")) in $((SECONDS - t_back)) s"
  job_exact "$job" jc
}

scn_users_down() { users_unavailable down; }
scn_users_hang() { users_unavailable hang; }

# users_unavailable down|hang: the users service stopped (SIGTERM: connections
# refused), or hanging (SIGSTOP: the kernel still accepts connections, nothing
# answers, so every call runs into mailer.users_timeout_ms).
users_unavailable() {
  local how=$1 prefix="scn-$RUN-u$1" user n=5 i acks=$TMP/ud.acks t0 open=0 t_back pid calls
  user="$prefix-m0"
  case $how in
    down) did "users service stopped (SIGTERM); $n mail requests for $user (created before) sent; users restarted with scripts/up.sh after the stateful mailer sent them" ;;
    hang) did "users service hanging (SIGSTOP: connections accepted, never answered); $n mail requests for $user (created before) sent; SIGCONT after the stateful mailer sent them" ;;
  esac
  expect "stateful mailer sends all $n from its own store while users is $how; stateless sends none and dead-letters none (it waits; its calls fail, time out when it hangs, and its circuit breaker opens), then sends all $n once users is back; one mail per request and worker"
  create_users "$user"
  t0=$(kit now-ms)
  calls=$(kit metric http://127.0.0.1:8086/metrics kappa_mailer_users_calls_total)
  case $how in
    down) on_fail_restore up_nobuild; stop_pidfile "$RUN_DIR/users.pid" 30 ;;
    hang) pid=$(<"$RUN_DIR/users.pid"); on_fail_restore kill -CONT "$pid"; kill -STOP "$pid" ;;
  esac
  for ((i = 0; i < n; i++)); do
    echo "{\"type\":\"mail_requested\",\"id\":\"$(uuid)\",\"user_id\":\"$user\",\"subject\":\"scn $RUN users-down $i\",\"body\":\"mail $i\"}"
  done >"$TMP/ud.ndjson"
  kit post "$TMP/ud.ndjson" "$acks" >/dev/null
  stateful_done() { [[ $(mail_count "$user@example.com" | field '["stateful"]') == "$n" ]]; }
  quiet_until 60 stateful_done || fail "stateful mailer sent $(mail_count "$user@example.com" | field '["stateful"]') of $n with users down"
  # Hanging, each lookup waits out users_timeout_ms (2 s) on every try (3):
  # the breaker's 5 failed lookups take half a minute and more.
  local end=$((SECONDS + $([[ $how == hang ]] && echo 120 || echo 15)))
  while ((SECONDS < end)); do
    [[ $(kit metric http://127.0.0.1:8086/metrics kappa_mailer_users_circuit_open) == 1 ]] && { open=1; break; }
    sleep 0.5
  done
  local c; c=$(mail_count "$user@example.com")
  calls=$(($(kit metric http://127.0.0.1:8086/metrics kappa_mailer_users_calls_total) - calls))
  saw "users $how: stateful sent $(field '["stateful"]' <<<"$c"), stateless $(field '["stateless"]' <<<"$c") after $calls calls to users; circuit $([[ $open == 1 ]] && echo opened || echo 'never opened')"
  [[ $(field '["stateless"]' <<<"$c") == 0 ]] || fail "the stateless mailer sent without the users service"
  ((calls > 0)) || fail "the stateless mailer never called the users service"
  no_dead_letters "$t0" "$acks"
  t_back=$SECONDS
  case $how in
    down) up_nobuild || fail "scripts/up.sh failed: $(tail -n 3 "$TMP/up.log")" ;;
    hang) kill -CONT "$pid" ;;
  esac
  restored
  quiet_until 60 mails_are "$user@example.com" "$n" "$n" || fail "after users came back: $(mail_count "$user@example.com")"
  saw "users back: stateless sent its $n within $((SECONDS - t_back)) s"
  quiet_until 15 bash -c "[[ \$(python3 '$ROOT/scripts/scenarios/kit.py' metric http://127.0.0.1:8086/metrics kappa_mailer_users_circuit_open) == 0 ]]" \
    || fail "the circuit stays open"
  no_dead_letters "$t0" "$acks"
  c=$(mail_count "$user@example.com")
  saw "Mailpit: $(field '["distinct_stateless"]' <<<"$c") stateless, $(field '["distinct_stateful"]' <<<"$c") stateful; no dead letter; circuit closed"
  [[ $open == 1 ]] || exit 1
}

# ------------------------------------------------------------ the cluster

scale_env() {  # scale_env <n>: INSTANCES_<KIND>=n for every worker kind
  local k; for k in "${KINDS[@]}"; do printf 'INSTANCES_%s=%s\n' "$(tr 'a-z-' 'A-Z_' <<<"$k")" "$1"; done
}
second_instances() {  # the pid files of the worker kinds' instances past the first
  local k f; for k in "${KINDS[@]}"; do for f in "$RUN_DIR/$k"-[0-9]*.pid; do [[ -e $f ]] && echo "$f"; done; done; true
}
# under_replicated: "topic:partition" of each partition, internal topics
# included, with fewer replicas in sync than it has.
under_replicated() {
  kcat -L -b "$BROKER" -m 5 2>/dev/null | awk '
    $1 == "topic" { t = $2 }
    $1 == "partition" {
      r = ""; i = ""
      for (k = 1; k <= NF; k++) { if ($k == "replicas:") r = $(k + 1); if ($k == "isrs:") i = $(k + 1) }
      sub(/,$/, "", r); sub(/,$/, "", i)
      if (split(r, a, ",") != split(i, b, ",")) print t ":" $2
    }' | tr -d '",' | tr '\n' ' '
}
in_sync() { [[ -z $(under_replicated) ]]; }
most_leader() { "$ROOT/scripts/kafka.sh" leaders "$1" | awk 'NR == 1 && $2 > 0 { print $1 }'; }
# tx_coordinator <transactional id>: the node that coordinates its transactions.
tx_coordinator() {
  "$ROOT/scripts/kafka-cli.sh" transactions --bootstrap-server "$BROKER" describe --transactional-id "$1" 2>/dev/null \
    | awk 'NR == 2 { print $1 }'
}
# fail_over <what> <node>: SIGKILL of that node while the load runs, started
# again FAILOVER_DOWN_SECONDS later; every process of the suite ready within
# RECOVERY s of its return, none restarted.
fail_over() {
  local what=$1 node=$2 at waited
  [[ $node =~ ^[1-3]$ ]] || fail "precondition: no node found for $what (got '$node')"
  quiet_until 120 in_sync || fail "precondition: partitions not in sync before killing node $node: $(under_replicated)"
  kill -0 "$SENDER" 2>/dev/null || fail "precondition: the load had ended before node $node ($what) was to be killed (raise FAILOVER_EVENTS)"
  at=$(cut -d' ' -f1 "$TMP/cf.progress")
  phase "killing node $node: $what"
  on_fail_restore "$ROOT/scripts/kafka.sh" start "$node"
  "$ROOT/scripts/kafka.sh" kill "$node" >>"$TMP/infra.log" 2>&1 || fail "kafka.sh kill $node failed: $(tail -n 2 "$TMP/infra.log")"
  sleep "${FAILOVER_DOWN_SECONDS:-10}"
  "$ROOT/scripts/kafka.sh" start "$node" >>"$TMP/infra.log" 2>&1 || fail "kafka.sh start $node failed: $(tail -n 2 "$TMP/infra.log")"
  local t_back=$SECONDS
  if quiet_until "$RECOVERY" all_ready; then
    waited=$((SECONDS - t_back))
  else
    fail "node $node ($what) back, but not ready $RECOVERY s later: $(not_ready | tr '\n' ' ')"
  fi
  saw "node $node ($what) SIGKILLed at $(fmt "$at") sent, back ${FAILOVER_DOWN_SECONDS:-10} s later, every process ready ${waited} s after"
}

scn_cluster_failover() {
  local prefix="scn-$RUN-cf" day n=${FAILOVER_EVENTS:-200000} lines=${FAILOVER_LINES:-100000} t0 offsets job pids node
  (($(kafka_brokers) == 3)) || fail "precondition: needs the three-node cluster (KAFKA_BROKERS=3 scripts/up.sh); the suite runs on $(kafka_brokers) broker"
  day=$(kit free-day "$RUN-cf")
  did "$(fmt "$n") events of day $day through the gateway, 8 product uploads, mail requests of 10 users, a page-count job over $(fmt "$lines") access-log lines; at 10% sent, a second instance of each of the ${#KINDS[@]} worker kinds started (every group rebalances under load); at 20%, with the recommendation's instances waiting inside their commit (its day table locked), the first instance of each kind SIGKILLed and started again; then SIGKILL of the node leading most events partitions, of the node coordinating products-image-1's transactions, of the node leading most pagecount-shuffle partitions (while the job maps), each started again ${FAILOVER_DOWN_SECONDS:-10} s later once the previous one was back in sync"
  expect "every process ready within $RECOVERY s of each node's return, none restarted by the failovers; exact counts: the day's counters, a replay's daily metrics, one mail per request and mailer, 8 products active, the job's page counts; no event dead-lettered"
  prepare_run cf "$prefix" "$day" "$n" 10
  # The second instances join while events flow: if some run already,
  # they are stopped first.
  local f; for f in $(second_instances); do stop_pidfile "$f" 30; done
  t0=$(kit now-ms)
  offsets=$(access_log_run cf-pages "$lines")
  phase "sending"
  start_sender cf "${FAILOVER_BATCH:-1000}" "${FAILOVER_PAUSE:-1}"
  upload_products "$prefix" 0 8 >"$TMP/uploads.log" 2>&1 &
  local uploads=$!
  quiet_until 120 sent_at_least cf 10 || fail "sending stalled: $(cat "$TMP/cf.progress")"
  phase "second instances"
  local t_scale=$SECONDS
  env $(scale_env 2) KAPPA_NO_BUILD=1 "$ROOT/scripts/up.sh" >>"$TMP/up.log" 2>&1 || fail "scaling out failed: $(tail -n 3 "$TMP/up.log")"
  (($(second_instances | wc -l) == ${#KINDS[@]})) || fail "precondition: $(second_instances | wc -l) second instances running, expected ${#KINDS[@]}"
  saw "second instances of ${#KINDS[@]} worker kinds ready in $((SECONDS - t_scale)) s at $(fmt "$(cut -d' ' -f1 "$TMP/cf.progress")") sent"
  # A rebalance by crash, in the middle of a commit: the recommendation's
  # day table locked, so both of its instances wait inside their batch's
  # transaction; then the first instance of every kind SIGKILLed (its
  # partitions move to the second), the lock released, the first ones
  # started again (the partitions move back). A worker that committed its
  # offsets before its effect loses the killed batch here.
  quiet_until 120 sent_at_least cf 20 || fail "sending stalled: $(cat "$TMP/cf.progress")"
  local app="kappa-scn-cf-$RUN" psql killed k
  psql="$(pg_bin)/psql"
  local release="SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$app'"
  on_fail_restore "$psql" -X -q "$DATABASE_URL" -c "$release"
  PGAPPNAME=$app "$psql" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "BEGIN" \
    -c "LOCK TABLE rec_daily IN EXCLUSIVE MODE" -c "SELECT pg_sleep(300)" >"$TMP/cf-lock.log" 2>&1 &
  waiting() {  # both recommendation instances wait for the day table
    (($("$psql" -X -qAt "$DATABASE_URL" -c "SELECT count(*) FROM pg_locks WHERE relation = 'rec_daily'::regclass AND NOT granted") >= 2))
  }
  quiet_until 60 waiting || fail "precondition: the recommendation's instances did not both wait on the locked day table within 60 s: $(cat "$TMP/cf-lock.log")"
  killed=$(for k in "${KINDS[@]}"; do killed_entry "$k" "$RUN_DIR/$k.pid"; kill_pidfile "$RUN_DIR/$k.pid"; done)
  "$psql" -X -q "$DATABASE_URL" -c "$release" >/dev/null
  up_nobuild || fail "scripts/up.sh failed: $(tail -n 3 "$TMP/up.log")"
  local not_restarted; not_restarted=$(restarted_all "$killed") || fail "after up.sh: $not_restarted"
  saw "first instances SIGKILLed at $(fmt "$(cut -d' ' -f1 "$TMP/cf.progress")") sent, the recommendation's inside its commit, and started again"

  pids=$(suite_pids)
  quiet_until 120 sent_at_least cf 30 || fail "sending stalled: $(cat "$TMP/cf.progress")"
  fail_over "leader of most events partitions" "$(most_leader events)"
  quiet_until 120 sent_at_least cf 50 || fail "sending stalled: $(cat "$TMP/cf.progress")"
  node=$(tx_coordinator products-image-1)
  fail_over "transaction coordinator of products-image-1" "$node"
  job=$(post_json http://127.0.0.1:8085/jobs "{\"offsets\":$offsets,\"chunk_lines\":2000}" | field '["id"]')
  quiet_until 60 job_mid "$job" || fail "precondition: job $job was not mapping: $(get "http://127.0.0.1:8085/jobs/$job" | head -c 300)"
  fail_over "leader of most pagecount-shuffle partitions, job $job mapping" "$(most_leader pagecount-shuffle)"
  restored

  wait "$uploads" || fail "uploads failed: $(tail -n 2 "$TMP/uploads.log")"
  wait_sender cf
  local ok=1
  if [[ $(suite_pids) != "$pids" ]]; then
    ok=0; saw "processes restarted: $(diff <(tr ' ' '\n' <<<"$pids") <(suite_pids | tr ' ' '\n') | grep '^>' | tr '\n' ' ')"
  fi
  phase "checking the counts"
  check_counts cf "$prefix" "$day" 10 8 || ok=0
  replay_exact cf "$day" || ok=0
  job_exact "$job" cf-pages || ok=0
  no_dead_letters "$t0" "$TMP/cf.acks"
  saw "no event dead-lettered"
  ((ok))
}

# ------------------------------------------------------------ run and report

declare -a ROWS=()
failed=0
for name in "${selected[@]}"; do
  rm -rf "$ROW" && mkdir -p "$ROW"
  log "scenario $name (run $RUN) ..."
  start=$SECONDS
  set +e
  (set -e; "scn_${name//-/_}") >"$ROW/out" 2>&1
  rc=$?
  set -e
  restore
  secs=$((SECONDS - start))
  verdict=PASS
  if ((rc != 0)); then
    verdict=FAIL failed=$((failed + 1))
    [[ -s $ROW/observed ]] || saw "error: $(grep -v '^$' "$ROW/out" | tail -n 1)"
    sed 's/^/    /' "$ROW/out" | tail -n 20 >&2
  fi
  log "$verdict $name (${secs}s): $(cat "$ROW/observed" 2>/dev/null)"
  ROWS+=("$(printf '| %s | %s | %s | %s | **%s** | %s |' "$name" "$(cat "$ROW/done" 2>/dev/null)" \
    "$(cat "$ROW/expected" 2>/dev/null)" "$(tr '|' '/' <"$ROW/observed" 2>/dev/null)" "$verdict" "$secs")")
done

echo "| scenario | done | expected | observed | verdict | s |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "scenarios (run $RUN): $((${#selected[@]} - failed)) passed, $failed failed"
((failed == 0))
