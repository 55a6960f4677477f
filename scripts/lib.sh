#!/usr/bin/env bash
# Shared helpers for the local-infra scripts. Source it; do not run it.
# Callers already run under `set -euo pipefail`; we set it too so a helper used
# on its own behaves the same way.
set -euo pipefail

# Repo root from this file's location, so scripts work from any cwd.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"      # runtime state: logs, pid files, data dirs (git-ignored)
CACHE_DIR="$ROOT/.cache"  # downloaded artifacts, e.g. Kafka jars (git-ignored)
mkdir -p "$RUN_DIR" "$CACHE_DIR"

# name:port of every service process scripts/up.sh runs (the ports are fixed
# by the project's contract; a second instance of a service is name-2, pid
# file .run/name-2.pid). The two mail workers are one binary in two modes.
# docker-compose.yml defines the same services (scripts/validate-compose.sh).
SUITE_SERVICES=(gateway:8080 users:8081 recommendation:8082 dashboard:8083
  products:8084 products-image:8088 products-video:8089 products-metadata:8090 products-creator:8091
  pagecount:8085 pagecount-map:8185 pagecount-reduce:8186
  mailer-stateless:8086 mailer-stateful:8087)

# Instance i (2, 3, ...) of a suite process on port P is <name>-i on
# P + 1000*(i-1) (scripts/up.sh INSTANCES_<NAME>=N).
instance_port() { echo $(($1 + 1000 * ($2 - 1))); }
# suite_processes: "<name> <port>" of every process of the suite, the extra
# instances scripts/up.sh started (their pid files) included.
suite_processes() {
  local s name port f i
  for s in "${SUITE_SERVICES[@]}"; do
    name=${s%%:*} port=${s##*:}
    echo "$name $port"
    for f in "$RUN_DIR/$name"-[0-9]*.pid; do
      [[ -e $f ]] || continue
      i=${f##*-} && i=${i%.pid}
      echo "$name-$i $(instance_port "$port" "$i")"
    done
  done
}

# kafka_brokers: how many Kafka nodes the suite runs on: KAFKA_BROKERS, else
# what the last scripts/kafka.sh start used (.run/kafka-brokers), else 1. A
# private broker of a test (KAFKA_PORT set) is one node unless told.
kafka_brokers() {
  local n=${KAFKA_BROKERS:-}
  if [[ -z $n ]]; then
    n=1
    [[ -z ${KAFKA_PORT:-} && -s $RUN_DIR/kafka-brokers ]] && n=$(<"$RUN_DIR/kafka-brokers")
  fi
  [[ $n =~ ^[1-9]$ ]] || { echo "KAFKA_BROKERS must be a number from 1 to 9, not '$n'" >&2; return 1; }
  echo "$n"
}
# kafka_bootstrap: every node's address, comma-separated: what each client
# (the services, kcat, Kafka's tools) is given, so that any one node down
# does not keep it from the cluster. Node i answers on 9092 + 100*(i-1).
kafka_bootstrap() {
  local n i list="" base=${KAFKA_PORT:-9092}
  n=$(kafka_brokers) || return 1
  for ((i = 0; i < n; i++)); do list+="${list:+,}127.0.0.1:$((base + 100 * i))"; done
  echo "$list"
}

# One-line progress messages on stderr (stdout stays free for real output),
# prefixed with the calling script's name so mixed logs stay readable.
log() { printf '[%s] %s\n' "$(basename "${0:-lib}")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
rel() { printf '%s' "${1#"$ROOT"/}"; }   # path relative to the repo, for messages

# wait_until <deadline_seconds> <description> <command...>
# Poll a command (quietly) every 0.5 s until it succeeds; fail loudly at the
# deadline instead of sleeping a fixed time and hoping.
wait_until() {
  local deadline=$1 what=$2; shift 2
  local end=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= end)); then
      log "timed out after ${deadline}s waiting for: $what"
      return 1
    fi
    sleep 0.5
  done
}

# limit <seconds> <what> <command...>
# Runs a command with a time limit: past it, SIGTERM, then SIGKILL 15 s
# later (the whole process group of a script), and a failure naming what
# hung with the tails of the suite's logs, instead of a run that never ends.
limit() {
  local seconds=$1 what=$2 rc=0; shift 2
  timeout --kill-after=15 "$seconds" "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    log "HUNG: $what ran past its limit of ${seconds}s and was killed"
    local f
    for f in "$RUN_DIR"/*.log; do
      [[ -s $f ]] || continue
      log "---- last lines of $(rel "$f") ----"
      tail -n 5 "$f" >&2
    done
  fi
  return "$rc"
}

# The newest installed PostgreSQL binaries (Debian keeps them off PATH;
# scripts/postgres.sh installs them).
pg_bin() { find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1; }

# pid_alive <pidfile>: true if the file names a live process.
pid_alive() {
  local f=$1 pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# service_state <pidfile> <port> <binary>: prints `current` when the pid is
# alive, runs <binary> as it is on disk now (not an older build) and answers
# /healthz on <port>; otherwise `stopped` (no live pid) or why it is stale.
service_state() {
  local f=$1 port=$2 binary=$3 pid exe started built
  if ! pid_alive "$f"; then
    echo stopped
    return
  fi
  pid=$(<"$f")
  # A zombie (killed, not yet reaped) still answers `kill -0`.
  if [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]]; then
    echo "exited"
    return
  fi
  # A rebuild replaces the file: the running image is then "(deleted)" or older.
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  # Start time to 10 ms (boot time from the uptime clock, + clock ticks), build time to 1 ms.
  started=$(awk -v boot="$(awk -v now="$(date +%s.%N)" '{printf "%.3f", now - $1}' /proc/uptime)" -v hz="$(getconf CLK_TCK)" \
    '{printf "%.3f\n", boot + $22 / hz}' "/proc/$pid/stat" 2>/dev/null || echo 0)
  built=$(stat -c %.3Y "$binary" 2>/dev/null || echo 0)
  if [[ $exe != "$binary" ]] || awk -v b="$built" -v s="$started" 'BEGIN {exit !(b > s)}'; then
    echo "binary rebuilt since it started"
    return
  fi
  if ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz"; then
    echo "no answer on :$port/healthz"
    return
  fi
  echo current
}

# stop_pidfile <pidfile> [grace_seconds=30]
# SIGTERM for a clean shutdown (Kafka flushes logs, Postgres checkpoints),
# SIGKILL only if it does not exit within the grace period. Removes the pidfile.
stop_pidfile() {
  local f=$1 grace=${2:-30} pid
  if ! pid_alive "$f"; then
    rm -f "$f"
    return 0
  fi
  pid=$(<"$f")
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until "$grace" "pid $pid to exit" bash -c "! kill -0 $pid"; then
    log "pid $pid still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_until 10 "pid $pid to die after SIGKILL" bash -c "! kill -0 $pid" || true
  fi
  rm -f "$f"
}

# kill_pidfile <pidfile>: SIGKILL, a real crash (nothing flushed or closed);
# waits for the process to be gone. Removes the pidfile.
kill_pidfile() {
  local f=$1 pid
  if ! pid_alive "$f"; then
    rm -f "$f"
    return 0
  fi
  pid=$(<"$f")
  kill -KILL "$pid" 2>/dev/null || true
  wait_until 10 "pid $pid to die" bash -c "! kill -0 $pid" || die "pid $pid survived SIGKILL"
  rm -f "$f"
}

# apt_install <package...>: `apt-get update` at most once per script run (it is
# the slow part and a fresh box has no package lists), then install.
_APT_UPDATED=0
apt_install() {
  local sudo=() aptlog="$RUN_DIR/apt.log"
  ((EUID == 0)) || sudo=(sudo)
  log "apt-get installing: $* (output in $(rel "$aptlog"))"
  # apt/dpkg chatter goes to a log file; shown only if the install fails.
  if ((_APT_UPDATED == 0)); then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$aptlog" 2>&1 \
      || { tail -n 20 "$aptlog" >&2; die "apt-get update failed"; }
    _APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
    >>"$aptlog" 2>&1 || { tail -n 20 "$aptlog" >&2; die "apt-get install $* failed"; }
  hash -r
}

# apt_install_if_missing <cmd> <package...>: install only if <cmd> is not on PATH.
apt_install_if_missing() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  log "'$cmd' not found"
  apt_install "$@"
  command -v "$cmd" >/dev/null 2>&1 || die "installed $* but '$cmd' is still not on PATH"
}

# check <description> <command...>: one check of a script that counts them
# (`passed`, `failed`, `failures`, and `TMP`, set by the script). The command
# runs in a subshell outside any `if`, so `set -e` stops it at its first
# failing step; its output goes to $TMP/out, shown when it fails, whose last
# line is kept in `failures` with the description.
check() {
  local what=$1 rc
  shift
  set +e
  (set -e; "$@") >"$TMP/out" 2>&1
  rc=$?
  set -e
  if ((rc == 0)); then
    passed=$((passed + 1)); log "ok   $what"
  else
    failed=$((failed + 1)); failures+=("$what: $(tail -n 1 "$TMP/out")")
    log "FAIL $what"; sed 's/^/       /' "$TMP/out" >&2
  fi
}
