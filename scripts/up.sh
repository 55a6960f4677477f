#!/usr/bin/env bash
# Run the suite: PostgreSQL and Kafka from the project's own scripts, the
# topics, a release build, and every service in the background.
# Idempotent: a second run starts only what is not running.
#   scripts/up.sh
# Env: KAPPA_PROFILE=release|dev (build profile, default release),
#      KAPPA_NO_BUILD=1 (start from the binaries already built),
#      KAPPA_READY_TIMEOUT (seconds per service, default 60),
#      RECOMMENDATION_INSTANCES (default 1): more instances share the
#      partitions through the consumer group; instance i listens on
#      8082 + 100*(i-1) and writes .run/recommendation-i.pid;
#      IMAGE_INSTANCES (default 1): image workers of the product DAG,
#      instance i on 8088 + 100*(i-1), .run/products-image-i.pid;
#      MAP_INSTANCES, REDUCE_INSTANCES (default 1): MapReduce mappers and
#      reducers, instance i on 8185 / 8186 + 100*(i-1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
started_at=$SECONDS

SERVICES=("${SUITE_SERVICES[@]}")
for ((i = 2; i <= ${RECOMMENDATION_INSTANCES:-1}; i++)); do
  SERVICES+=("recommendation-$i:$((8082 + 100 * (i - 1)))")
done
for ((i = 2; i <= ${IMAGE_INSTANCES:-1}; i++)); do
  SERVICES+=("products-image-$i:$((8088 + 100 * (i - 1)))")
done
for ((i = 2; i <= ${MAP_INSTANCES:-1}; i++)); do
  SERVICES+=("pagecount-map-$i:$((8185 + 100 * (i - 1)))")
done
for ((i = 2; i <= ${REDUCE_INSTANCES:-1}; i++)); do
  SERVICES+=("pagecount-reduce-$i:$((8186 + 100 * (i - 1)))")
done
PROFILE=${KAPPA_PROFILE:-release}
READY_TIMEOUT=${KAPPA_READY_TIMEOUT:-60}

"$ROOT/scripts/postgres.sh" install
"$ROOT/scripts/postgres.sh" start
"$ROOT/scripts/kafka.sh" start
"$ROOT/scripts/topics.sh"
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

# The binary a process runs, and the settings it needs beyond the defaults.
binary_of() {
  case $1 in
    mailer-*) echo mailer ;;
    products*) echo products ;;
    pagecount*) echo pagecount ;;
    *) echo "${1%-[0-9]*}" ;;
  esac
}
settings_of() {  # settings_of <name>: extra KAPPA__ variables, one per line
  case $1 in
    mailer-stateless) echo "KAPPA__MAILER__MODE=stateless" ;;
    products) echo "KAPPA__PRODUCTS__ROLE=api" ;;
    pagecount) echo "KAPPA__PAGECOUNT__ROLE=coordinator" ;;
    pagecount-*)  # pagecount-<map|reduce>[-<instance>]
      local role=${1#pagecount-}
      echo "KAPPA__PAGECOUNT__ROLE=${role%%-*}"
      [[ $role == *-* ]] && echo "KAPPA__PAGECOUNT__INSTANCE=${role##*-}" ;;
    products-*)  # products-<role>[-<instance>]
      local rest=${1#products-}
      echo "KAPPA__PRODUCTS__ROLE=${rest%%-*}"
      [[ $rest == *-* ]] && echo "KAPPA__PRODUCTS__INSTANCE=${rest##*-}" ;;
    mailer-stateful)
      echo "KAPPA__MAILER__MODE=stateful"
      echo "KAPPA__MAILER__DATA_DIR=$RUN_DIR/mailer-stateful" ;;
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
  env "KAPPA__${section}__ADDR=127.0.0.1:$port" KAPPA__AUTH__ADMIN_TOKEN="$(<"$TOKEN_FILE")" "${extra[@]}" \
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
  kafka           127.0.0.1:9092          (topics: events, events.dlq, access-logs)
  postgres        postgres://kappa:kappa@127.0.0.1:5432/kappa
  admin token     $(rel "$TOKEN_FILE")   (curl -H "Authorization: Bearer \$(cat .run/token)" ...)
  logs, pids      .run/
MSG
