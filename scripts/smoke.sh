#!/usr/bin/env bash
# End-to-end smoke through the running suite (scripts/up.sh first), the way a
# user drives it: curl for HTTP, kcat and Kafka's console producer for events.
# Only what needs the started suite is here; paths across services are tested
# in-process by tests/integ, each service's contract by its own tests.
# Prints "smoke: N passed, M failed" and fails if anything failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GATEWAY=${GATEWAY:-http://127.0.0.1:8080}
BROKER=$(kafka_bootstrap)   # every node of the suite's Kafka
TOPIC=${EVENTS_TOPIC:-events}
TOKEN=$(<"$RUN_DIR/token")
passed=0 failed=0 failures=()
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

json_field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

# Every service binary answers --help and --version without starting (no
# token, no broker needed), and the README's configuration example runs as printed.
binaries_answer_help_and_the_readme_example_runs() {
  local bin out
  for bin in gateway users recommendation dashboard products pagecount mailer; do
    out=$(env -i "$ROOT/target/release/$bin" --version)
    [[ $out == "$bin "[0-9]* ]] || { echo "$bin --version: $out"; return 1; }
    out=$(env -i "$ROOT/target/release/$bin" --help)
    [[ $out == *"Usage: $bin"* && $out == *KAPPA__AUTH__ADMIN_TOKEN* ]] || { echo "$bin --help: $out"; return 1; }
    if env -i "$ROOT/target/release/$bin" --bogus >/dev/null 2>&1; then echo "$bin accepted --bogus"; return 1; fi
  done
  # The example, taken from the README's Configure section.
  local example
  example=$(awk '/^## Configure/ {on=1} on && /^```sh/ {code=1; next} code && /^```/ {exit} code' "$ROOT/README.md" | grep -v '^#')
  [[ $example == *target/release/gateway* ]] || { echo "no example found"; return 1; }
  # At most two minutes, whatever happens: the wait below is bounded.
  (cd "$ROOT" && timeout --kill-after=10 120 bash -c "$example" >"$TMP/example.log" 2>&1) &
  local pid=$!
  if ! wait_until 30 "the README's gateway on :18080" curl -fsS -o /dev/null http://127.0.0.1:18080/readyz; then
    cat "$TMP/example.log"; pkill -TERM -P "$pid" || true; kill -TERM "$pid" || true; return 1
  fi
  curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"type":"page_access","page":"/readme"}' http://127.0.0.1:18080/events | grep -q '"accepted":1'
  # The subshell may have exec'd into the gateway, or still be its parent.
  pkill -TERM -P "$pid" || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
}

# Every service the suite started answers its ops endpoints.
ops_endpoints() {
  local base
  for base in "$GATEWAY" http://127.0.0.1:8081 "${RECOMMENDATION:-http://127.0.0.1:8082}" \
    "${DASHBOARD:-http://127.0.0.1:8083}" http://127.0.0.1:8084 http://127.0.0.1:8086 http://127.0.0.1:8087 \
    http://127.0.0.1:8088 http://127.0.0.1:8089 http://127.0.0.1:8090 http://127.0.0.1:8091 \
    http://127.0.0.1:8085 http://127.0.0.1:8185 http://127.0.0.1:8186; do
    # Whole bodies first: `curl | grep -q` fails under pipefail when grep stops reading early.
    [[ $(curl -fsS "$base/healthz") == *'"ok"'* ]]
    [[ $(curl -fsS "$base/readyz") == *'"ready"'* ]]
    [[ $(curl -fsS "$base/metrics") == *kappa_http_requests_total* ]]
  done
}

kcat_and_console_producer_write_events() {
  local tag; tag=$(cat /proc/sys/kernel/random/uuid)
  local before; before=$(kcat -Q -b "$BROKER" -t "$TOPIC:0:-1" 2>/dev/null | awk '{print $NF}')
  echo "smoke-u2:{\"type\":\"interaction\",\"user_id\":\"smoke-u2\",\"product_id\":\"kcat-$tag\",\"action\":\"click\"}" \
    | kcat -P -b "$BROKER" -t "$TOPIC" -K: -p 0
  echo "smoke-u2:{\"type\":\"interaction\",\"user_id\":\"smoke-u2\",\"product_id\":\"console-$tag\",\"action\":\"click\"}" \
    | "$ROOT/scripts/kafka-cli.sh" console-producer --bootstrap-server "$BROKER" --topic "$TOPIC" \
        --property parse.key=true --property key.separator=: --property partitioner.class=org.apache.kafka.clients.producer.RoundRobinPartitioner >/dev/null
  # Read whole, then searched: `kcat | grep -q` fails under pipefail when
  # grep stops reading first (kcat gets SIGPIPE).
  local read
  read=$(kcat -C -b "$BROKER" -t "$TOPIC" -p 0 -o "$before" -c 1 -e -q)
  [[ $read == *"kcat-$tag"* ]] || return 1
  # The console producer chose the partition; look in all of them.
  read=$(kcat -C -b "$BROKER" -t "$TOPIC" -o -20 -e -q)
  [[ $read == *"console-$tag"* ]]
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
  # This run's numbers, asked by its id: a scheduled or threshold replay
  # may have become the current run since.
  [[ $(curl -fsS "$dash/api/metrics/daily?run=$id" | json_field '["run_id"]') == "$id" ]]
}

# A user created over HTTP, a mail request typed into kcat: one mail from each
# worker in Mailpit, to the user's address.
mail_from_both_workers() {
  local tag; tag=$(cat /proc/sys/kernel/random/uuid)
  local user="smoke-$tag"
  curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"id\":\"$user\",\"email\":\"$user@example.com\"}" http://127.0.0.1:8081/users >/dev/null
  echo "$user:{\"type\":\"mail_requested\",\"user_id\":\"$user\",\"subject\":\"smoke $tag\",\"body\":\"hello\"}" \
    | kcat -P -b "$BROKER" -t "$TOPIC" -K: -X partitioner=murmur2_random
  local deadline=$((SECONDS + 60)) found
  until found=$(curl -fsS "http://127.0.0.1:8025/api/v1/search?query=to:$user@example.com" | json_field '["messages_count"]') \
    && ((found == 2)); do
    ((SECONDS < deadline)) || { echo "$found mail(s) for $user"; return 1; }
    sleep 0.2
  done
}

# A product uploaded with curl -F (a real PNG and the MP4 fixture) goes
# through the three branches and the creator: active, with a thumbnail.
product_through_the_dag() {
  python3 -c 'import zlib,struct,sys
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes((x * 4) % 256 for x in range(96 * 3)) for _ in range(64))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 96, 64, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' >"$TMP/p.png"
  local id
  id=$(curl -fsS -H "Authorization: Bearer $TOKEN" "$GATEWAY/products" \
    -F 'metadata={"title":"Smoke lamp","price":"9.90","currency":"EUR"};type=application/json' \
    -F "image=@$TMP/p.png;type=image/png" \
    -F "video=@$ROOT/services/products/tests/fixtures/clip.mp4;type=video/mp4" | json_field '["product_id"]')
  local deadline=$((SECONDS + 60)) status
  until status=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:8084/products/$id" | json_field '["status"]') \
    && [[ $status != pending ]]; do
    ((SECONDS < deadline)) || { echo "product $id still pending"; return 1; }
    sleep 0.2
  done
  [[ $status == active ]] || { echo "product $id is $status"; return 1; }
  curl -fsS -H "Authorization: Bearer $TOKEN" -o "$TMP/t.jpg" -w '%{content_type}' \
    "http://127.0.0.1:8084/products/$id/thumbnail" | grep -q image/jpeg
  [[ $(head -c 2 "$TMP/t.jpg" | od -An -tx1 | tr -d ' ') == ffd8 ]]
}

# Access-log lines typed into kcat, a MapReduce job started with curl: it
# succeeds and counts the page exactly.
mapreduce_job() {
  local tag; tag=$(cat /proc/sys/kernel/random/uuid)
  for _ in 1 2 3; do
    echo "192.0.2.7 - - [26/Nov/2026:10:00:00 +0000] \"GET /smoke-$tag?x=1 HTTP/1.1\" 200 12 \"-\" \"smoke\""
  done | kcat -P -b "$BROKER" -t access-logs
  local id
  id=$(curl -fsS -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{}' \
    http://127.0.0.1:8085/jobs | json_field '["id"]')
  local deadline=$((SECONDS + 120)) state
  until state=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:8085/jobs/$id" | json_field '["state"]') \
    && [[ $state != running ]]; do
    ((SECONDS < deadline)) || { echo "job $id still running"; return 1; }
    sleep 0.3
  done
  [[ $state == succeeded ]] || { echo "job $id is $state"; return 1; }
  local count=0 after=""
  # Find the page among the job's pages (paged by count).
  count=$(python3 - "$id" "$tag" "$TOKEN" <<'PY'
import json, sys, urllib.request, urllib.parse
job, tag, token = sys.argv[1:4]
after = None
while True:
    url = f"http://127.0.0.1:8085/jobs/{job}/pages?limit=1000" + (f"&after={urllib.parse.quote(after)}" if after else "")
    body = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})))
    for row in body["pages"]:
        if row["page"] == f"/smoke-{tag}":
            print(row["count"]); sys.exit(0)
    after = body["next_after"]
    if not after:
        print(0); sys.exit(0)
PY
)
  ((count == 3)) || { echo "/smoke-$tag counted $count times, 3 expected"; return 1; }
}

check "every service answers /healthz, /readyz and /metrics" ops_endpoints
check "service binaries answer --help and --version; the README's configuration example runs" binaries_answer_help_and_the_readme_example_runs
check "kcat and Kafka's console producer write typed events" kcat_and_console_producer_write_events
check "an interaction typed into kcat shows in the recommendation API" recommendations_follow_the_stream
check "a replay requested over HTTP runs and its metrics are served" replay_on_demand
check "a user and a mail request are one mail from each worker in Mailpit" mail_from_both_workers
check "a product uploaded with curl -F becomes active through the DAG, with a thumbnail" product_through_the_dag
check "access-log lines typed into kcat are counted exactly by a MapReduce job started with curl" mapreduce_job

echo "smoke: $passed passed, $failed failed"
((failed == 0))
