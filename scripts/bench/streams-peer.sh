#!/usr/bin/env bash
# The Kafka Streams peers of the streaming benchmark (bench/peers/README.md),
# both with processing.guarantee=exactly_once_v2, reading <topic> from the
# start on the suite's broker until they have seen <expected-records>:
#   count (the default): counts the records by key;
#   cooc: the recommendation service's model work (co-occurrence, popularity,
#         daily counters) in RocksDB stores with changelogs.
#   scripts/bench/streams-peer.sh <topic> <expected-records> [threads=1]
# Prints one line on stdout (logs go to stderr), e.g.
#   streams-count records=200000 seconds=3.872 records_per_second=51657 committed_seconds=4.025 startup_seconds=1.129 threads=1
# (streams-cooc ... for STREAMS_PEER=cooc)
# seconds: from streams.start() to the last record through the app;
# committed_seconds: to its committed offsets covering the topic;
# startup_seconds: to the first record.
# Each peer's jar is built (Maven, the reactor in bench/peers, into
# .cache/streams-peer/streams-<peer>) only when missing or when its sources
# (bench/peers/pom.xml, streams-common, streams-<peer>) or KAFKA_VERSION
# changed. Each run uses its own application id, state dir and internal
# topics, all removed on exit.
# Env: STREAMS_PEER (count | cooc, default count), KAFKA_VERSION (4.1.1),
# STREAMS_PEER_DEADLINE (600 s to see every record), STREAMS_PEER_PROPS (extra
# Streams configs, "key=value key=value"), STREAMS_PEER_JAVA_OPTS (JVM flags,
# default -Xms256m -Xmx1g).
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

PEER=${STREAMS_PEER:-count}
PEERS="$ROOT/bench/peers"
[[ $PEER =~ ^[a-z0-9-]+$ && $PEER != common && -f $PEERS/streams-$PEER/pom.xml ]] \
  || die "no such Streams peer: STREAMS_PEER='$PEER' (count or cooc)"
NAME=streams-$PEER                # Maven module, jar and the report's first word

BROKER=$(kafka_bootstrap)   # every node of the suite's Kafka
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
DEADLINE=${STREAMS_PEER_DEADLINE:-600}
BUILD="$CACHE_DIR/streams-peer"   # one directory per module (-Dpeer.build.root)
JAR="$BUILD/$NAME/$NAME.jar"
STAMP="$BUILD/$NAME.stamp"        # fingerprint of the sources the jar was built from
BUILD_LOG="$RUN_DIR/streams-peer-$PEER-build.log"

apt_install_if_missing javac openjdk-17-jdk-headless
apt_install_if_missing mvn maven
apt_install_if_missing kcat kcat

# Content, not mtimes: a fresh checkout touches every file.
fingerprint() {
  {
    echo "kafka.version=$KAFKA_VERSION"
    (cd "$PEERS" && find pom.xml streams-common/pom.xml streams-common/src "$NAME/pom.xml" "$NAME/src" -type f \
      | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build() {
  mkdir -p "$BUILD"
  exec 9>"$BUILD/build.lock"
  flock 9   # two callers at once: the second waits, then finds the jar current
            # (one lock for all peers: they share streams-common's build)
  local fp
  fp=$(fingerprint)
  if [[ -f $JAR && -f $STAMP && $(<"$STAMP") == "$fp" ]]; then
    exec 9>&-
    return 0
  fi
  log "building the Streams peer $NAME (Kafka $KAFKA_VERSION; output in $(rel "$BUILD_LOG"))"
  # No stale lib/ jars from another Kafka version; target/ and build.stamp are
  # the layout from before there was more than one peer.
  rm -rf "$BUILD/$NAME" "$BUILD/streams-common" "$STAMP" "$BUILD/target" "$BUILD/build.stamp"
  mvn -B -Dstyle.color=never -f "$PEERS/pom.xml" -pl "$NAME" -am \
    -Dkafka.version="$KAFKA_VERSION" \
    -Dmaven.repo.local="$CACHE_DIR/m2" \
    -Dpeer.build.root="$BUILD" \
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

APP_ID="streams-peer-$PEER-$TOPIC-$(date +%s)"
STATE_DIR="$RUN_DIR/streams-peer/$APP_ID"
mkdir -p "$STATE_DIR"

cleaned=0
cleanup() {
  ((cleaned == 0)) || return 0
  cleaned=1
  rm -rf "$STATE_DIR"
  # Internal topics (<app-id>-counts-changelog, <app-id>-rec-*-changelog; the
  # regex catches any other), then the app's consumer group (it left the group
  # on close, so it is empty).
  local app_re=${APP_ID//./\\.} out
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete --if-exists \
    --topic "$app_re-.*" >/dev/null || log "warning: could not delete the topics $APP_ID-*"
  # (the tool exits 0 even when a deletion failed: read what it says)
  out=$("$ROOT/scripts/kafka-cli.sh" consumer-groups --bootstrap-server "$BROKER" --delete \
    --group "$APP_ID" 2>&1) || true
  [[ $out == *successful* ]] || log "warning: could not delete the consumer group $APP_ID: ${out//$'\n'/ }"
}
trap cleanup EXIT

case $PEER in
  count) what="counting $EXPECTED records of $TOPIC by key" ;;
  cooc) what="applying the recommendation model to $EXPECTED records of $TOPIC" ;;
  *) what="$NAME on $EXPECTED records of $TOPIC" ;;
esac
log "$what, exactly-once, $THREADS thread(s), application id $APP_ID"
# shellcheck disable=SC2086  # the env knobs split into flags / key=value words on purpose
result=$(java ${STREAMS_PEER_JAVA_OPTS:--Xms256m -Xmx1g} -jar "$JAR" \
  "$BROKER" "$TOPIC" "$APP_ID" "$EXPECTED" "$STATE_DIR" "$THREADS" "$DEADLINE" ${STREAMS_PEER_PROPS:-}) \
  || die "the Streams peer failed (exit $?)"
[[ $result == "$NAME records="* ]] || die "unexpected output from the Streams peer: $result"
cleanup
printf '%s\n' "$result"
