#!/usr/bin/env bash
# Stop what scripts/up.sh started, by pid file: the services first (they
# finish their work in hand on SIGTERM), then Kafka and PostgreSQL.
#   scripts/down.sh            everything
#   scripts/down.sh --services only the services; broker, database and Mailpit stay up
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shopt -s nullglob
for pidfile in "$RUN_DIR"/*.pid; do
  name=$(basename "$pidfile" .pid)
  case $name in kafka | postgres | mailpit) continue ;; esac
  if pid_alive "$pidfile"; then
    log "stopping $name (pid $(<"$pidfile"))"
  fi
  stop_pidfile "$pidfile" 30
done

if [[ ${1:-} != --services ]]; then
  "$ROOT/scripts/mailpit.sh" stop
  "$ROOT/scripts/kafka.sh" stop
  "$ROOT/scripts/postgres.sh" stop
fi
log "stopped"
