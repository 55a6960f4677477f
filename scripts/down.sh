#!/usr/bin/env bash
# Stop what scripts/up.sh started, by pid file: the services first (they
# finish their work in hand on SIGTERM), then Kafka and PostgreSQL.
#   scripts/down.sh            everything
#   scripts/down.sh --services only the services; broker, database and Mailpit stay up
#   scripts/down.sh --reset    everything, and forget the stream: the brokers'
#                              data (one broker's and the cluster's), the
#                              database kappa and the stateful mailers' address
#                              stores; the next scripts/up.sh starts empty
#                              (KAFKA_BROKERS picks the Kafka it starts)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:-}
case $mode in "" | --services | --reset) ;; *) die "usage: $0 [--services | --reset]" ;; esac

shopt -s nullglob
for pidfile in "$RUN_DIR"/*.pid; do
  name=$(basename "$pidfile" .pid)
  case $name in kafka | kafka-[0-9] | postgres | mailpit) continue ;; esac
  if pid_alive "$pidfile"; then
    log "stopping $name (pid $(<"$pidfile"))"
  fi
  stop_pidfile "$pidfile" 30
done
[[ $mode == --services ]] && { log "services stopped"; exit 0; }

if [[ $mode == --reset ]]; then
  "$ROOT/scripts/postgres.sh" start
  log "dropping the database kappa (scripts/up.sh creates it again)"
  "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 postgres://kappa:kappa@127.0.0.1:5432/postgres \
    -c "DROP DATABASE IF EXISTS kappa WITH (FORCE)"
fi
"$ROOT/scripts/mailpit.sh" stop
"$ROOT/scripts/kafka.sh" stop
"$ROOT/scripts/postgres.sh" stop
if [[ $mode == --reset ]]; then
  log "deleting the brokers' data and the address stores"
  rm -rf "$RUN_DIR"/kafka-data "$RUN_DIR"/kafka-[0-9] "$RUN_DIR"/kafka-brokers "$RUN_DIR"/mailer-stateful*/
fi
log "stopped"
