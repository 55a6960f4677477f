#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests (not Debian's default
# cluster): data, socket, log and pid all live under .run/.
#   scripts/postgres.sh install|start|stop|crash|restart|status
# `crash` is `pg_ctl stop -m immediate`: every backend killed, no checkpoint,
# crash recovery on the next start (what fault tests use). `start` also brings
# back, in one run, a cluster whose postmaster was killed (kill -9) while its
# backends were still exiting: see clear_dead_postmaster.
# Env vars let a test run a second private cluster on another port.
# App URL: postgres://kappa:kappa@127.0.0.1:5432/kappa
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT=${PG_PORT:-5432}
PG_DATA_DIR=${PG_DATA_DIR:-$RUN_DIR/pg-data}
PG_PID_FILE=${PG_PID_FILE:-$RUN_DIR/postgres.pid}
PG_LOG_FILE=${PG_LOG_FILE:-$RUN_DIR/postgres.log}
# Socket files are named .s.PGSQL.<port>, so clusters on other ports can share it.
PG_SOCKET_DIR=${PG_SOCKET_DIR:-$RUN_DIR/pg-socket}
# Absolute paths: postgres runs from / and its config must not depend on the caller's cwd.
PG_DATA_DIR=$(realpath -m "$PG_DATA_DIR")
PG_PID_FILE=$(realpath -m "$PG_PID_FILE")
PG_LOG_FILE=$(realpath -m "$PG_LOG_FILE")
PG_SOCKET_DIR=$(realpath -m "$PG_SOCKET_DIR")
PG_SUPERUSER_PASSWORD=${PG_SUPERUSER_PASSWORD:-postgres}
APP_USER=kappa APP_PASSWORD=kappa APP_DB=kappa


# The server refuses to run as root: as root we run it as the `postgres` OS
# user; as any other user the cluster simply belongs to that user.
as_pg() {
  if ((EUID == 0)); then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

install() {
  if [[ -z $(pg_bin) || ! -x $(pg_bin)/initdb ]]; then
    apt_install postgresql
  else
    log "PostgreSQL server already installed ($(pg_bin))"
  fi
  apt_install_if_missing kcat kcat   # the Kafka side needs it too; one apt run
  [[ -x $(pg_bin)/initdb ]] || die "postgresql installed but no initdb under /usr/lib/postgresql"
}

ready() { "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; }

# Which processes are OUR cluster's: a process running a postgres server binary
# whose working directory is $PG_DATA_DIR. The postmaster chdir()s to its data
# directory at start-up; every child (checkpointer, walwriter, client backends)
# inherits that cwd and never changes it, and no two clusters share a data
# directory, so this never matches another cluster's processes (the suite's on
# 5432 and a test's private one run the same binary as the same user).
# Not used, because they fail exactly after a crash: the parent pid (children
# of a killed postmaster are re-parented to init), the command line (children
# retitle themselves "postgres: checkpointer", no data dir in it), `pg_ctl
# status` (kill -0 on the pid in postmaster.pid: true for a killed postmaster
# not yet reaped, a zombie, and for an unrelated process that reused the pid).
# A zombie or a process in exit has no readable exe: not ours, and it holds
# nothing (its memory, with the shared segment, is released first).
is_ours() {  # is_ours <pid>
  local exe
  # -ef (same device and inode, no fork) first: it rules out nearly every process.
  [[ /proc/$1/cwd -ef $PG_DATA_DIR ]] || return 1
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == */postgres ]]
}
cluster_pids() {  # every live process of our cluster, one pid a line
  local p
  for p in /proc/[0-9]*; do
    is_ours "${p#/proc/}" && echo "${p#/proc/}"
  done
  return 0
}
no_cluster_pids() { [[ -z $(cluster_pids) ]]; }
# Line 1 of postmaster.pid, as a pid (a single-user backend writes it negated).
postmaster_pid() {
  local pid
  pid=$(head -n 1 "$PG_DATA_DIR/postmaster.pid" 2>/dev/null) || return 1
  pid=${pid#-}
  [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
}
# Our postmaster runs: postmaster.pid names a live process of our cluster.
ours_alive() { local pm; pm=$(postmaster_pid) && is_ours "$pm"; }

# Is the SysV shared memory segment named in postmaster.pid line 7 ("key id")
# still attached by some process? That is the server's own interlock against
# starting next to old backends; we check it too before removing the file.
shm_attached() {
  local key id
  read -r key id < <(sed -n 7p "$PG_DATA_DIR/postmaster.pid" 2>/dev/null) || return 1
  [[ $key =~ ^[0-9]+$ && $id =~ ^[0-9]+$ ]] || return 1
  awk -v k="$key" -v i="$id" '$1 == k && $2 == i && $7 > 0 {f = 1} END {exit !f}' /proc/sysvipc/shm 2>/dev/null
}
shm_free() { ! shm_attached; }

# A killed postmaster (kill -9, OOM killer) leaves postmaster.pid behind, and
# its children run on until they notice: idle or waiting backends exit within
# a second, but one busy in a long query keeps the shared memory attached, so
# a new postmaster refuses to start ("pre-existing shared memory block ... is
# still in use"). So when postmaster.pid does not name a live postmaster of
# ours: wait up to PG_ORPHAN_GRACE seconds for its processes to exit, SIGKILL
# those left (their work dies with the crash anyway: what was committed is in
# the WAL and the next start runs crash recovery), and remove the stale
# postmaster.pid once nothing is attached to the shared memory it names.
PG_ORPHAN_GRACE=${PG_ORPHAN_GRACE:-5}
clear_dead_postmaster() {
  ours_alive && return 0
  [[ -f $PG_DATA_DIR/postmaster.pid ]] && clear_stale_pidfile
  clear_stale_socket_lock
}

clear_stale_pidfile() {
  local lock=$PG_DATA_DIR/postmaster.pid pm left p
  pm=$(head -n 1 "$lock" 2>/dev/null || true)
  left=$(cluster_pids)
  if [[ -n $left ]]; then
    log "postmaster ${pm:-?} of $(rel "$PG_DATA_DIR") is gone, its processes are not: $(xargs <<<"$left")"
    if ! wait_until "$PG_ORPHAN_GRACE" "the dead postmaster's processes to exit" no_cluster_pids; then
      for p in $(cluster_pids); do
        # Checked again before each signal: a postmaster started meanwhile (by
        # another `start`) owns processes with the same working directory.
        if ours_alive; then
          log "a postmaster of $(rel "$PG_DATA_DIR") started meanwhile; leaving it alone"
          return 0
        fi
        is_ours "$p" || continue
        log "SIGKILL $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true))"
        kill -KILL "$p" 2>/dev/null || true
      done
      wait_until 10 "the dead postmaster's processes to die after SIGKILL" no_cluster_pids \
        || die "processes of $(rel "$PG_DATA_DIR") survived SIGKILL: $(cluster_pids | xargs)"
    fi
  fi
  wait_until 5 "the shared memory named in $(rel "$lock") to be released" shm_free \
    || die "the shared memory named in $(rel "$lock") (line 7) is still attached by processes that are not this cluster's; stop them, then start again"
  # Unless it changed meanwhile (another `start` got there first).
  if [[ $(head -n 1 "$lock" 2>/dev/null || true) != "$pm" ]] || ours_alive; then
    return 0
  fi
  log "removing stale $(rel "$lock") (pid ${pm:-?} is not a running postmaster of this cluster)"
  rm -f "$lock"
}

# The socket's lock file (.s.PGSQL.<port>.lock: pid, data dir, ...) names the
# dead postmaster too, and the server refuses it while that pid answers kill -0,
# as a killed postmaster not yet reaped (a zombie) or a reused pid do. Removed
# only when it names our data directory and no live process of our cluster.
clear_stale_socket_lock() {
  local sock_lock=$PG_SOCKET_DIR/.s.PGSQL.$PG_PORT.lock spid
  [[ -f $sock_lock && $(sed -n 2p "$sock_lock" 2>/dev/null) -ef $PG_DATA_DIR ]] || return 0
  spid=$(head -n 1 "$sock_lock" 2>/dev/null || true)
  is_ours "${spid#-}" && return 0
  log "removing stale $(rel "$sock_lock") (pid ${spid:-?} is not a running postmaster of this cluster)"
  rm -f "$sock_lock"
}

# Debian's packaged cluster (created by apt) would hold 5432; stop it if it is on our port.
stop_debian_cluster() {
  command -v pg_lsclusters >/dev/null || return 0
  local ver name port status _
  while read -r ver name port status _; do
    if [[ $port == "$PG_PORT" && $status == online* ]]; then
      log "stopping Debian's default cluster $ver/$name on port $port (it would block ours)"
      pg_ctlcluster "$ver" "$name" stop
    fi
  done < <(pg_lsclusters -h 2>/dev/null)
}

# The postgres user must be able to reach the data/socket/log dirs even when the
# repo lives under root-owned directories: add o+x (traverse only, no read) where missing.
ensure_traversable() {
  ((EUID == 0)) || return 0
  local d=$1
  while [[ $d != / ]]; do
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      log "chmod o+x $d (postgres must traverse it)"
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

prepare_dirs() {
  mkdir -p "$PG_DATA_DIR" "$PG_SOCKET_DIR" "$(dirname "$PG_LOG_FILE")" "$(dirname "$PG_PID_FILE")"
  touch "$PG_LOG_FILE"
  if ((EUID == 0)); then
    chown postgres:postgres "$PG_DATA_DIR" "$PG_SOCKET_DIR" "$PG_LOG_FILE"
  fi
  chmod 700 "$PG_DATA_DIR" "$PG_SOCKET_DIR"   # initdb/postgres insist on 0700 data dirs
  ensure_traversable "$PG_DATA_DIR"
  ensure_traversable "$PG_SOCKET_DIR"
  ensure_traversable "$(dirname "$PG_LOG_FILE")"
}

init_cluster() {
  [[ -f $PG_DATA_DIR/PG_VERSION ]] && return 0
  log "initdb in $(rel "$PG_DATA_DIR")"
  local pwfile
  pwfile=$(mktemp)
  echo "$PG_SUPERUSER_PASSWORD" >"$pwfile"
  ((EUID == 0)) && chown postgres "$pwfile"
  # Superuser `postgres`; TCP needs a SCRAM password, the unix socket (in a 0700
  # dir only its owner and root can open) is trusted for admin work.
  as_pg "$(pg_bin)/initdb" -D "$PG_DATA_DIR" -U postgres --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >>"$PG_LOG_FILE" 2>&1 \
    || { rm -f "$pwfile"; die "initdb failed; see $PG_LOG_FILE"; }
  rm -f "$pwfile"
  echo "include_if_exists = 'kappa.conf'" >>"$PG_DATA_DIR/postgresql.conf"
}

write_config() {
  # Rewritten on each start so PG_PORT etc. from env take effect.
  as_pg tee "$PG_DATA_DIR/kappa.conf" >/dev/null <<CONF
# Generated by scripts/postgres.sh; overwritten on start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
shared_buffers = 256MB
# Durability stays on: the services rely on committed = on disk.
fsync = on
synchronous_commit = on
full_page_writes = on
log_timezone = 'UTC'
timezone = 'UTC'
CONF
}

# shellcheck disable=SC2120  # extra psql args are optional
psql_super() {
  as_pg "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"
}

ensure_app_db() {
  # CREATEDB: integration tests create and drop their own databases.
  psql_super <<SQL
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$APP_USER', '$APP_PASSWORD')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER') \gexec
ALTER ROLE $APP_USER LOGIN CREATEDB PASSWORD '$APP_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$APP_DB', '$APP_USER')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$APP_DB') \gexec
SQL
}

start() {
  [[ -x $(pg_bin)/initdb ]] 2>/dev/null || install
  if ours_alive && ready; then
    head -n 1 "$PG_DATA_DIR/postmaster.pid" >"$PG_PID_FILE"
    ensure_app_db
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT (pid $(<"$PG_PID_FILE"))"
    return 0
  fi
  stop_debian_cluster
  clear_dead_postmaster
  if ! ours_alive && ready; then
    die "another PostgreSQL already answers on 127.0.0.1:$PG_PORT; stop it or set PG_PORT"
  fi
  prepare_dirs
  init_cluster
  write_config
  if ! ours_alive; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data $(rel "$PG_DATA_DIR"), log $(rel "$PG_LOG_FILE"))"
    # pg_ctl -w polls until the server accepts connections (deadline -t 60) and
    # detaches the postmaster into its own session, so it outlives this shell.
    as_pg "$(pg_bin)/pg_ctl" start -D "$PG_DATA_DIR" -l "$PG_LOG_FILE" -w -t 60 >/dev/null \
      || { tail -n 10 "$PG_LOG_FILE" >&2; die "PostgreSQL did not start; see $PG_LOG_FILE"; }
  fi
  wait_until 60 "pg_isready on 127.0.0.1:$PG_PORT" ready \
    || { tail -n 10 "$PG_LOG_FILE" >&2; die "PostgreSQL not ready on 127.0.0.1:$PG_PORT"; }
  head -n 1 "$PG_DATA_DIR/postmaster.pid" >"$PG_PID_FILE"
  ensure_app_db
  log "PostgreSQL ready: postgres://$APP_USER:$APP_PASSWORD@127.0.0.1:$PG_PORT/$APP_DB (pid $(<"$PG_PID_FILE"))"
}

stop() {
  if ! ours_alive; then
    clear_dead_postmaster   # nothing of a killed postmaster's cluster keeps running
    rm -f "$PG_PID_FILE"
    log "PostgreSQL ($(rel "$PG_DATA_DIR")) not running"
    return 0
  fi
  log "stopping PostgreSQL on port $PG_PORT"
  # -m fast: roll back open transactions and shut down cleanly (no crash recovery next start).
  if ! as_pg "$(pg_bin)/pg_ctl" stop -D "$PG_DATA_DIR" -m fast -w -t 30 >/dev/null; then
    log "pg_ctl stop failed; falling back to signals"
    head -n 1 "$PG_DATA_DIR/postmaster.pid" >"$PG_PID_FILE"
    stop_pidfile "$PG_PID_FILE" 10
  fi
  rm -f "$PG_PID_FILE"
  log "PostgreSQL stopped"
}

crash() {
  if ! ours_alive; then
    rm -f "$PG_PID_FILE"
    log "PostgreSQL ($(rel "$PG_DATA_DIR")) not running"
    return 0
  fi
  log "crashing PostgreSQL on port $PG_PORT (pg_ctl stop -m immediate)"
  as_pg "$(pg_bin)/pg_ctl" stop -D "$PG_DATA_DIR" -m immediate -w -t 30 >/dev/null \
    || die "pg_ctl stop -m immediate failed"
  rm -f "$PG_PID_FILE"
}

status() {
  if ours_alive && ready; then
    log "PostgreSQL running on 127.0.0.1:$PG_PORT (pid $(head -n 1 "$PG_DATA_DIR/postmaster.pid"))"
  else
    log "PostgreSQL ($(rel "$PG_DATA_DIR")) not running/ready on 127.0.0.1:$PG_PORT"; return 1
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  crash) crash ;;
  restart) stop; start ;;
  status) status ;;
  *) echo "usage: $0 {install|start|stop|crash|restart|status}" >&2; exit 2 ;;
esac
