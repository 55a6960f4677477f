#!/usr/bin/env bash
# Checks that `scripts/postgres.sh start` brings a cluster back in ONE run after
# its postmaster was killed with SIGKILL (issue 12, item 8), on a PRIVATE
# cluster (port CHECK_PG_PORT, default 25433, in a temp dir removed at exit;
# the suite's cluster on 5432 is never touched):
#  1. postmaster killed while clients keep backends busy (a CPU-bound query
#     outlives it): start at once succeeds, the cluster answers, the committed
#     row is there and the uncommitted one is not;
#  2. postmaster killed with no client connected: same, and a second start
#     leaves the recovered cluster alone;
#  3. postmaster.pid names a live pid reused by an unrelated process of the
#     cluster's OS user: start succeeds and that process is left alive;
#  4. postmaster killed with a busy backend, and postmaster.pid names the
#     postmaster of ANOTHER private cluster (port CHECK_PG_PORT2, default
#     CHECK_PG_PORT+1): start recovers ours and leaves the other one untouched.
# Prints "check-postgres: N passed, M failed" and fails if anything failed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Below the ephemeral range (32768-60999): a client connection of the
# running suite may hold any port in it as its own local port, and a fixed
# port there fails to bind now and then ("Address already in use").
PORT=${CHECK_PG_PORT:-25433}
PORT2=${CHECK_PG_PORT2:-$((PORT + 1))}   # the second cluster of case 4
for p in "$PORT" "$PORT2"; do
  [[ $p =~ ^[0-9]+$ && $p != 5432 ]] || die "CHECK_PG_PORT(2) must be ports other than 5432 (the suite's cluster), got '$p'"
done
[[ $PORT != "$PORT2" ]] || die "CHECK_PG_PORT and CHECK_PG_PORT2 must differ"
PW=${PG_SUPERUSER_PASSWORD:-postgres}   # what postgres.sh's initdb sets for the superuser
LOG=$RUN_DIR/check-postgres.log         # postgres.sh and client output
: >"$LOG"
passed=0 failed=0

# Refuse a port something already listens on: we would test someone else's server.
for p in "$PORT" "$PORT2"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "127.0.0.1:$p is in use; set CHECK_PG_PORT / CHECK_PG_PORT2 to free ports"
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-postgres.XXXXXX")
export PG_PORT=$PORT

outcome() {  # outcome <description> <command...>; returns the command's status
  local what=$1; shift
  if "$@"; then
    passed=$((passed + 1)); log "ok   $what"
  else
    failed=$((failed + 1)); log "FAIL $what"
    log "---- last lines of $(rel "$LOG") ----"; tail -n 12 "$LOG" >&2
    return 1
  fi
}

# Every case gets its own cluster (data, socket, log, pid file under $TMP/<name>).
use_cluster() {
  export PG_DATA_DIR=$TMP/$1/data PG_PID_FILE=$TMP/$1/postgres.pid \
    PG_LOG_FILE=$TMP/$1/postgres.log PG_SOCKET_DIR=$TMP/$1/sock
  mkdir -p "$TMP/$1"
}
pg() { "$ROOT/scripts/postgres.sh" "$@" >>"$LOG" 2>&1; }
q() {  # q <sql>: one query over TCP as the superuser, unaligned output
  PGPASSWORD=$PW PGCONNECT_TIMEOUT=5 "$(pg_bin)/psql" -X -qAt -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "$1" 2>>"$LOG"
}
client() {  # client <sql> [PGOPTIONS]: a background session kept busy with <sql>
  PGPASSWORD=$PW PGOPTIONS=${2:-} "$(pg_bin)/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
    -c "$1" >>"$LOG" 2>&1 &
}
postmaster_pid() { head -n 1 "$PG_DATA_DIR/postmaster.pid" 2>/dev/null; }

# PIDs of the processes of the cluster in $1: a postgres binary whose working
# directory is that data dir (the postmaster chdirs there, its children inherit
# it). Only used on this check's own temp data dirs.
cluster_pids() {
  local dir=$1 p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [[ ${exe% (deleted)} == */postgres ]] || continue
    [[ $(readlink "$p/cwd" 2>/dev/null) == "$dir" ]] && echo "${p#/proc/}"
  done
  return 0
}
cluster_gone() { [[ -z $(cluster_pids "$1") ]]; }

# Stop the current case's cluster and leave nothing of it behind: processes,
# the SysV segment a killed postmaster leaves (named in postmaster.pid line 7,
# read first: `postgres.sh stop` removes a stale postmaster.pid).
destroy_cluster() {
  local dir=${PG_DATA_DIR:-} pids key='' id=''
  [[ -n $dir && -d $dir ]] || return 0
  read -r key id < <(sed -n 7p "$dir/postmaster.pid" 2>/dev/null) || true
  pg stop || true
  pids=$(cluster_pids "$dir")
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -KILL $pids 2>/dev/null || true
    wait_until 10 "processes of $dir to exit" cluster_gone "$dir" || log "processes of $dir survived SIGKILL"
  fi
  if [[ $key =~ ^[0-9]+$ && $id =~ ^[0-9]+$ ]] \
    && awk -v k="$key" -v i="$id" '$1 == k && $2 == i && $7 == 0 {f = 1} END {exit !f}' /proc/sysvipc/shm; then
    ipcrm -m "$id" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

cleanup() {
  local j d
  # Our background jobs only: psql clients and the decoy process.
  for j in $(jobs -pr); do kill -TERM "$j" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "$TMP"/*/; do
    [[ -d $d/data ]] || continue
    use_cluster "$(basename "$d")"
    destroy_cluster
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# fresh_cluster <name> [then...]: a new cluster with one committed row
# `<name>-committed`, then run <then...> (more setup) if given.
fresh_cluster() {
  local name=$1; shift
  use_cluster "$name"
  pg start && ready && q "CREATE TABLE crashcheck(v text); INSERT INTO crashcheck VALUES ('$name-committed')" \
    && { (($# == 0)) || "$@"; }
}
ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }
has_row() { [[ $(q "SELECT count(*) FROM crashcheck WHERE v = '$1'") == 1 ]]; }
lacks_row() { [[ $(q "SELECT count(*) FROM crashcheck WHERE v = '$1'") == 0 ]]; }

# SIGKILL the postmaster only (pid from postmaster.pid line 1), not its children.
kill_postmaster() {
  KILLED=$(postmaster_pid)
  [[ $KILLED =~ ^[0-9]+$ && $(readlink "/proc/$KILLED/exe" 2>/dev/null) == */postgres ]] || return 1
  kill -KILL "$KILLED"
}

# `postgres.sh start` run once, right away; then the cluster must answer queries.
start_once() {
  local t=$SECONDS rc=0
  pg start || rc=$?
  log "postgres.sh start exited $rc after $((SECONDS - t))s"
  # ... and it went through crash recovery, as a killed postmaster requires.
  ((rc == 0)) && ready && [[ $(q "SELECT 1") == 1 ]] && [[ $(postmaster_pid) != "$KILLED" ]] \
    && grep -q 'automatic recovery in progress' "$PG_LOG_FILE"
}

busy_clients_active() {
  client "BEGIN; INSERT INTO crashcheck VALUES ('busy-uncommitted'); SELECT pg_sleep(30)"
  client "SELECT pg_sleep(30)"
  client "SELECT pg_sleep(30)"
  # Busy on CPU: a backend checks for its postmaster's death only when it waits,
  # so this one outlives the postmaster. Its own statement_timeout bounds it.
  # shellcheck disable=SC2016  # $$ is SQL dollar quoting
  client 'DO $$BEGIN LOOP END LOOP; END$$' "-c statement_timeout=60s"
  wait_until 20 "4 busy client backends" active_clients 4
}
active_clients() {  # active_clients <n>: at least <n> other sessions run a statement
  (($(q "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid()") >= $1))
}
backends_outlive_postmaster() {
  local left; left=$(cluster_pids "$PG_DATA_DIR" | wc -l)
  log "$left process(es) of the cluster still running after the postmaster was killed"
  ((left > 0))
}

case_busy() {
  outcome "busy: private cluster on :$PORT with a committed row and 4 busy clients" \
    fresh_cluster busy busy_clients_active || return 0
  kill_postmaster || { outcome "busy: kill -9 the postmaster" false; return 0; }
  outcome "busy: backends outlive the killed postmaster (the case to recover from)" backends_outlive_postmaster || true
  outcome "busy: postmaster killed with busy backends: one postgres.sh start recovers, cluster answers" start_once || return 0
  outcome "busy: the row committed before the crash is there" has_row busy-committed || true
  outcome "busy: the row not committed before the crash is not" lacks_row busy-uncommitted || true
}

kept_when_current() {
  local pm; pm=$(postmaster_pid)
  pg start && [[ $(postmaster_pid) == "$pm" ]] && ready && has_row idle-committed
}

case_idle() {
  outcome "idle: private cluster on :$PORT with a committed row" fresh_cluster idle || return 0
  kill_postmaster || { outcome "idle: kill -9 the postmaster" false; return 0; }
  outcome "idle: postmaster killed with no clients: one postgres.sh start recovers, cluster answers" start_once || return 0
  outcome "idle: the row committed before the crash is there" has_row idle-committed || true
  outcome "idle: postgres.sh start on the recovered cluster keeps it (same postmaster)" kept_when_current || true
}

# A live process of the cluster's OS user, not postgres: what a reused pid looks like.
start_decoy() {
  if ((EUID == 0)); then
    setpriv --reuid=postgres --regid=postgres --clear-groups sleep 300 &
  else
    sleep 300 &
  fi
  DECOY=$!
}
# postmaster.pid with its line 1 replaced, written in place (owner and mode kept).
point_pidfile_at() {
  local f=$PG_DATA_DIR/postmaster.pid rest
  rest=$(tail -n +2 "$f")
  printf '%s\n%s\n' "$1" "$rest" >"$f"
}
pidfile_reused() { wait_until 20 "the killed cluster to exit" cluster_gone "$PG_DATA_DIR" && point_pidfile_at "$DECOY"; }
decoy_alive() { kill -0 "$DECOY" 2>/dev/null && [[ $(readlink "/proc/$DECOY/exe") == */sleep ]]; }

case_reused() {
  outcome "reused: private cluster on :$PORT with a committed row" fresh_cluster reused || return 0
  kill_postmaster || { outcome "reused: kill -9 the postmaster" false; return 0; }
  start_decoy
  outcome "reused: postmaster killed, its processes gone, postmaster.pid now names live pid $DECOY (sleep)" \
    pidfile_reused || return 0
  outcome "reused: postmaster.pid naming an unrelated live pid: one postgres.sh start recovers, cluster answers" start_once || return 0
  outcome "reused: the row committed before the crash is there" has_row reused-committed || true
  outcome "reused: the unrelated process is left alive" decoy_alive || true
  kill -TERM "$DECOY" 2>/dev/null || true
}

# Case 4's other cluster, in a subshell so the current case's env stays put.
other() { (use_cluster "$1"; PG_PORT=$PORT2; shift; "$@"); }
other_started() { other foreign-b pg start && "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PORT2"; }
other_untouched() {  # same postmaster, no child of it killed, still answering
  local data=$TMP/foreign-b/data
  [[ $(head -n 1 "$data/postmaster.pid") == "$OTHER_PM" ]] && is_postgres "$OTHER_PM" \
    && ! grep -q 'terminated by signal' "$TMP/foreign-b/postgres.log" \
    && "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PORT2"
}
is_postgres() { [[ $(readlink "/proc/$1/exe" 2>/dev/null) == */postgres ]]; }
foreign_setup() {
  other_started && OTHER_PM=$(head -n 1 "$TMP/foreign-b/data/postmaster.pid") && is_postgres "$OTHER_PM" \
    && fresh_cluster foreign one_cpu_client
}
one_cpu_client() {
  # shellcheck disable=SC2016  # $$ is SQL dollar quoting
  client 'DO $$BEGIN LOOP END LOOP; END$$' "-c statement_timeout=60s"
  wait_until 20 "a busy client backend" active_clients 1
}

case_foreign() {
  outcome "foreign: private clusters on :$PORT (busy client, committed row) and :$PORT2" foreign_setup || return 0
  kill_postmaster || { outcome "foreign: kill -9 the postmaster" false; return 0; }
  point_pidfile_at "$OTHER_PM"
  outcome "foreign: backends outlive the killed postmaster (the case to recover from)" backends_outlive_postmaster || true
  outcome "foreign: postmaster.pid naming the other cluster's postmaster $OTHER_PM: one postgres.sh start recovers ours" \
    start_once || true
  outcome "foreign: the row committed before the crash is there" has_row foreign-committed || true
  outcome "foreign: the other cluster on :$PORT2 is untouched (same postmaster, no process killed, answering)" \
    other_untouched || true
  other foreign-b destroy_cluster
}

for c in case_busy case_idle case_reused case_foreign; do
  "$c"
  destroy_cluster
done

echo "check-postgres: $passed passed, $failed failed"
((failed == 0))
