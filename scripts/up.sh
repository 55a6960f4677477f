#!/usr/bin/env bash
# Run the suite: PostgreSQL and Kafka from the project's own scripts, the
# topics, a release build, and every service in the background.
# Idempotent: a second run starts only what is not running.
#   scripts/up.sh
# Env: KAPPA_PROFILE=release|dev (build profile, default release),
#      KAPPA_NO_BUILD=1 (start from the binaries already built),
#      KAPPA_READY_TIMEOUT (seconds per service, default 60),
#      KAFKA_BROKERS=3: a three-node Kafka cluster instead of one broker
#      (scripts/kafka.sh); every service is given all of its nodes,
#      INSTANCES_<NAME>=N (default 1) for any process of the suite, <NAME> its
#      name in upper case with '_' for '-' (INSTANCES_RECOMMENDATION,
#      INSTANCES_PRODUCTS_IMAGE, INSTANCES_PAGECOUNT_MAP, INSTANCES_MAILER_STATEFUL,
#      ...): instance i listens on the first one's port + 1000*(i-1) and
#      writes .run/<name>-i.pid; the instances of a worker share its
#      partitions through its consumer group.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
started_at=$SECONDS

SERVICES=()
for spec in "${SUITE_SERVICES[@]}"; do
  name=${spec%%:*} port=${spec##*:}
  SERVICES+=("$spec")
  var=INSTANCES_$(tr 'a-z-' 'A-Z_' <<<"$name")
  count=${!var:-1}
  [[ $count =~ ^[1-9][0-9]?$ ]] || die "$var must be a number from 1 to 99, not '$count'"
  for ((i = 2; i <= count; i++)); do
    SERVICES+=("$name-$i:$(instance_port "$port" "$i")")
  done
done
# The database holds positions in the stream (the workers' offsets, the
# replays' windows and ends, the jobs' offsets): they mean something for one
# Kafka cluster's topics only. The database is stamped with the cluster's id
# on first use; a start on another cluster (one broker after three, say)
# stops here instead of reading the new topics at the old positions.
stream_guard() {
  local id stamp psql=("$(pg_bin)/psql" -X -At -v ON_ERROR_STOP=1 postgres://kappa:kappa@127.0.0.1:5432/kappa)
  id=$("$ROOT/scripts/kafka.sh" cluster-id) || die "no Kafka cluster id"
  stamp=$("${psql[@]}" -c "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = current_database()")
  if [[ -z $stamp ]]; then
    "${psql[@]}" -c "COMMENT ON DATABASE kappa IS 'kafka cluster $id'" >/dev/null
  elif [[ $stamp != "kafka cluster $id" ]]; then
    die "the database kappa holds the state of another stream (${stamp}; these brokers are kafka cluster $id): start that Kafka again (KAFKA_BROKERS=1 or 3), or begin afresh with scripts/down.sh --reset"
  fi
}
PROFILE=${KAPPA_PROFILE:-release}
READY_TIMEOUT=${KAPPA_READY_TIMEOUT:-60}

"$ROOT/scripts/postgres.sh" install
"$ROOT/scripts/postgres.sh" start
"$ROOT/scripts/kafka.sh" start
"$ROOT/scripts/topics.sh"
BROKERS=$(kafka_bootstrap)
stream_guard
"$ROOT/scripts/mailpit.sh" start
apt_install_if_missing curl curl

# The admin token: generated once, kept in .run/token (mode 600).
TOKEN_FILE="$RUN_DIR/token"
if [[ ! -s $TOKEN_FILE ]]; then
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$TOKEN_FILE")
  log "generated admin token in $(rel "$TOKEN_FILE")"
fi

command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
BIN_DIR="$ROOT/target/$([[ $PROFILE == release ]] && echo release || echo debug)"
# KAPPA_NO_BUILD=1: start from the binaries already built (a fault scenario
# restarts what it killed, never rebuilds what it tests).
if [[ ${KAPPA_NO_BUILD:-0} == 1 ]]; then
  log "not building (KAPPA_NO_BUILD=1): binaries from $(rel "$BIN_DIR")"
else
  log "building the workspace ($PROFILE)"
  build=(cargo build --workspace --bins --quiet)
  [[ $PROFILE == release ]] && build+=(--release)
  (cd "$ROOT" && "${build[@]}")
fi

ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/readyz"; }

# The binary a process runs, and the settings it needs beyond the defaults;
# <name>-<i> is instance i of <name>.
binary_of() {
  case ${1%-[0-9]*} in
    mailer-*) echo mailer ;;
    products*) echo products ;;
    pagecount*) echo pagecount ;;
    *) echo "${1%-[0-9]*}" ;;
  esac
}
settings_of() {  # settings_of <name>: extra KAPPA__ variables, one per line
  local base=$1 instance=1
  [[ $1 =~ ^(.*)-([0-9]+)$ ]] && base=${BASH_REMATCH[1]} instance=${BASH_REMATCH[2]}
  case $base in
    mailer-stateless) echo "KAPPA__MAILER__MODE=stateless" ;;
    mailer-stateful)  # each instance keeps its own address store
      echo "KAPPA__MAILER__MODE=stateful"
      echo "KAPPA__MAILER__DATA_DIR=$RUN_DIR/$1" ;;
    products) echo "KAPPA__PRODUCTS__ROLE=api" ;;
    products-*)  # the DAG's workers; a branch's transactional id names its instance
      echo "KAPPA__PRODUCTS__ROLE=${base#products-}"
      echo "KAPPA__PRODUCTS__INSTANCE=$instance" ;;
    pagecount) echo "KAPPA__PAGECOUNT__ROLE=coordinator" ;;
    pagecount-*)
      echo "KAPPA__PAGECOUNT__ROLE=${base#pagecount-}"
      echo "KAPPA__PAGECOUNT__INSTANCE=$instance" ;;
  esac
}

for spec in "${SERVICES[@]}"; do
  name=${spec%%:*} port=${spec##*:}
  binary=$(binary_of "$name")
  pidfile="$RUN_DIR/$name.pid" logfile="$RUN_DIR/$name.log"
  # Running means: the pid lives, runs the binary just built, and answers on
  # its port. Anything less (a pid still dying after kill -9, an old binary
  # after a rebuild, a hung process) is stopped and started afresh.
  if current=$(service_state "$pidfile" "$port" "$BIN_DIR/$binary"); [[ $current == current ]]; then
    log "$name already running (pid $(<"$pidfile"))"
    continue
  fi
  if [[ $current != stopped ]]; then
    log "restarting $name (pid $(<"$pidfile"): $current)"
    stop_pidfile "$pidfile" 30
  fi
  log "starting $name on 127.0.0.1:$port (log $(rel "$logfile"))"
  # The listen address lives in the service's own config section.
  section=$(echo "$binary" | tr '[:lower:]' '[:upper:]')
  # setsid: the service outlives this shell; the pid file names the process itself.
  mapfile -t extra < <(settings_of "$name")
  env "KAPPA__${section}__ADDR=127.0.0.1:$port" KAPPA__KAFKA__BROKERS="$BROKERS" KAPPA__AUTH__ADMIN_TOKEN="$(<"$TOKEN_FILE")" "${extra[@]}" \
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$BIN_DIR/$binary" \
    </dev/null >>"$logfile" 2>&1 &
  wait_until 10 "pid file of $name" test -s "$pidfile" || die "$name did not start"
done

for spec in "${SERVICES[@]}"; do
  name=${spec%%:*} port=${spec##*:}
  if ! wait_until "$READY_TIMEOUT" "$name /readyz on :$port" ready "$port"; then
    tail -n 20 "$RUN_DIR/$name.log" >&2 || true
    die "$name is not ready; see $(rel "$RUN_DIR/$name.log")"
  fi
done

log "suite ready in $((SECONDS - started_at))s"
cat <<MSG
  gateway         http://127.0.0.1:8080   (POST /events, GET /claims/{token})
  users           http://127.0.0.1:8081   (POST/GET/PUT /users[/{id}])
  products        http://127.0.0.1:8084   (GET /products[/{id}], /products/{id}/thumbnail, /pending-joins; uploads: POST :8080/products)
  product DAG     :8088 image, :8089 video, :8090 metadata, :8091 creator   (health and metrics)
  pagecount       http://127.0.0.1:8085   (POST/GET /jobs, /jobs/{id}, /jobs/{id}/pages; mappers :8185, reducers :8186)
  mailers         http://127.0.0.1:8086 (stateless), :8087 (stateful)   (health and metrics)
  mailpit         http://127.0.0.1:8025   (the mails sent; SMTP on 127.0.0.1:1025)
  recommendation  http://127.0.0.1:8082   (GET /users/{id}/recommendations, /products/{id}/similar, /stats)
  dashboard       http://127.0.0.1:8083   (POST /api/replays, GET /api/metrics/daily, /api/products/top)
  kafka           $BROKERS   (topics: events, events.dlq, access-logs)
  postgres        postgres://kappa:kappa@127.0.0.1:5432/kappa
  admin token     $(rel "$TOKEN_FILE")   (curl -H "Authorization: Bearer \$(cat .run/token)" ...)
  logs, pids      .run/
MSG
