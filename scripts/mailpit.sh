#!/usr/bin/env bash
# Mailpit, the development mail catcher: a real SMTP server (127.0.0.1:1025)
# with a web UI and an HTTP API (http://127.0.0.1:8025). Built from its Go
# module (no package or Docker engine needed) into .cache/go/bin.
#   scripts/mailpit.sh install|start|stop|kill|status
# Env (so a test can run a private one): MAILPIT_SMTP_PORT, MAILPIT_HTTP_PORT,
# MAILPIT_PID_FILE, MAILPIT_LOG_FILE, MAILPIT_DB_FILE, and MAILPIT_ARGS, its
# flags beyond address and database: by default --ignore-duplicate-ids (a
# second copy of a Message-ID is dropped, as a receiver that deduplicates
# would); tests and benchmarks pass their own to keep every copy.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAILPIT_VERSION=${MAILPIT_VERSION:-v1.33.1}
MAILPIT_SMTP_PORT=${MAILPIT_SMTP_PORT:-1025}
MAILPIT_HTTP_PORT=${MAILPIT_HTTP_PORT:-8025}
MAILPIT_PID_FILE=${MAILPIT_PID_FILE:-$RUN_DIR/mailpit.pid}
MAILPIT_LOG_FILE=${MAILPIT_LOG_FILE:-$RUN_DIR/mailpit.log}
MAILPIT_DB_FILE=${MAILPIT_DB_FILE:-$RUN_DIR/mailpit.db}
MAILPIT_ARGS=${MAILPIT_ARGS-"--ignore-duplicate-ids"}
GOBIN_DIR="$CACHE_DIR/go/bin"
BIN="$GOBIN_DIR/mailpit"
MARKER="$GOBIN_DIR/.mailpit-$MAILPIT_VERSION"

install() {
  [[ -x $BIN && -f $MARKER ]] && { log "Mailpit $MAILPIT_VERSION already built ($(rel "$BIN"))"; return 0; }
  command -v go >/dev/null || die "go not found: Mailpit is built with 'go install'"
  log "building Mailpit $MAILPIT_VERSION with go install (output in $(rel "$RUN_DIR/mailpit-build.log"))"
  mkdir -p "$GOBIN_DIR"
  GOBIN="$GOBIN_DIR" GOFLAGS=-mod=mod go install "github.com/axllent/mailpit@$MAILPIT_VERSION" \
    >"$RUN_DIR/mailpit-build.log" 2>&1 \
    || { tail -n 20 "$RUN_DIR/mailpit-build.log" >&2; die "go install of Mailpit failed"; }
  rm -f "$GOBIN_DIR"/.mailpit-*
  touch "$MARKER"
}

answers() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$MAILPIT_HTTP_PORT/livez"; }

start() {
  install
  if pid_alive "$MAILPIT_PID_FILE" && answers; then
    log "Mailpit already running (pid $(<"$MAILPIT_PID_FILE"))"
    return 0
  fi
  mkdir -p "$(dirname "$MAILPIT_PID_FILE")" "$(dirname "$MAILPIT_LOG_FILE")"
  log "starting Mailpit: SMTP 127.0.0.1:$MAILPIT_SMTP_PORT, UI/API http://127.0.0.1:$MAILPIT_HTTP_PORT"
  # Every message kept (no pruning at 500).
  # shellcheck disable=SC2086,SC2016  # MAILPIT_ARGS splits into flags on purpose
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$MAILPIT_PID_FILE" \
    "$BIN" --smtp "127.0.0.1:$MAILPIT_SMTP_PORT" --listen "127.0.0.1:$MAILPIT_HTTP_PORT" \
      --database "$MAILPIT_DB_FILE" --max 0 $MAILPIT_ARGS \
    </dev/null >>"$MAILPIT_LOG_FILE" 2>&1 &
  wait_until 30 "Mailpit on :$MAILPIT_HTTP_PORT" answers \
    || { tail -n 20 "$MAILPIT_LOG_FILE" >&2; die "Mailpit did not start"; }
}

stop() {
  stop_pidfile "$MAILPIT_PID_FILE" 10
}

# SIGKILL: a crash mid-conversation (its database keeps what it committed).
kill_now() {
  kill_pidfile "$MAILPIT_PID_FILE"
}

status() {
  if pid_alive "$MAILPIT_PID_FILE" && answers; then
    log "Mailpit running (pid $(<"$MAILPIT_PID_FILE"))"
  else
    log "Mailpit not running"; return 1
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  kill) kill_now ;;
  status) status ;;
  *) echo "usage: $0 {install|start|stop|kill|status}" >&2; exit 2 ;;
esac
