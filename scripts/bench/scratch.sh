# Sourced (after lib.sh) by the bench and eval scripts: a topic and a database
# of the run's own on the suite's broker and Postgres, removed on exit with any
# background process the script registered in SCRATCH_PIDS.
#   scratch <name> <cargo package...>   builds the packages (release) and sets
#                                       TOPIC, DB, DB_URL, WORK (.run/<name>)
#   start_recommendation <port>, committed, wait_committed <count> <deadline>
#                                       a recommendation service on them
BROKER=$(kafka_bootstrap)   # every node of the suite's Kafka
export KAPPA__KAFKA__BROKERS=$BROKER   # and the services the benchmarks start
export PGPASSWORD=kappa
SCRATCH_PIDS=()

scratch() {
  local name=$1 run_id packages=()
  shift
  run_id=$(date +%s)
  TOPIC=$name-$run_id
  DB=${name//-/_}_$run_id
  DB_URL=postgres://kappa:kappa@127.0.0.1:5432/$DB
  WORK=$RUN_DIR/$name
  mkdir -p "$WORK"
  kcat -L -b "$BROKER" -m 2 >/dev/null 2>&1 || die "no broker on $BROKER: run scripts/up.sh first"
  for p in "$@"; do packages+=(-p "$p"); done
  (cd "$ROOT" && cargo build --release --quiet "${packages[@]}")
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --create --topic "$TOPIC" \
    --partitions 6 --config retention.ms=-1 >/dev/null
  psql -h 127.0.0.1 -U kappa -d kappa -qc "CREATE DATABASE $DB" >/dev/null
  trap scratch_cleanup EXIT
}

scratch_cleanup() {
  ((${#SCRATCH_PIDS[@]} == 0)) || kill "${SCRATCH_PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete --topic "$TOPIC" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U kappa -d kappa -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}

# Records on $TOPIC (sum of its partitions' end offsets).
topic_count() {
  kcat -Q -b "$BROKER" $(for p in 0 1 2 3 4 5; do printf -- '-t %s:%s:-1 ' "$TOPIC" "$p"; done) 2>/dev/null \
    | awk '{s += $NF} END {print s}'
}

# start_recommendation <port>: a recommendation service (BENCH_RECOMMENDATION_BIN,
# default the release build) consuming $TOPIC into $DB_URL as group $TOPIC,
# token `bench`, log in $WORK/service.log; its pid in svc_pid.
start_recommendation() {
  REC_PORT=$1
  KAPPA__DATABASE__URL=$DB_URL KAPPA__RECOMMENDATION__ADDR=127.0.0.1:$REC_PORT \
    KAPPA__RECOMMENDATION__GROUP=$TOPIC KAPPA__AUTH__ADMIN_TOKEN=bench KAPPA__LOG__LEVEL=warn \
    "${BENCH_RECOMMENDATION_BIN:-$ROOT/target/release/recommendation}" >"$WORK/service.log" 2>&1 &
  svc_pid=$!
  SCRATCH_PIDS+=("$svc_pid")
}

# Records the recommendation committed: the offsets it stored (interactions
# applied, other records read past).
committed() {
  curl -fsS "http://127.0.0.1:$REC_PORT/stats" 2>/dev/null \
    | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["next_offsets"].values()))' 2>/dev/null || echo 0
}

# wait_committed <count> <deadline s>: until the service committed every record.
wait_committed() {
  local end=$((SECONDS + $2))
  until [[ $(committed) == "$1" ]]; do
    kill -0 "$svc_pid" 2>/dev/null || die "the service died; see $WORK/service.log"
    ((SECONDS < end)) || die "only $(committed) of $1 records committed after $2 s"
    sleep 0.1
  done
}
