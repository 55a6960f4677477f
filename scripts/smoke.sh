#!/usr/bin/env bash
# End-to-end smoke through the running suite (scripts/up.sh first), the way a
# user drives it: curl for HTTP, kcat and Kafka's console producer for events.
# Prints "smoke: N passed, M failed" and fails if anything failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GATEWAY=${GATEWAY:-http://127.0.0.1:8080}
BROKER=127.0.0.1:9092
TOPIC=${EVENTS_TOPIC:-events}
TOKEN=$(<"$RUN_DIR/token")
passed=0 failed=0
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

check() {  # check <description> <function>
  local what=$1 rc; shift
  # A subshell outside any `if`, so `set -e` stops the check at its first failing step.
  set +e
  (set -e; "$@") >"$TMP/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1)); log "ok   $what"
  else
    failed=$((failed + 1)); log "FAIL $what"; sed 's/^/       /' "$TMP/out" >&2
  fi
}
json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
post() {  # post <content-type> <body-file> -> writes status to $TMP/status, body to $TMP/body
  curl -sS -o "$TMP/body" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
    -H "content-type: $1" --data-binary @"$2" "$GATEWAY/events" >"$TMP/status"
}
# read_at <partition> <offset>: the message at that position, via kcat.
read_at() { kcat -C -b "$BROKER" -t "$TOPIC" -p "$1" -o "$2" -c 1 -e -q; }

ops_endpoints() {
  curl -fsS "$GATEWAY/healthz" | grep -q '"ok"'
  curl -fsS "$GATEWAY/readyz" | grep -q '"ready"'
  curl -fsS "$GATEWAY/metrics" | grep -q kappa_http_requests_total
}

post_and_read_back() {
  local id; id=$(cat /proc/sys/kernel/random/uuid)
  printf '{"type":"interaction","id":"%s","user_id":"smoke-u1","product_id":"p7","action":"view"}\n' "$id" >"$TMP/ev"
  post application/x-ndjson "$TMP/ev"
  [[ $(<"$TMP/status") == 202 ]] || { cat "$TMP/body"; return 1; }
  local p o
  p=$(json_field '["events"][0]["partition"]' <"$TMP/body")
  o=$(json_field '["events"][0]["offset"]' <"$TMP/body")
  read_at "$p" "$o" | grep -q "$id"
}

bad_event_is_refused() {
  echo '{"type":"interaction","user_id":"u1","action":"view"}' >"$TMP/bad"
  post application/x-ndjson "$TMP/bad"
  # One condition per line: under `set -e` only a failing last command of an
  # `a && b` list stops the check, so a list would hide a false `[[ ]]`.
  [[ $(<"$TMP/status") == 400 ]]
  grep -q 'missing field `product_id`' "$TMP/body"
  [[ $(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/bad" "$GATEWAY/events") == 401 ]]
}

large_event_is_claim_checked() {
  python3 - "$TMP/big" <<'PY'
import base64, json, sys, uuid
data = base64.b64encode(b"\x07" * 400_000).decode()
event = {"type": "product_uploaded", "id": str(uuid.uuid4()), "product_id": "smoke-p1", "seller_id": "s1",
         "title": "Lamp", "assets": [{"kind": "image", "name": "a.png", "content_type": "image/png", "data": data}]}
open(sys.argv[1], "w").write(json.dumps(event))
PY
  post application/json "$TMP/big"
  [[ $(<"$TMP/status") == 202 ]] || { cat "$TMP/body"; return 1; }
  local token p o
  token=$(json_field '["events"][0]["claim_check"]' <"$TMP/body")
  p=$(json_field '["events"][0]["partition"]' <"$TMP/body")
  o=$(json_field '["events"][0]["offset"]' <"$TMP/body")
  read_at "$p" "$o" >"$TMP/envelope"
  (($(wc -c <"$TMP/envelope") < 1024))
  grep -q "$token" "$TMP/envelope"
  curl -fsS -H "Authorization: Bearer $TOKEN" "$GATEWAY/claims/$token" -o "$TMP/payload"
  grep -q "$(sha256sum "$TMP/payload" | cut -d' ' -f1)" "$TMP/envelope"
}

kcat_and_console_producer_write_events() {
  local tag; tag=$(cat /proc/sys/kernel/random/uuid)
  local before; before=$(kcat -Q -b "$BROKER" -t "$TOPIC:0:-1" 2>/dev/null | awk '{print $NF}')
  echo "smoke-u2:{\"type\":\"interaction\",\"user_id\":\"smoke-u2\",\"product_id\":\"kcat-$tag\",\"action\":\"click\"}" \
    | kcat -P -b "$BROKER" -t "$TOPIC" -K: -p 0
  echo "smoke-u2:{\"type\":\"interaction\",\"user_id\":\"smoke-u2\",\"product_id\":\"console-$tag\",\"action\":\"click\"}" \
    | "$ROOT/scripts/kafka-cli.sh" console-producer --bootstrap-server "$BROKER" --topic "$TOPIC" \
        --property parse.key=true --property key.separator=: --property partitioner.class=org.apache.kafka.clients.producer.RoundRobinPartitioner >/dev/null
  kcat -C -b "$BROKER" -t "$TOPIC" -p 0 -o "$before" -c 1 -e -q | grep -q "kcat-$tag"
  # The console producer chose the partition; look in all of them.
  kcat -C -b "$BROKER" -t "$TOPIC" -o -20 -e -q | grep -q "console-$tag"
}

# An interaction typed into kcat becomes visible through the recommendation API.
recommendations_follow_the_stream() {
  local rec=${RECOMMENDATION:-http://127.0.0.1:8082} tag; tag=$(cat /proc/sys/kernel/random/uuid)
  local user="smoke-$tag" first="smoke-a-$tag" second="smoke-b-$tag"
  local before; before=$(curl -fsS "$rec/stats" | json_field '["events_applied"]')
  for p in "$first" "$second"; do
    echo "$user:{\"type\":\"interaction\",\"user_id\":\"$user\",\"product_id\":\"$p\",\"action\":\"view\"}"
  done | kcat -P -b "$BROKER" -t "$TOPIC" -K: -X partitioner=murmur2_random
  local deadline=$((SECONDS + 30))
  until curl -fsS "$rec/products/$first/similar" | grep -q "$second"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  (($(curl -fsS "$rec/stats" | json_field '["events_applied"]') >= before + 2))
  curl -fsS -H "Authorization: Bearer $TOKEN" "$rec/users/$user/recommendations" | grep -q "\"user_id\":\"$user\""
}

# A replay requested over HTTP runs to the end and its numbers are served.
replay_on_demand() {
  local dash=${DASHBOARD:-http://127.0.0.1:8083} id state
  id=$(curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"from":"earliest"}' "$dash/api/replays" | json_field '["id"]')
  local deadline=$((SECONDS + 60))
  until [[ ${state:-} == succeeded ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
    state=$(curl -fsS "$dash/api/replays/$id" | json_field '["state"]')
    [[ $state != failed ]] || return 1
  done
  [[ $(curl -fsS "$dash/api/metrics/daily" | json_field '["run_id"]') == "$id" ]]
}

check "ops endpoints answer" ops_endpoints
check "POST /events lands on the topic where the answer says" post_and_read_back
check "a bad event gets 400 with the field named; no token gets 401" bad_event_is_refused
check "a large event travels as a claim-check token" large_event_is_claim_checked
check "kcat and Kafka's console producer write typed events" kcat_and_console_producer_write_events
check "an interaction typed into kcat shows in the recommendation API" recommendations_follow_the_stream
check "a replay requested over HTTP runs and its metrics are served" replay_on_demand

echo "smoke: $passed passed, $failed failed"
((failed == 0))
