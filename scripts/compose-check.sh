#!/usr/bin/env bash
# `docker compose up`, proved without Docker: there is no engine on the dev
# and CI machines, so scripts/validate-compose.sh can only parse the file.
# This check runs what the file says, the way compose would, and then does
# what a user does with the started suite.
#   scripts/compose-check.sh
# Env: COMPOSE_CHECK_UP_TIMEOUT (seconds until every service is up, default 300);
#      COMPOSE_CHECK_OVERRIDE: extra compose files, space-separated, merged as
#      `docker compose -f docker-compose.yml -f <file> ...` would.
#
# The compose model comes from `docker-compose config` (anchors, merges and
# ${...} resolved); scripts/compose/engine.py runs it: every service in its
# own network, mount and UTS namespaces on a bridge of the check's own, with
# the environment, command, user, working directory and volumes the model and
# the image give it, in depends_on order with the conditions, health checks
# and restart policies, and the published ports forwarded in a "host"
# namespace of the check's own (the dev suite may hold the real 127.0.0.1
# ports). Nothing about the suite is written here: a change to
# docker-compose.yml or to the Dockerfile's runtime stage changes what runs.
# Then, from that host namespace through the published ports: an event
# through the gateway, a product upload, a mail, a page-count job started
# through the dashboard, a replay; and every service still healthy.
# Needs root (namespaces, bind mounts); the suite of scripts/up.sh is left
# alone. Logs: .run/compose-check/logs/<service>.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

CHECK_DIR=$RUN_DIR/compose-check
LOG_DIR=$CHECK_DIR/logs
STATE=$CHECK_DIR/state.json
NS_PREFIX=kappa-cc-
HOST_NS=${NS_PREFIX}-host   # "kappa-cc--host": no service name starts with "-"
ENGINE=$ROOT/scripts/compose/engine.py
PY=/usr/bin/python3         # Debian's python3: python3-yaml is installed for it
UP_TIMEOUT=${COMPOSE_CHECK_UP_TIMEOUT:-300}
started=$SECONDS
engine_pid=""
TMP=""

emulation_notes() {
  cat >&2 <<'TXT'
[compose-check.sh] What is emulated, and what cannot be:
  - images are not built. kappa-jobs/* = the Dockerfile's runtime stage read
    narrowly (USER and its uid, ENV, WORKDIR, ENTRYPOINT, COPY, the directories
    its RUN lines make and their owners) with the binaries of target/release
    (whatever was built last; cargo is not run); its apt-get steps are not run
    (the host's curl and CA certificates serve). apache/kafka, postgres and
    axllent/mailpit = this host's Java 17 + Kafka jars, Debian's PostgreSQL,
    Mailpit built from its Go module; their entrypoints re-enacted for what
    this compose file uses of them.
  - isolation: own network, mount and UTS namespaces only: no PID, IPC, user
    or cgroup namespace, no dropped capabilities, seccomp or resource limits;
    the host's root filesystem shows under each container's own paths.
  - network: a bridge of the check's own, no outside access, names from
    /etc/hosts instead of Docker's DNS; published ports by a forwarder in a
    namespace standing for the host (not iptables or docker-proxy).
  - restart and health: re-enacted by a supervisor (Docker's documented
    backoff: 100 ms doubling to 1 min, reset after 10 s of running), not
    dockerd's exact timing; probes run with nsenter in the container's
    namespaces, environment and user.
TXT
}

# A process of ours is alive (not a zombie waiting for `wait`).
alive() { [[ -n $1 && -e /proc/$1 && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Anything a run leaves behind: our namespaces and their processes, their
# /etc/netns entries, the mount points made on the host, the image,
# container and volume directories. The lock makes every match ours.
cleanup_leftovers() {
  local ns p
  while read -r ns _; do
    [[ $ns == "$NS_PREFIX"* ]] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done < <(ip netns list 2>/dev/null)
  if [[ -f $CHECK_DIR/created-paths ]]; then
    while read -r p; do
      if [[ -d $p && ! -L $p ]]; then
        rmdir "$p" 2>/dev/null || log "WARNING: $p is not empty; left in place"
      elif [[ -f $p && ! -s $p ]]; then
        rm -f "$p"
      fi
    done < <(tac "$CHECK_DIR/created-paths")
    rm -f "$CHECK_DIR/created-paths"
  fi
  rm -rf "$CHECK_DIR/images" "$CHECK_DIR/containers" "$CHECK_DIR/volumes"
}

on_exit() {
  local rc=$?
  if alive "$engine_pid"; then
    # The engine stops the services (dependents first, 10 s grace each) and
    # removes what it made; SIGKILL only if that hangs.
    kill -TERM "$engine_pid" 2>/dev/null || true
    local end=$((SECONDS + 120))
    while alive "$engine_pid" && ((SECONDS < end)); do sleep 0.5; done
    if alive "$engine_pid"; then
      log "HUNG: the engine did not stop within 120 s; SIGKILL"
      kill -KILL "$engine_pid" 2>/dev/null || true
    fi
  fi
  cleanup_leftovers
  [[ -n $TMP ]] && rm -rf "$TMP"
  log "$( ((rc == 0)) && echo passed || echo "FAILED (exit $rc)") after $((SECONDS - started)) s; logs in $(rel "$LOG_DIR")"
  exit "$rc"
}

((EUID == 0)) || die "run as root: network namespaces, bind mounts and setpriv need it"
mkdir -p "$CHECK_DIR"
exec 9>"$CHECK_DIR.lock"
flock -n 9 || die "another scripts/compose-check.sh is running (lock $(rel "$CHECK_DIR.lock"))"

for tool in ip unshare nsenter setpriv; do
  command -v "$tool" >/dev/null || die "$tool not found (iproute2, util-linux)"
done
apt_install_if_missing docker-compose docker-compose
"$PY" -c 'import yaml' 2>/dev/null || apt_install python3-yaml
apt_install_if_missing curl curl
apt_install_if_missing kcat kcat
# The images' stand-ins: Kafka's jars (and java), PostgreSQL, Mailpit.
"$ROOT/scripts/kafka.sh" fetch
[[ -n $(pg_bin) && -x $(pg_bin)/initdb ]] || "$ROOT/scripts/postgres.sh" install
"$ROOT/scripts/mailpit.sh" install

# A killed run's leftovers go before anything starts (we hold the lock).
cleanup_leftovers
rm -rf "$LOG_DIR" "$STATE"
mkdir -p "$LOG_DIR"
trap on_exit EXIT
# Killed (a CI time limit, Ctrl-C): fail, and let on_exit stop everything.
trap 'log "interrupted"; exit 143' TERM
trap 'log "interrupted"; exit 130' INT
TMP=$(mktemp -d)

# The model, as compose sees it. A token of this run's own: the file refuses
# to start without one.
KAPPA_ADMIN_TOKEN=$(head -c 32 /dev/urandom | base64 | tr -d '/+=\n')
export KAPPA_ADMIN_TOKEN
MODEL=$CHECK_DIR/model.yml
files=(-f docker-compose.yml)
for f in ${COMPOSE_CHECK_OVERRIDE:-}; do files+=(-f "$f"); done
docker-compose "${files[@]}" config >"$MODEL" 2>"$TMP/config.err" \
  || { cat "$TMP/config.err" >&2; die "docker-compose config failed"; }
chmod 600 "$MODEL"   # it holds the token

# The binaries the images start, by the SERVICE build argument: built by
# scripts/up.sh; this check never runs cargo (someone may be building).
mapfile -t wanted < <("$PY" - "$MODEL" <<'PY'
import sys, yaml
for s in (yaml.safe_load(open(sys.argv[1]))["services"] or {}).values():
    args = (s.get("build") or {}).get("args") or {}
    if "SERVICE" in args:
        print(args["SERVICE"])
PY
)
missing=()
for bin in $(printf '%s\n' "${wanted[@]}" | sort -u); do
  [[ -x $ROOT/target/release/$bin ]] || missing+=("target/release/$bin")
done
((${#missing[@]} == 0)) || die "missing release binaries: ${missing[*]} (scripts/up.sh builds them; this check does not run cargo)"
# `up --build` builds every image from the source as it is now; a binary
# older than the newest migration lacks it (sqlx embeds them at build time),
# and the services then refuse the database the newer ones migrated.
newest=$(find migrations -type f -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1)
for bin in $(printf '%s\n' "${wanted[@]}" | sort -u); do
  if [[ -n $newest ]] && (($(stat -c %Y "target/release/$bin") < ${newest%%.*})); then
    log "WARNING: target/release/$bin predates ${newest#* } (the images would be built from the current source; rebuild with scripts/up.sh)"
  fi
done

emulation_notes
log "docker compose up (emulated) from $(rel "$MODEL"); logs in $(rel "$LOG_DIR")"
"$PY" "$ENGINE" up --root "$ROOT" --model "$MODEL" --run-dir "$CHECK_DIR" \
  --project "$(basename "$ROOT" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')" \
  --host-ns "$HOST_NS" --ns-prefix "$NS_PREFIX" --up-timeout "$UP_TIMEOUT" \
  > >(tee -a "$LOG_DIR/engine.log" >&2) 2>&1 &
engine_pid=$!

state() {  # state <python expression on s, the state>
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$STATE" "$1" 2>/dev/null
}
deadline=$((SECONDS + UP_TIMEOUT + 60))
until [[ $(state 's["phase"]' || true) == up ]]; do
  if ! alive "$engine_pid"; then
    wait "$engine_pid" || true
    engine_pid=""
    # The first line names the service; the engine printed the details above.
    die "docker compose up (emulated) failed: $(state 's["error"].splitlines()[0]' || echo 'the engine stopped; see above')"
  fi
  ((SECONDS < deadline)) || die "HUNG: the engine reported no result within $((UP_TIMEOUT + 60)) s"
  sleep 1
done
log "every service up after $(state 's["up_after"]') s; now what a user does, from namespace $HOST_NS through the published ports"

# --- what a user does after `docker compose up` ---------------------------------------

H() { ip netns exec "$HOST_NS" "$@"; }   # a command on the "host"
TOKEN=$KAPPA_ADMIN_TOKEN
AUTH="Authorization: Bearer $TOKEN"
# http <method> <url> [curl args]: prints the status code; the body is in $TMP/body.
http() {
  local method=$1 url=$2; shift 2
  H curl -sS --max-time 20 -o "$TMP/body" -w '%{http_code}' -X "$method" "$@" "$url" 2>"$TMP/curl.err" \
    || { cat "$TMP/curl.err" >"$TMP/body"; echo 000; }
}
body() { tr -d '\n' <"$TMP/body" | head -c 400; }
field() { "$PY" -c 'import json, sys; d = json.load(open(sys.argv[2])); print(eval("d" + sys.argv[1]))' "$1" "$TMP/body"; }
uuid() { cat /proc/sys/kernel/random/uuid; }
# settled <url> <key> <waiting> <seconds> <what>: GETs <url> (with the token)
# until its field <key> is neither <waiting> nor unreadable; prints it.
settled() {
  local url=$1 key=$2 waiting=$3 seconds=$4 what=$5 code value end=$((SECONDS + $4))
  while :; do
    code=$(http GET "$url" -H "$AUTH")
    value=$([[ $code == 200 ]] && field "[\"$key\"]" || echo "?")
    [[ $value == "$waiting" || $value == "?" ]] || { echo "$value"; return 0; }
    ((SECONDS < end)) || { why "$what still $value after $seconds s ($code): $(body)" >&2; return 1; }
    sleep 0.5
  done
}
# why <reason>: the reason, after the log lines of the request the answer
# names (an error answer carries a request_id; its cause is in the log).
why() {
  local rid
  rid=$(sed -n 's/.*"request_id":"\([^"]*\)".*/\1/p' "$TMP/body" 2>/dev/null | head -n 1)
  if [[ -n $rid ]]; then
    grep -h -- "$rid" "$LOG_DIR"/*.log 2>/dev/null | grep -v '"target":"access"' | cut -c1-600 | head -n 3 | sed 's/^/log: /'
  fi
  echo "$1"
}
passed=0 failed=0 failures=()

# Two interactions through the gateway (:8080); the recommendation service
# (:8082), reading them from kafka:19092, pairs the two products.
event_through_the_gateway() {
  local tag user a b code
  tag=$(uuid) user=cc-$tag a=cc-a-$tag b=cc-b-$tag
  code=$(http POST http://127.0.0.1:8080/events -H "$AUTH" -H 'content-type: application/x-ndjson' --data-binary \
    "{\"type\":\"interaction\",\"user_id\":\"$user\",\"product_id\":\"$a\",\"action\":\"view\"}
{\"type\":\"interaction\",\"user_id\":\"$user\",\"product_id\":\"$b\",\"action\":\"view\"}")
  [[ $code == 202 && $(field '["accepted"]') == 2 ]] || { why "gateway: POST /events answered $code: $(body)"; return 1; }
  local end=$((SECONDS + 60))
  until [[ $(http GET "http://127.0.0.1:8082/products/$a/similar") == 200 ]] && grep -q "$b" "$TMP/body"; do
    ((SECONDS < end)) || { why "recommendation: /products/$a/similar never listed $b: $(body)"; return 1; }
    sleep 0.5
  done
}

# A product with a PNG and the MP4 fixture, uploaded to the gateway, becomes
# active through the image, video and metadata workers and the creator (:8084).
product_upload() {
  "$PY" -c 'import zlib, struct, sys
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes((x * 5) % 256 for x in range(64 * 3)) for _ in range(48))
sys.stdout.buffer.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' >"$TMP/p.png"
  local code id status
  code=$(http POST http://127.0.0.1:8080/products -H "$AUTH" \
    -F 'metadata={"title":"Compose lamp","price":"9.90","currency":"EUR"};type=application/json' \
    -F "image=@$TMP/p.png;type=image/png" \
    -F "video=@$ROOT/services/products/tests/fixtures/clip.mp4;type=video/mp4")
  [[ $code == 202 ]] || { why "gateway: POST /products answered $code: $(body)"; return 1; }
  id=$(field '["product_id"]')
  status=$(settled "http://127.0.0.1:8084/products/$id" status pending 90 "products: $id")
  [[ $status == active ]] || { why "products: $id is $status: $(body)"; return 1; }
  code=$(http GET "http://127.0.0.1:8084/products/$id/thumbnail" -H "$AUTH")
  [[ $code == 200 && $(head -c 2 "$TMP/body" | od -An -tx1 | tr -d ' ') == ffd8 ]] \
    || { why "products: the thumbnail of $id answered $code"; return 1; }
}

# A user (users, :8081) and a mail request typed into kcat on the published
# broker port (EXTERNAL listener, advertised as 127.0.0.1:9092): one mail
# from each mail worker in Mailpit (:8025), which they reach as mailpit:1025.
mail_request() {
  local tag user code found
  tag=$(uuid) user=cc-$tag
  code=$(http POST http://127.0.0.1:8081/users -H "$AUTH" -H 'content-type: application/json' \
    -d "{\"id\":\"$user\",\"email\":\"$user@example.com\"}")
  [[ $code == 201 ]] || { why "users: POST /users answered $code: $(body)"; return 1; }
  echo "$user:{\"type\":\"mail_requested\",\"user_id\":\"$user\",\"subject\":\"compose $tag\",\"body\":\"hello\"}" \
    | H kcat -P -b 127.0.0.1:9092 -t events -K: -X partitioner=murmur2_random -m 30 \
    || { why "kcat could not produce to 127.0.0.1:9092"; return 1; }
  local end=$((SECONDS + 90))
  until code=$(http GET "http://127.0.0.1:8025/api/v1/search?query=to:$user@example.com") && [[ $code == 200 ]] \
    && found=$(field '["messages_count"]') && ((found == 2)); do
    ((SECONDS < end)) || { why "mailpit: ${found:-no} mail(s) to $user@example.com after 90 s, 2 expected ($code)"; return 1; }
    sleep 0.5
  done
}

# Access-log lines into kcat; a page-count job started through the dashboard
# (:8083, which calls the coordinator as compose's pagecount:8080); the
# coordinator (:8085) runs it to the end and counts the page exactly.
pagecount_through_the_dashboard() {
  local tag code id state count
  tag=$(uuid)
  for _ in 1 2 3; do
    echo "192.0.2.7 - - [26/Nov/2026:10:00:00 +0000] \"GET /cc-$tag?x=1 HTTP/1.1\" 200 12 \"-\" \"compose-check\""
  done | H kcat -P -b 127.0.0.1:9092 -t access-logs -m 30 || { why "kcat could not produce to access-logs"; return 1; }
  code=$(http POST http://127.0.0.1:8083/api/mapreduce/jobs -H "$AUTH")
  [[ $code == 202 ]] || { why "dashboard: POST /api/mapreduce/jobs answered $code: $(body)"; return 1; }
  id=$(field '["id"]')
  state=$(settled "http://127.0.0.1:8085/jobs/$id" state running 150 "pagecount: job $id")
  [[ $state == succeeded ]] || { why "pagecount: job $id is $state: $(body)"; return 1; }
  count=$(H "$PY" - "$id" "/cc-$tag" "$TOKEN" <<'PY'
import json, sys, urllib.parse, urllib.request
job, page, token = sys.argv[1:4]
after = None
while True:
    url = f"http://127.0.0.1:8085/jobs/{job}/pages?limit=1000" + (f"&after={urllib.parse.quote(after)}" if after else "")
    body = json.load(urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}), timeout=20))
    for row in body["pages"]:
        if row["page"] == page:
            print(row["count"]); sys.exit(0)
    after = body.get("next_after")
    if not after:
        print(0); sys.exit(0)
PY
)
  ((count == 3)) || { why "pagecount: job $id counted /cc-$tag $count times, 3 expected"; return 1; }
}

# A full replay requested on the dashboard runs to the end; its numbers are served.
replay() {
  local code id state
  code=$(http POST http://127.0.0.1:8083/api/replays -H "$AUTH" -H 'content-type: application/json' -d '{"from":"earliest"}')
  [[ $code == 202 ]] || { why "dashboard: POST /api/replays answered $code: $(body)"; return 1; }
  id=$(field '["id"]')
  local end=$((SECONDS + 120))
  while :; do
    code=$(http GET "http://127.0.0.1:8083/api/replays/$id")
    state=$([[ $code == 200 ]] && field '["state"]' || echo "?")
    [[ $state == succeeded || $state == failed ]] && break
    ((SECONDS < end)) || { why "dashboard: replay $id still $state after 120 s: $(body)"; return 1; }
    sleep 0.5
  done
  [[ $state == succeeded ]] || { why "dashboard: replay $id $state: $(body)"; return 1; }
  code=$(http GET "http://127.0.0.1:8083/api/metrics/daily?run=$id")
  [[ $code == 200 && $(field '["run_id"]') == "$id" ]] || { why "dashboard: /api/metrics/daily?run=$id answered $code: $(body)"; return 1; }
}

check "an event sent through the gateway reaches the recommendation service" event_through_the_gateway
check "a product uploaded to the gateway becomes active through the DAG, with a thumbnail" product_upload
check "a user and a mail request give one mail from each worker in Mailpit" mail_request
check "a page-count job started through the dashboard finishes and counts exactly" pagecount_through_the_dashboard
check "a replay requested on the dashboard succeeds and its metrics are served" replay

# Every service healthy (or, for a one-shot, exited 0) now, after all that.
# shellcheck disable=SC2016
if ! "$PY" - "$STATE" >&2 <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
bad = []
print(f"[compose-check.sh] {'service':<18} {'state':<9} {'health':<10} {'restarts':>8}  ports")
for name, v in sorted(s["services"].items()):
    ok = (v["state"] == "exited" and v["exit_codes"][-1:] == [0]) if v["one_shot"] else \
        (v["health"] == "healthy" if v["health"] is not None else v["state"] == "running")
    if not ok:
        bad.append(name)
    print(f"[compose-check.sh] {name:<18} {v['state']:<9} {str(v['health'] or '-'):<10} {v['restarts']:>8}  "
          f"{', '.join(v['ports']) or '-'}{'' if ok else '   <-- NOT OK'}")
if bad:
    print(f"[compose-check.sh] not healthy at the end: {', '.join(bad)}")
sys.exit(1 if bad else 0)
PY
then
  failed=$((failed + 1)); failures+=("every service healthy at the end: see the table above")
fi

echo "compose-check: $passed passed, $failed failed (services up after $(state 's["up_after"]') s, run $((SECONDS - started)) s)"
summary=$(printf '%s; ' "${failures[@]}")
((failed == 0)) || die "docker compose up (emulated): ${summary%; }"
