#!/usr/bin/env bash
# Test the suite: bring up what the tests need (scripts/up.sh), run every unit
# and integration test against the real broker and database, then an
# end-to-end smoke and the quick fault scenarios through the running services.
#   scripts/test.sh [cargo selection args, e.g. -p gateway]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Every step has a time limit: a hung step fails, named, with log tails
# (scripts/lib.sh `limit`); one test binary within KAPPA_TEST_LIMIT seconds.
limit 1800 "scripts/up.sh (build and start)" "$ROOT/scripts/up.sh"
# The dashboard's page is checked in a real browser, clicked through chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi

# Every test binary of the workspace, several at once: most tests wait on
# the broker, the database or a child process, so a 2-core box runs 4 of
# them side by side (KAPPA_TEST_JOBS). Each binary's output goes to
# .run/test-logs/<binary>.log, shown when it fails.
log "removing what killed test runs left behind (test databases and topics)"
limit 300 "scripts/clean-tests.sh" "$ROOT/scripts/clean-tests.sh"

log "building the workspace's tests"
LIST=$RUN_DIR/test-binaries.txt
(cd "$ROOT" && cargo test --workspace --no-run --quiet --message-format=json "$@") | python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(os.path.dirname(m["manifest_path"]), m["executable"])
' >"$LIST"
LOGS=$RUN_DIR/test-logs
rm -rf "$LOGS" && mkdir -p "$LOGS"
log "running $(wc -l <"$LIST") test binaries, ${KAPPA_TEST_JOBS:-4} at a time (logs in $(rel "$LOGS"))"
# One line per binary: "ok|FAIL <name> <seconds>s <summary>".
export LOGS
export KAPPA_TEST_LIMIT=${KAPPA_TEST_LIMIT:-600}
xargs -P "${KAPPA_TEST_JOBS:-4}" -L 1 bash -c '
  dir=$0 bin=$1 name=$(basename "$1")
  start=$SECONDS rc=0
  (cd "$dir" && timeout --kill-after=15 "$KAPPA_TEST_LIMIT" "$bin") >"$LOGS/$name.log" 2>&1 || rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status=FAIL; echo "HUNG: $name ran past its limit of ${KAPPA_TEST_LIMIT}s and was killed" >>"$LOGS/$name.log" ;;
    *) status=FAIL ;;
  esac
  echo "$status $name $((SECONDS - start))s $(grep -E "^(test result:|HUNG:)" "$LOGS/$name.log" | tail -n 1)"
' <"$LIST" | tee "$RUN_DIR/test-summary.txt"
if grep -q '^FAIL' "$RUN_DIR/test-summary.txt"; then
  # Why each test failed first (the panic and the lines after it), then
  # the end of the binary's output without backtrace frames: a tail alone
  # can be all backtrace and log lines.
  for name in $(awk '/^FAIL/ {print $2}' "$RUN_DIR/test-summary.txt"); do
    log "---- $name: the panics ----"
    grep -A 8 'panicked at' "$LOGS/$name.log" | cut -c1-800 | head -n 80 >&2 || true
    log "---- $name: the end of its output ----"
    grep -vE '^test .* ok$|^ +at |^ +[0-9]+: ' "$LOGS/$name.log" | cut -c1-800 | tail -n 40 >&2
  done
  die "test binaries failed: $(awk '/^FAIL/ {print $2}' "$RUN_DIR/test-summary.txt" | tr '\n' ' ')"
fi

log "up.sh restarts what is stale and keeps what is current"
limit 600 "scripts/check-up.sh" "$ROOT/scripts/check-up.sh"
log "postgres.sh recovers after its postmaster is killed"
limit 600 "scripts/check-postgres.sh" "$ROOT/scripts/check-postgres.sh"

log "end-to-end smoke"
limit 600 "scripts/smoke.sh" "$ROOT/scripts/smoke.sh"
log "the fault scenarios, the crashes included (worker SIGKILL, broker and PostgreSQL restarts, users down)"
limit 2400 "scripts/scenarios.sh --all" "$ROOT/scripts/scenarios.sh" --all
