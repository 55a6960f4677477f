#!/usr/bin/env bash
# Idempotently create the project's topics on the local broker or cluster.
#   scripts/topics.sh          (the brokers of scripts/kafka.sh: kafka_bootstrap)
# Replication factor and min.insync.replicas are the brokers' defaults: 1 on
# one broker, 3 and 2 on the three-node cluster (KAFKA_BROKERS=3).
# Only missing topics are created: the cheap kcat metadata check avoids a
# ~2 s JVM start per topic when everything already exists.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BOOTSTRAP=$(kafka_bootstrap)
EVENTS_TOPIC=${EVENTS_TOPIC:-events}
DLQ_TOPIC=${DLQ_TOPIC:-events.dlq}
ACCESS_LOGS_TOPIC=${ACCESS_LOGS_TOPIC:-access-logs}

# name partitions; retention.ms=-1 for all: the event log is the source of truth
# (kappa architecture), consumers must be able to replay from offset 0.
TOPICS=("$EVENTS_TOPIC 6" "$DLQ_TOPIC 3" "$ACCESS_LOGS_TOPIC 6")

apt_install_if_missing kcat kcat
kcat -L -b "$BOOTSTRAP" -m 5 >/dev/null 2>&1 \
  || die "no broker answers on $BOOTSTRAP; run scripts/kafka.sh start first"

# One metadata listing for all topics; kcat prints ` topic "events" with 6 partitions:`.
# Asking for a single missing topic (-t) would print "with 0 partitions: Unknown
# topic", so parse the full listing instead.
LISTING=$(kcat -L -b "$BOOTSTRAP" -m 5 2>/dev/null)
partitions_of() {  # partition count of an existing topic, empty if it does not exist
  awk -v t="\"$1\"" '$1 == "topic" && $2 == t && $3 == "with" { print $4 }' <<<"$LISTING"
}

pids=() names=()
for spec in "${TOPICS[@]}"; do
  read -r name parts <<<"$spec"
  have=$(partitions_of "$name")
  if [[ -n $have ]]; then
    [[ $have == "$parts" ]] || log "WARNING: topic $name exists with $have partitions (want $parts); left as is"
    log "topic $name exists"
    continue
  fi
  log "creating topic $name ($parts partitions, retention.ms=-1, the brokers' replication)"
  # Parallel JVMs: TopicCommand creates one topic per run.
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$parts" --config retention.ms=-1 \
    >/dev/null &
  pids+=($!) names+=("$name")
done

failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { log "ERROR: creating topic ${names[$i]} failed"; failed=1; }
done
((failed == 0)) || exit 1

# Wait until the broker's metadata lists every new topic, so callers can produce immediately.
for name in "${names[@]}"; do
  # shellcheck disable=SC2016
  wait_until 30 "topic $name in metadata" bash -c '[[ -n $(kcat -L -b "$1" -m 5 -t "$2" 2>/dev/null | grep "topic \"$2\" with [1-9]") ]]' _ "$BOOTSTRAP" "$name" \
    || die "topic $name not visible on $BOOTSTRAP"
done
log "topics ready on $BOOTSTRAP: ${TOPICS[*]%% *}"
