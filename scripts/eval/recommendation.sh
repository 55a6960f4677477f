#!/usr/bin/env bash
# Offline evaluation of the recommendation service on loadgen data with
# planted structure (users mostly browse one cluster of related products).
# For each user, the last product they newly engaged with is held out; the
# service learns from everything before it (a fresh topic, database and
# instance of its own), then hit rate@10 is measured for the service and for
# a popularity baseline.
#   scripts/eval/recommendation.sh [events=100000] [users_evaluated=1000]
# Needs the suite's broker and database (scripts/up.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

EVENTS=${1:-100000}
SAMPLE=${2:-1000}
PORT=${EVAL_PORT:-8092}
source "$ROOT/scripts/bench/scratch.sh"
scratch eval-recommendation loadgen recommendation

log "generating $EVENTS events (seed 7, 3000 users, 600 products in clusters of 20)"
"$ROOT/target/release/loadgen" --seed 7 --events "$EVENTS" --users 3000 --products 600 --cluster-size 20 --days 14 \
  >"$WORK/events.ndjson"

# Split: train.tsv (key<TAB>event) and holdout.tsv (user<TAB>product).
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
events = [json.loads(line) for line in open(f"{work}/events.ndjson")]
per_user = {}
for i, e in enumerate(events):
    if e["type"] == "interaction":
        per_user.setdefault(e["user_id"], []).append(i)
cut = {}  # user -> index of the held-out event
target = {}
for user, idx in per_user.items():
    seen, last_new = set(), None
    for i in idx:
        p = events[i]["product_id"]
        if p not in seen and len(seen) >= 3:
            last_new = i
        seen.add(p)
    if last_new is not None:
        cut[user], target[user] = last_new, events[last_new]["product_id"]
with open(f"{work}/train.tsv", "w") as out:
    for i, e in enumerate(events):
        user = e.get("user_id")
        if user in cut and i >= cut[user]:
            continue  # the held-out interaction and everything after it
        out.write(f"{user}\t{json.dumps(e, separators=(',', ':'))}\n")
with open(f"{work}/holdout.tsv", "w") as out:
    for user, product in sorted(target.items()):
        out.write(f"{user}\t{product}\n")
PY
train=$(wc -l <"$WORK/train.tsv")
log "training on $train events; $(wc -l <"$WORK/holdout.tsv") users have a held-out product"

kcat -P -b "$BROKER" -t "$TOPIC" -K $'\t' -X partitioner=murmur2_random <"$WORK/train.tsv"
KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL \
  KAPPA__RECOMMENDATION__ADDR=127.0.0.1:$PORT KAPPA__RECOMMENDATION__GROUP=$TOPIC \
  KAPPA__AUTH__ADMIN_TOKEN=eval KAPPA__LOG__LEVEL=warn "$ROOT/target/release/recommendation" \
  >"$WORK/service.log" 2>&1 &
svc_pid=$!
SCRATCH_PIDS+=("$svc_pid")
# Records committed: the offsets the service stored (its interactions
# applied, the users' updates read past).
committed() { curl -fsS "http://127.0.0.1:$PORT/stats" 2>/dev/null | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)["next_offsets"].values()))' 2>/dev/null || echo 0; }
wait_until 300 "the service to commit $train records" bash -c "[[ \$(curl -fsS http://127.0.0.1:$PORT/stats 2>/dev/null | python3 -c 'import json,sys; print(sum(json.load(sys.stdin)[\"next_offsets\"].values()))' 2>/dev/null) == $train ]]" \
  || die "the service committed $(committed) of $train records"

python3 - "$WORK/holdout.tsv" "$PORT" "$SAMPLE" "$EVENTS" "$train" <<'PY'
import json, random, sys, urllib.request
holdout, port, sample = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pairs = [line.rstrip("\n").split("\t") for line in open(holdout)]
random.Random(42).shuffle(pairs)
pairs = pairs[:sample]
def get(path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer eval"})
    return json.load(urllib.request.urlopen(request))
popular = [i["product_id"] for i in get("/users/__nobody__/recommendations?limit=10")["items"]]
hits = sum(target in [i["product_id"] for i in get(f"/users/{user}/recommendations?limit=10")["items"]] for user, target in pairs)
baseline = sum(target in popular for _, target in pairs)
n = len(pairs)
print(f"recommendation evaluation: loadgen --seed 7 --events {sys.argv[4]} (3000 users, 600 products, clusters of 20),")
print(f"  leave-last-new-product-out over {n} users, trained on {sys.argv[5]} events")
print(f"  hit rate@10  item-to-item service  {hits / n:.3f}  ({hits}/{n})")
print(f"  hit rate@10  popularity baseline   {baseline / n:.3f}  ({baseline}/{n})")
print(f"  lift {hits / max(baseline, 1):.1f}x")
PY
