#!/usr/bin/env bash
# The Kafka Streams peer of the streaming benchmark (bench/peers/README.md):
# a count-by-key app with processing.guarantee=exactly_once_v2 reads <topic>
# from the start on the suite's broker until it has seen <expected-records>.
#   scripts/bench/streams-peer.sh <topic> <expected-records> [threads=1]
# Prints one line on stdout (logs go to stderr), e.g.
#   streams-count records=200000 seconds=3.872 records_per_second=51657 committed_seconds=4.025 startup_seconds=1.129 threads=1
# seconds: from streams.start() to the last record through the app;
# committed_seconds: to its committed offsets covering the topic;
# startup_seconds: to the first record.
# The jar is built (Maven, into .cache/streams-peer) only when missing or when
# bench/peers/streams-count or KAFKA_VERSION changed. Each run uses its own
# application id, state dir and internal topics, all removed on exit.
# Env: KAFKA_VERSION (4.1.1), STREAMS_PEER_DEADLINE (600 s to see every record),
# STREAMS_PEER_PROPS (extra Streams configs, "key=value key=value"),
# STREAMS_PEER_JAVA_OPTS (JVM flags, default -Xms256m -Xmx1g).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

usage() {
  grep -m1 '^#   scripts/bench/streams-peer.sh' "$0" | sed 's/^# */usage: /' >&2
  exit 2
}
(($# >= 2 && $# <= 3)) || usage
TOPIC=$1 EXPECTED=$2 THREADS=${3:-1}
[[ $EXPECTED =~ ^[1-9][0-9]*$ ]] || die "expected-records must be a positive integer, got '$EXPECTED'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "threads must be a positive integer, got '$THREADS'"
[[ $TOPIC =~ ^[A-Za-z0-9._-]+$ ]] || die "not a valid topic name: '$TOPIC'"

BROKER=127.0.0.1:9092
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
DEADLINE=${STREAMS_PEER_DEADLINE:-600}
SRC="$ROOT/bench/peers/streams-count"
BUILD="$CACHE_DIR/streams-peer"
JAR="$BUILD/target/streams-count.jar"
STAMP="$BUILD/build.stamp"        # fingerprint of the sources the jar was built from
BUILD_LOG="$RUN_DIR/streams-peer-build.log"

apt_install_if_missing javac openjdk-17-jdk-headless
apt_install_if_missing mvn maven
apt_install_if_missing kcat kcat

# Content, not mtimes: a fresh checkout touches every file.
fingerprint() {
  {
    echo "kafka.version=$KAFKA_VERSION"
    (cd "$SRC" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build() {
  mkdir -p "$BUILD"
  exec 9>"$BUILD/build.lock"
  flock 9   # two callers at once: the second waits, then finds the jar current
  local fp
  fp=$(fingerprint)
  if [[ -f $JAR && -f $STAMP && $(<"$STAMP") == "$fp" ]]; then
    exec 9>&-
    return 0
  fi
  log "building the Streams peer (Kafka $KAFKA_VERSION; output in $(rel "$BUILD_LOG"))"
  rm -rf "$BUILD/target" "$STAMP"   # no stale lib/ jars from another Kafka version
  mvn -B -Dstyle.color=never -f "$SRC/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" \
    -Dmaven.repo.local="$CACHE_DIR/m2" \
    -Dpeer.build.dir="$BUILD/target" \
    package >"$BUILD_LOG" 2>&1 \
    || { tail -n 40 "$BUILD_LOG" >&2; die "Maven build failed; full output in $(rel "$BUILD_LOG")"; }
  [[ -f $JAR ]] || die "the build finished but $(rel "$JAR") is missing"
  echo "$fp" >"$STAMP"
  exec 9>&-
}
build

kcat -L -b "$BROKER" -m 2 >/dev/null 2>&1 || die "no broker on $BROKER: run scripts/up.sh first"
kcat -L -b "$BROKER" -m 5 -t "$TOPIC" 2>/dev/null | grep -q "topic \"$TOPIC\" with [1-9]" \
  || die "topic $TOPIC does not exist on $BROKER"

APP_ID="streams-peer-$TOPIC-$(date +%s)"
STATE_DIR="$RUN_DIR/streams-peer/$APP_ID"
mkdir -p "$STATE_DIR"

cleaned=0
cleanup() {
  ((cleaned == 0)) || return 0
  cleaned=1
  rm -rf "$STATE_DIR"
  # Internal topics (<app-id>-counts-changelog; the regex catches any other),
  # then the app's consumer group (it left the group on close, so it is empty).
  local app_re=${APP_ID//./\\.} out
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete --if-exists \
    --topic "$app_re-.*" >/dev/null || log "warning: could not delete the topics $APP_ID-*"
  # (the tool exits 0 even when a deletion failed: read what it says)
  out=$("$ROOT/scripts/kafka-cli.sh" consumer-groups --bootstrap-server "$BROKER" --delete \
    --group "$APP_ID" 2>&1) || true
  [[ $out == *successful* ]] || log "warning: could not delete the consumer group $APP_ID: ${out//$'\n'/ }"
}
trap cleanup EXIT

log "counting $EXPECTED records of $TOPIC by key, exactly-once, $THREADS thread(s), application id $APP_ID"
# shellcheck disable=SC2086  # the env knobs split into flags / key=value words on purpose
result=$(java ${STREAMS_PEER_JAVA_OPTS:--Xms256m -Xmx1g} -jar "$JAR" \
  "$BROKER" "$TOPIC" "$APP_ID" "$EXPECTED" "$STATE_DIR" "$THREADS" "$DEADLINE" ${STREAMS_PEER_PROPS:-}) \
  || die "the Streams peer failed (exit $?)"
[[ $result == "streams-count records="* ]] || die "unexpected output from the Streams peer: $result"
cleanup
printf '%s\n' "$result"
