#!/usr/bin/env bash
# The product DAG, measured end to end on a topic and database of the run's
# own: N products, each with a ~1 MB JPEG, the small MP4 fixture and
# metadata, uploaded through a gateway as fast as it takes them (8 uploads
# in flight); then products/s from the first upload to the last decision,
# upload-to-created p50/p99, each branch's share (mean upload-to-result per
# kind), and the same run again with a second image worker: the speed-up,
# and what bounds it on this machine.
#   scripts/bench/products.sh [products=200]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PRODUCTS=${1:-200}
source "$ROOT/scripts/bench/scratch.sh"
scratch bench-products gateway products
export KAPPA__KAFKA__EVENTS_TOPIC=$TOPIC KAPPA__DATABASE__URL=$DB_URL KAPPA__AUTH__ADMIN_TOKEN=bench \
  KAPPA__LOG__LEVEL=warn
GATEWAY_PORT=8290 API_PORT=8294

start() {  # start <name> <binary> <env...>
  local name=$1 binary=$2; shift 2
  env "$@" "$ROOT/target/release/$binary" >>"$WORK/$name.log" 2>&1 &
  SCRATCH_PIDS+=("$!")
}
ready() { wait_until 60 "$1 on :$2" curl -fsS "http://127.0.0.1:$2/readyz" || die "$1 did not start"; }

start api products KAPPA__PRODUCTS__ADDR=127.0.0.1:$API_PORT KAPPA__PRODUCTS__ROLE=api
ready api $API_PORT

# A 1 MB JPEG of noise (noise does not compress: the size is the size).
python3 - "$WORK/photo.jpg" <<'PY'
import sys, subprocess
try:
    from PIL import Image  # noqa
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "pillow"], check=True)
from PIL import Image
import os
img = Image.frombytes("RGB", (1400, 1000), os.urandom(1400 * 1000 * 3))
img.save(sys.argv[1], quality=85)
PY
log "photo: $(stat -c %s "$WORK/photo.jpg") bytes; video: $(stat -c %s "$ROOT/services/products/tests/fixtures/clip.mp4") bytes"

# One round, on a topic of its own (so each round's groups read only its
# uploads): a gateway, the workers (image instances as given), N uploads,
# then wait for every decision.
ROUND_TOPICS=()
trap 'for t in "${ROUND_TOPICS[@]}"; do "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --delete --topic "$t" >/dev/null 2>&1 || true; done; scratch_cleanup' EXIT
round() {  # round <label> <image_instances>
  local label=$1 images=$2 port=8300 pids_before=${#SCRATCH_PIDS[@]} topic=$TOPIC-$1
  "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" --create --topic "$topic" \
    --partitions 6 >/dev/null
  ROUND_TOPICS+=("$topic")
  psql -h 127.0.0.1 -U kappa -d "$DB" -qc "TRUNCATE products, product_parts, products_outbox" >/dev/null
  start "$label-gateway" gateway KAPPA__GATEWAY__ADDR=127.0.0.1:$GATEWAY_PORT KAPPA__KAFKA__EVENTS_TOPIC=$topic
  ready gateway $GATEWAY_PORT
  for role in video metadata creator; do
    port=$((port + 1))
    start "$label-$role" products KAPPA__PRODUCTS__ADDR=127.0.0.1:$port KAPPA__PRODUCTS__ROLE=$role \
      KAPPA__KAFKA__EVENTS_TOPIC="$topic"
    ready "$role" $port
  done
  for ((i = 1; i <= images; i++)); do
    port=$((port + 1))
    start "$label-image-$i" products KAPPA__PRODUCTS__ADDR=127.0.0.1:$port KAPPA__PRODUCTS__ROLE=image \
      KAPPA__PRODUCTS__INSTANCE=$i KAPPA__KAFKA__EVENTS_TOPIC="$topic"
    ready "image-$i" $port
  done
  python3 - "$PRODUCTS" "$GATEWAY_PORT" "$WORK/photo.jpg" "$ROOT/services/products/tests/fixtures/clip.mp4" "$label" <<'PY'
import json, sys, time, uuid, urllib.request, concurrent.futures
n, port, photo, video, label = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "rb").read(), open(sys.argv[4], "rb").read(), sys.argv[5]
def form(i):
    boundary = uuid.uuid4().hex
    parts = [("metadata", None, "application/json", json.dumps({"product_id": f"{label}-{i}", "title": f"Product {i}", "price": "9.90", "currency": "EUR"}).encode()),
             ("image", "photo.jpg", "image/jpeg", photo), ("video", "clip.mp4", "video/mp4", video)]
    body = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), boundary
def upload(i):
    body, boundary = form(i)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/products", body,
        {"Authorization": "Bearer bench", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert urllib.request.urlopen(req).status == 202
t0 = time.time()
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    list(pool.map(upload, range(n)))
print(f"  uploads: {n} in {time.time() - t0:.1f} s ({n / (time.time() - t0):.1f} uploads/s)", file=sys.stderr)
PY
  wait_until 600 "every product decided" bash -c \
    "[[ \$(psql -h 127.0.0.1 -U kappa -d $DB -tAc \"SELECT count(*) FROM products WHERE status <> 'pending'\") == $PRODUCTS ]]" \
    || die "not every product was decided; see $WORK/*.log"
  psql -h 127.0.0.1 -U kappa -d "$DB" -tA -F' ' -c "
    SELECT count(*) FILTER (WHERE status = 'active'),
           round(count(*) / extract(epoch FROM max(finished_at) - min(uploaded_at))::numeric, 1),
           round(1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - uploaded_at))::numeric),
           round(1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - uploaded_at))::numeric)
    FROM products" >"$WORK/$label.summary"
  psql -h 127.0.0.1 -U kappa -d "$DB" -tA -F' ' -c "
    SELECT pp.kind, round(1000 * avg(extract(epoch FROM pp.arrived_at - p.uploaded_at))::numeric)
    FROM product_parts pp JOIN products p ON p.id = pp.product_id GROUP BY pp.kind ORDER BY 1" >"$WORK/$label.branches"
  # This round's workers stop; the next round starts its own groups.
  for ((k = pids_before; k < ${#SCRATCH_PIDS[@]}; k++)); do kill "${SCRATCH_PIDS[$k]}" 2>/dev/null || true; done
  sleep 2
}

log "round 1: one image worker, $PRODUCTS products"
round one 1
log "round 2: two image workers, $PRODUCTS products"
round two 2

read -r active1 rate1 p50_1 p99_1 <"$WORK/one.summary"
read -r active2 rate2 p50_2 p99_2 <"$WORK/two.summary"
echo "product DAG benchmark: $PRODUCTS products, each a $(($(stat -c %s "$WORK/photo.jpg") / 1024)) KiB JPEG + a $(($(stat -c %s "$ROOT/services/products/tests/fixtures/clip.mp4") / 1024)) KiB MP4 + metadata; gateway, branches, creator, Kafka and Postgres on this machine ($(nproc) cores)"
printf '  %-18s %8s %10s %10s %8s\n' "image workers" products/s "p50 ms" "p99 ms" active
printf '  %-18s %8s %10s %10s %8s\n' 1 "$rate1" "$p50_1" "$p99_1" "$active1"
printf '  %-18s %8s %10s %10s %8s\n' 2 "$rate2" "$p50_2" "$p99_2" "$active2"
echo "  speed-up from a second image worker: $(python3 -c "print(f'{$rate2 / $rate1:.2f}x')")"
echo "  upload to result, mean per branch (ms), one image worker / two:"
join "$WORK/one.branches" "$WORK/two.branches" | while read -r kind a b; do
  printf '    %-9s %8s %8s\n' "$kind" "$a" "$b"
done
echo "  products/s: first upload to last decision; p50/p99: upload (event time) to decision"
