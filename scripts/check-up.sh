#!/usr/bin/env bash
# Checks that scripts/up.sh means what it says by "running", against the
# started suite (scripts/test.sh runs it after up.sh, before the smoke):
#  1. a service killed with SIGKILL, and up.sh run at once, is started again;
#  2. a service whose binary was rebuilt after it started is restarted;
#  3. a service that is current is left alone (same pid).
# Prints "check-up: N passed, M failed" and fails if anything failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVICE=${CHECK_SERVICE:-gateway}
PORT=${CHECK_PORT:-8080}
BIN=$ROOT/target/${KAPPA_PROFILE:-release}/$SERVICE
PIDFILE=$RUN_DIR/$SERVICE.pid
passed=0 failed=0

outcome() {  # outcome <description> <command...>
  local what=$1; shift
  if "$@"; then
    passed=$((passed + 1)); log "ok   $what"
  else
    failed=$((failed + 1)); log "FAIL $what"
  fi
}
up() { "$ROOT/scripts/up.sh" >>"$RUN_DIR/check-up.log" 2>&1; }
healthy() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz"; }
pid() { cat "$PIDFILE"; }

[[ -s $PIDFILE ]] || die "$SERVICE is not running; run scripts/up.sh first"

killed_then_up() {
  local old; old=$(pid)
  kill -KILL "$old"
  up || return 1
  [[ $(pid) != "$old" ]] && healthy
}

rebuilt_then_up() {
  local old; old=$(pid)
  # A newer binary on disk than the process: what a rebuild leaves behind.
  touch "$BIN"
  up || return 1
  [[ $(pid) != "$old" ]] && healthy
}

current_is_kept() {
  local old; old=$(pid)
  up || return 1
  [[ $(pid) == "$old" ]] && healthy
}

outcome "$SERVICE killed with SIGKILL is started again by up.sh at once" killed_then_up
outcome "$SERVICE with a rebuilt binary is restarted by up.sh" rebuilt_then_up
outcome "$SERVICE that is current is left running by up.sh" current_is_kept

echo "check-up: $passed passed, $failed failed"
((failed == 0))
