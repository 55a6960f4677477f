#!/usr/bin/env bash
# Answer latency of the recommendation API, on a topic and database of its
# own: N loadgen events (6 partitions) consumed by a recommendation service
# to the end, then `GET /users/{id}/recommendations` under CONCURRENCY (50)
# clients (target/release/http-bench), REQUESTS (5000) answers each for:
#   known  users with history (read from the service's own rec_users)
#   new    users nobody has seen (every answer is the popular fill-in)
# each once warm (right after a first pass) and once cold (after IDLE (60) s
# of quiet: the service hands memory back when idle). Prints p50/p90/p99 in
# ms per case. Baseline of the same run: the fill-in as it was computed
# before (one aggregate over every popularity row, log-sum-exp in SQL), timed
# in psql on the same database. With BENCH_RESULTS=<file>, the p99s are
# appended as key=value.
#   scripts/bench/answers.sh [events=1000000]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-1000000}
PORT=${BENCH_PORT:-8097}
CONCURRENCY=${CONCURRENCY:-50}
REQUESTS=${REQUESTS:-5000}
IDLE=${IDLE:-60}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-answers loadgen recommendation
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC

log "filling $TOPIC with $EVENTS loadgen events"
"$ROOT/target/release/loadgen" --seed 7 --events "$EVENTS" --users 50000 --products 5000 --days 60 \
  --start "$(date -u -d '61 days ago' +%Y-%m-%dT00:00:00Z)" --kafka 2>>"$WORK/fill.log"
total=$(topic_count)

log "recommendation: consuming the $total records"
start_recommendation "$PORT"
wait_committed "$total" 1800
rows=$(psql -h 127.0.0.1 -U kappa -d "$DB" -qAt -c "SELECT count(*) FROM rec_popularity")

# The fill-in's former query, 5 times: the median of psql's \timing.
OLD_SQL="SELECT item, top + log(2.0, sum(CASE WHEN score - top < -1000 THEN 0 ELSE power(2.0, score - top) END)::numeric)::float8 AS s
  FROM (SELECT item, score, max(score) OVER (PARTITION BY item) AS top FROM rec_popularity) AS p
  GROUP BY item, top ORDER BY s DESC, item LIMIT 20"
old_ms=$(for _ in 1 2 3 4 5; do
  psql -h 127.0.0.1 -U kappa -d "$DB" -qAt -c '\timing on' -c "$OLD_SQL" | awk '/^Time:/ {print $2}'
done | sort -n | sed -n 3p)

psql -h 127.0.0.1 -U kappa -d "$DB" -qAt \
  -c "SELECT '/users/' || user_id || '/recommendations' FROM (SELECT DISTINCT user_id FROM rec_users ORDER BY user_id LIMIT 2000) u" \
  >"$WORK/known.txt"
for ((i = 0; i < 2000; i++)); do echo "/users/bench-new-$i/recommendations"; done >"$WORK/new.txt"

# run <case> <paths file>: one measured pass; prints http-bench's line.
run() {
  KAPPA_TOKEN=bench "$ROOT/target/release/http-bench" --paths "$2" --base "http://127.0.0.1:$PORT" \
    --concurrency "$CONCURRENCY" --requests "$REQUESTS"
}
p99() { awk '{for (i = 1; i < NF; i++) if ($i == "p99_ms") print $(i + 1)}' <<<"$1"; }
report=()
for kind in known new; do
  run "$kind" "$WORK/$kind.txt" >/dev/null   # the first pass: connections and caches warm
  warm=$(run "$kind" "$WORK/$kind.txt")
  log "quiet for $IDLE s before the cold pass"
  sleep "$IDLE"
  cold=$(run "$kind" "$WORK/$kind.txt")
  report+=("$kind warm: $warm" "$kind cold: $cold")
  if [[ -n ${BENCH_RESULTS:-} ]]; then
    [[ $kind == known ]] && echo "answers_former_fill_in_ms=$old_ms" >>"$BENCH_RESULTS"
    echo "answers_${kind}_warm_p99_ms=$(p99 "$warm")" >>"$BENCH_RESULTS"
    echo "answers_${kind}_cold_p99_ms=$(p99 "$cold")" >>"$BENCH_RESULTS"
  fi
done

echo "== recommendation answers: GET /users/{id}/recommendations, $CONCURRENCY concurrent clients, $REQUESTS answers per pass"
echo "   model: $total records consumed ($EVENTS loadgen events, 50,000 users, 5,000 products), $rows popularity rows"
echo "   baseline: the former fill-in (an aggregate over every popularity row) takes $old_ms ms per request alone (median of 5, psql)"
printf '   %s\n' "${report[@]}"
echo "   (known: 2,000 users with history, from rec_users; new: 2,000 ids never seen, each answer the popular fill-in;"
echo "    warm after a first pass, cold after $IDLE s idle; reproduce: scripts/bench/answers.sh $EVENTS)"
