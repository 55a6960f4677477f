# Sourced (after lib.sh) by the bench and eval scripts: a topic and a database
# of the run's own on the suite's broker and Postgres, removed on exit with any
# background process the script registered in SCRATCH_PIDS.
#   scratch <name> <cargo package...>   builds the packages (release) and sets
#                                       TOPIC, DB, DB_URL, WORK (.run/<name>)
BROKER=127.0.0.1:9092
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
    --partitions 6 --replication-factor 1 --config retention.ms=-1 >/dev/null
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
