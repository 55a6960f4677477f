#!/usr/bin/env bash
# Run real Apache Kafka (KRaft) from the Maven Central jars: Debian has no
# Kafka package and there is no Docker engine on dev/CI boxes.
#   scripts/kafka.sh fetch|start|stop|kill|status|restart [node]
#   scripts/kafka.sh leaders <topic>     how many partitions each node leads
#   scripts/kafka.sh cluster-id          the id the nodes were formatted with
# One broker by default. KAFKA_BROKERS=3 runs a cluster of three nodes on this
# machine, each both broker and KRaft controller (a quorum of 3 voters: any
# one node may die): node i answers on 127.0.0.1:9092+100*(i-1), its
# controller on the port after; its data in .run/kafka-i/, its log
# .run/kafka-i.log, its pid file .run/kafka-i.pid. Topics then default to
# replication factor 3 and min.insync.replicas=2, the consumer offsets and
# the transaction state alike. The number a start used is remembered in
# .run/kafka-brokers, so later scripts find the same brokers without the
# variable (scripts/lib.sh kafka_bootstrap).
# `kill` is SIGKILL, no shutdown at all: what fault tests use to crash a
# broker. With a node number, start, stop, kill and status act on that node
# only (`scripts/kafka.sh kill 2`).
# All knobs are env vars so a test can run a second, private broker next to
# the main one (e.g. KAFKA_PORT=19092 KAFKA_CONTROLLER_PORT=19093 KAFKA_DATA_DIR=...).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
NODES=$(kafka_brokers) || exit 2
PRIVATE=${KAFKA_PORT:+1}   # a test's own broker: .run/kafka-brokers is not its to write
BASE_PORT=${KAFKA_PORT:-9092}
BASE_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((BASE_PORT + 1))}
# A single broker keeps the files it always had, or the caller's.
SINGLE_DATA_DIR=${KAFKA_DATA_DIR:-$RUN_DIR/kafka-data}
SINGLE_PID_FILE=${KAFKA_PID_FILE:-$RUN_DIR/kafka.pid}
SINGLE_LOG_FILE=${KAFKA_LOG_FILE:-$RUN_DIR/kafka.log}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
KAFKA_LOG_LEVEL=${KAFKA_LOG_LEVEL:-WARN}        # root level of the broker log
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}  # seconds until metadata must answer
# Maven's local repo lives in .cache too, so everything fetched stays in the repo's
# git-ignored cache (and `rm -rf .cache` really is a cold start).
KAFKA_MAVEN_REPO=${KAFKA_MAVEN_REPO:-$CACHE_DIR/m2}

# node <i>: the ports and files of node i (1-based), in the globals the
# functions below use.
node() {
  NODE=$1
  KAFKA_PORT=$((BASE_PORT + 100 * (NODE - 1)))
  KAFKA_CONTROLLER_PORT=$((BASE_CONTROLLER_PORT + 100 * (NODE - 1)))
  if ((NODES == 1)); then
    KAFKA_DATA_DIR=$SINGLE_DATA_DIR KAFKA_PID_FILE=$SINGLE_PID_FILE KAFKA_LOG_FILE=$SINGLE_LOG_FILE
  else
    KAFKA_DATA_DIR=$RUN_DIR/kafka-$NODE KAFKA_PID_FILE=$RUN_DIR/kafka-$NODE.pid KAFKA_LOG_FILE=$RUN_DIR/kafka-$NODE.log
  fi
  # Absolute paths: the broker's config must not depend on the caller's cwd.
  KAFKA_DATA_DIR=$(realpath -m "$KAFKA_DATA_DIR")
  KAFKA_PID_FILE=$(realpath -m "$KAFKA_PID_FILE")
  KAFKA_LOG_FILE=$(realpath -m "$KAFKA_LOG_FILE")
  BOOTSTRAP="127.0.0.1:$KAFKA_PORT"   # not localhost: it may resolve to ::1
}
VOTERS=$(for ((i = 0; i < NODES; i++)); do printf '%s@127.0.0.1:%s,' $((i + 1)) $((BASE_CONTROLLER_PORT + 100 * i)); done)
VOTERS=${VOTERS%,}
ALL_BOOTSTRAP=$(kafka_bootstrap)
# Replication: everything on every node up to 3; writes need 2 in sync once
# there are 3 (one node may be down and nothing stops).
REPLICAS=$((NODES < 3 ? NODES : 3))
MIN_ISR=$((REPLICAS > 2 ? 2 : 1))
node 1

KAFKA_HOME="$CACHE_DIR/kafka/$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_HOME/libs"
FETCH_MARKER="$KAFKA_HOME/.fetch-complete"   # written last: a half-done fetch is redone

fetch() {
  if [[ -f $FETCH_MARKER ]]; then
    log "Kafka $KAFKA_VERSION jars already in $(rel "$KAFKA_LIBS")"
    return 0
  fi
  apt_install_if_missing java openjdk-17-jre-headless
  apt_install_if_missing mvn maven
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $(rel "$KAFKA_LIBS") ..."
  rm -rf "$KAFKA_LIBS"   # drop leftovers of an interrupted fetch
  mkdir -p "$KAFKA_LIBS"
  # Maven's output goes to a log, shown only on failure.
  local mvnlog="$RUN_DIR/kafka-fetch.log"
  mvn -B -Dstyle.color=never -f "$ROOT/scripts/kafka/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    -Dmaven.repo.local="$KAFKA_MAVEN_REPO" \
    -DoutputDirectory="$KAFKA_LIBS" \
    dependency:copy-dependencies >"$mvnlog" 2>&1 \
    || { tail -n 30 "$mvnlog" >&2; die "maven fetch failed; full output in $mvnlog"; }
  ls "$KAFKA_LIBS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null \
    || die "fetch finished but kafka_2.13-$KAFKA_VERSION.jar is missing"
  touch "$FETCH_MARKER"
  log "fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars"
}

# Ready = our process is alive AND the node answers a metadata request listing itself.
answers() {
  command -v kcat >/dev/null || return 1
  kcat -L -b "$BOOTSTRAP" -m 2 2>/dev/null | grep -q "broker $NODE at"
}
running() { pid_alive "$KAFKA_PID_FILE" && answers; }

# Kafka's cluster ids are 16 random bytes, base64url without padding, never
# starting with '-'. Generating it in bash saves one JVM start (~1 s).
random_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    [[ $id != -* ]] && { echo "$id"; return; }
  done
}

write_configs() {
  mkdir -p "$KAFKA_DATA_DIR/logs" "$(dirname "$KAFKA_LOG_FILE")" "$(dirname "$KAFKA_PID_FILE")"
  # Rewritten on every start so port changes via env take effect; the data in
  # log.dirs (topics, offsets) is what persists across restarts.
  cat >"$KAFKA_DATA_DIR/server.properties" <<PROPS
# Generated by scripts/kafka.sh; edits are overwritten on start.
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA_DIR/logs
# Kappa architecture: the log is the source of truth and events carry their
# own (often past) times; no topic loses data to a time-based default.
log.retention.ms=-1
# Topics are created explicitly (scripts/topics.sh); a typo must not create one.
auto.create.topics.enable=false
num.partitions=6
# $NODES node(s): every topic and internal topic on $REPLICAS of them, writes
# (acks=all) need $MIN_ISR in sync; a replica out of sync never becomes leader.
default.replication.factor=$REPLICAS
min.insync.replicas=$MIN_ISR
unclean.leader.election.enable=false
offsets.topic.replication.factor=$REPLICAS
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=$REPLICAS
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=$REPLICAS
share.coordinator.state.topic.min.isr=$MIN_ISR
# Tests create many consumer groups; do not wait 3 s for each first rebalance.
group.initial.rebalance.delay.ms=0
# 2-core dev box.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
PROPS

  # Broker log (stdout, redirected to KAFKA_LOG_FILE): WARN by default, but the
  # start/stop lines stay so the log shows when the broker was up.
  cat >"$KAFKA_DATA_DIR/log4j2.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by scripts/kafka.sh -->
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="$KAFKA_LOG_LEVEL"><AppenderRef ref="STDOUT"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.Kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
XML
}

java_cp() { java -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
  -Dlog4j2.configurationFile="$KAFKA_DATA_DIR/log4j2.xml" -cp "$KAFKA_LIBS/*" "$@"; }

# formatted_id: the cluster id the nodes were formatted with (the first
# formatted node's); fails when none is.
formatted_id() {
  local i f
  for ((i = 1; i <= NODES; i++)); do
    f=$( (node "$i"; echo "$KAFKA_DATA_DIR/logs/meta.properties") )
    [[ -f $f ]] && { sed -n 's/^cluster.id=//p' "$f"; return; }
  done
  return 1
}

format_storage() {  # format_storage <cluster id>
  # meta.properties exists once formatted; skipping the tool saves a JVM start.
  [[ -f $KAFKA_DATA_DIR/logs/meta.properties ]] && return 0
  log "formatting KRaft storage in $(rel "$KAFKA_DATA_DIR") (cluster id $1)"
  # Static controller.quorum.voters => format WITHOUT --standalone (4.x rejects it).
  java_cp kafka.tools.StorageTool format --ignore-formatted -t "$1" \
    -c "$KAFKA_DATA_DIR/server.properties" >>"$KAFKA_LOG_FILE" 2>&1 \
    || die "storage format failed; see $KAFKA_LOG_FILE"
}

# launch: start the current node's JVM (not waiting for it to answer);
# returns 1 when it already runs.
launch() {
  if pid_alive "$KAFKA_PID_FILE"; then
    return 1
  fi
  if answers; then
    die "something else already answers on $BOOTSTRAP (not started via $KAFKA_PID_FILE)"
  fi
  write_configs
  format_storage "$CLUSTER_ID"
  log "starting Kafka $KAFKA_VERSION node $NODE on $BOOTSTRAP (controller :$KAFKA_CONTROLLER_PORT, log $(rel "$KAFKA_LOG_FILE"))"
  echo "=== $(date -Is) scripts/kafka.sh start ===" >>"$KAFKA_LOG_FILE"
  rm -f "$KAFKA_PID_FILE"   # a stale file would satisfy the wait below
  # setsid: own session, so the broker survives the calling shell/terminal.
  # The child writes its own pid and then execs java, so the pid file names
  # the JVM itself (no wrapper process in between).
  # shellcheck disable=SC2016,SC2086  # $$ is the child's; KAFKA_OPTS splits into flags on purpose
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID_FILE" \
    java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true ${KAFKA_OPTS:-} \
      -Dlog4j2.configurationFile="$KAFKA_DATA_DIR/log4j2.xml" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DATA_DIR/server.properties" \
    </dev/null >>"$KAFKA_LOG_FILE" 2>&1 &
  wait_until 10 "pid file $KAFKA_PID_FILE" test -s "$KAFKA_PID_FILE" || die "node $NODE did not start"
}

# await: wait until the current node answers, or say why it did not.
await() {
  # Stop waiting early if the JVM dies (port taken, bad config...).
  # shellcheck disable=SC2016
  wait_until "$KAFKA_START_TIMEOUT" "Kafka node $NODE on $BOOTSTRAP" \
    bash -c '! kill -0 "$1" 2>/dev/null || kcat -L -b "$2" -m 2 2>/dev/null | grep -q "broker $3 at"' \
      _ "$(<"$KAFKA_PID_FILE")" "$BOOTSTRAP" "$NODE" || true
  if ! running; then
    # First errors of this run (after our start marker) usually name the cause.
    awk '/^=== .* scripts\/kafka.sh start ===$/ { n = NR } { line[NR] = $0 }
         END { for (i = n; i <= NR; i++) print line[i] }' "$KAFKA_LOG_FILE" \
      | grep -E ' (ERROR|FATAL) ' | head -n 5 >&2 || true
    pid_alive "$KAFKA_PID_FILE" || rm -f "$KAFKA_PID_FILE"
    die "Kafka node $NODE did not come up on $BOOTSTRAP; see $KAFKA_LOG_FILE"
  fi
  log "Kafka node $NODE ready on $BOOTSTRAP (pid $(<"$KAFKA_PID_FILE"))"
}

# The nodes a verb acts on: the one named, or all.
targets() {
  if [[ -n ${1:-} ]]; then
    [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= NODES)) || die "no node $1 (KAFKA_BROKERS=$NODES)"
    echo "$1"
  else
    seq 1 "$NODES"
  fi
}

start() {
  apt_install_if_missing kcat kcat
  fetch
  local i nodes
  nodes=$(targets "${1:-}")
  # A quorum elects its controller only once most voters run: every node
  # is launched before any is waited for.
  CLUSTER_ID=$(formatted_id || random_cluster_id)
  for i in $nodes; do
    node "$i"
    launch || log "Kafka node $NODE already running (pid $(<"$KAFKA_PID_FILE")); waiting for it to answer"
  done
  for i in $nodes; do node "$i"; await; done
  [[ -n $PRIVATE ]] || echo "$NODES" >"$RUN_DIR/kafka-brokers"
  ((NODES == 1)) || log "cluster of $NODES nodes ready: $ALL_BOOTSTRAP"
}

# halt stop|kill [node]: SIGTERM (a clean shutdown, SIGKILL after 30 s) or
# SIGKILL (the broker gets no chance to flush or close anything: a real crash).
halt() {
  local how=$1 i
  for i in $(targets "${2:-}"); do
    node "$i"
    if ! pid_alive "$KAFKA_PID_FILE"; then
      rm -f "$KAFKA_PID_FILE"
      log "Kafka node $NODE on $BOOTSTRAP not running (no live pid in $(rel "$KAFKA_PID_FILE"))"
      continue
    fi
    if [[ $how == kill ]]; then
      log "killing Kafka node $NODE on $BOOTSTRAP (SIGKILL pid $(<"$KAFKA_PID_FILE"))"
      kill_pidfile "$KAFKA_PID_FILE"
    else
      log "stopping Kafka node $NODE on $BOOTSTRAP (pid $(<"$KAFKA_PID_FILE"))"
      stop_pidfile "$KAFKA_PID_FILE" 30
      log "Kafka node $NODE stopped"
    fi
  done
}

status() {
  local i rc=0
  for i in $(targets "${1:-}"); do
    node "$i"
    if running; then
      log "Kafka node $NODE running on $BOOTSTRAP (pid $(<"$KAFKA_PID_FILE"))"
    elif pid_alive "$KAFKA_PID_FILE"; then
      log "Kafka node $NODE pid $(<"$KAFKA_PID_FILE") alive but $BOOTSTRAP does not answer"; rc=1
    else
      log "Kafka node $NODE not running on $BOOTSTRAP"; rc=1
    fi
  done
  return "$rc"
}

# leaders <topic>: "<node> <partitions it leads>" for every node, most first.
leaders() {
  [[ -n ${1:-} ]] || die "usage: $0 leaders <topic>"
  kcat -L -b "$ALL_BOOTSTRAP" -t "$1" -m 5 2>/dev/null \
    | awk -v n="$NODES" '$1 == "partition" { c[$4 + 0]++ }
        END { for (i = 1; i <= n; i++) print i, c[i] + 0 }' | sort -k2,2nr -k1,1n
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:-}" ;;
  stop | kill) halt "$1" "${2:-}" ;;
  restart) halt stop "${2:-}"; start "${2:-}" ;;
  status) status "${2:-}" ;;
  leaders) leaders "${2:-}" ;;
  cluster-id) formatted_id || die "no node is formatted yet" ;;
  *) echo "usage: $0 {fetch|start|stop|kill|restart|status} [node] | leaders <topic> | cluster-id" >&2; exit 2 ;;
esac
