#!/usr/bin/env bash
# Every benchmark of the performance table in one run, then that table as
# Markdown in docs/benchmarks.md (machine, date, commit, each figure beside its
# goal, each script's own report below). Needs the suite's infrastructure
# (scripts/up.sh); each script works on a topic and database of its own.
# Takes about 20 minutes on 2 cores. Not part of CI: figures are only claimed
# from a run of this script.
#   scripts/bench/all.sh [output=docs/benchmarks.md]
# Env: EVENTS (1000000: replay and streaming), INGEST_EVENTS (400000),
# SECONDS_PER_RATE (60), BENCHES (default "replay streaming ingest"; a subset
# re-runs those and keeps the other figures of the last run, which the
# document then says).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

OUT=${1:-$ROOT/docs/benchmarks.md}
EVENTS=${EVENTS:-1000000}
BENCHES=${BENCHES:-replay streaming ingest}
WORK="$RUN_DIR/bench-all"
mkdir -p "$WORK"

# bench <name> <script> [args...]: its report in $WORK/<name>.txt, its figures
# in $WORK/<name>.env (a subset, BENCHES="streaming", keeps the others' files).
bench() {
  local name=$1
  shift
  log "---- $name: $*"
  rm -f "$WORK/$name.env"
  BENCH_RESULTS="$WORK/$name.env" "$@" | tee "$WORK/$name.txt"
}
# The replay's doubled-data run shows growth, not a row of the table: skipped.
export DOUBLE=0
for name in $BENCHES; do
  case $name in
    replay) bench replay "$ROOT/scripts/bench/replay.sh" "$EVENTS" 3 ;;
    streaming) bench streaming "$ROOT/scripts/bench/streaming.sh" "$EVENTS" "${SECONDS_PER_RATE:-60}" ;;
    ingest) bench ingest "$ROOT/scripts/bench/ingest.sh" "${INGEST_EVENTS:-400000}" ;;
    *) die "unknown benchmark $name (replay, streaming, ingest)" ;;
  esac
done

cat "$WORK"/{replay,streaming,ingest}.env >"$WORK/results.env"
python3 - "$WORK/results.env" "$WORK" "$OUT" "$(git -C "$ROOT" rev-parse --short HEAD)" \
  "$(git -C "$ROOT" status --porcelain | grep -q . && echo ' (with uncommitted changes)' || true)" "$BENCHES" <<'PY'
import datetime, os, platform, subprocess, sys
results_path, work, out, commit, dirty, benches = sys.argv[1:]
rerun = "" if set(benches.split()) == {"replay", "streaming", "ingest"} else (
    f" This run re-measured {', '.join(benches.split())}; the other figures are from the run before it"
    " (same machine and commit, `BENCHES` in `scripts/bench/all.sh`).")
r = dict(line.strip().split("=", 1) for line in open(results_path) if "=" in line)
f = lambda key: float(r[key])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal"))) / 2**20
def row(what, measured, goal, met):
    return f"| {what} | {measured} | {goal} | {'met' if met else '**not met**'} |"
rows = [
    row("full replay vs `kcat -C` raw read, same topic",
        f"{f('replay_ratio'):.2f}x ({f('replay_eps'):,.0f} vs {f('replay_kcat_eps'):,.0f} events/s)",
        ">= 0.8x", f("replay_ratio") >= 0.8),
    row("recommendation (exactly-once, from scratch) vs Kafka Streams count-by-key (exactly_once_v2)",
        f"{f('recommendation_peer_ratio'):.2f}x ({f('recommendation_eps'):,.0f} vs {f('peer_eps'):,.0f} events/s)",
        ">= 1.0x", f("recommendation_peer_ratio") >= 1.0),
    row("event -> visible over HTTP at 5,000 events/s, p99",
        f"{f('latency_p99_ms_5000'):.0f} ms (p50 {f('latency_p50_ms_5000'):.0f} ms)", "<= 100 ms",
        f("latency_p99_ms_5000") <= 100),
    row("gateway NDJSON ingest vs `kcat -P` (acks=all, idempotent)",
        f"{f('ingest_ratio'):.2f}x ({f('ingest_gateway_eps'):,.0f} vs {f('ingest_kcat_eps'):,.0f} events/s)",
        ">= 0.8x", f("ingest_ratio") >= 0.8),
    row("ingest rounds, slowest/fastest - 1 (kcat; gateway)",
        f"{f('ingest_kcat_spread'):.0%}; {f('ingest_gateway_spread'):.0%}", "<= 15%",
        max(f("ingest_kcat_spread"), f("ingest_gateway_spread")) <= 0.15),
    row(f"dashboard RSS, idle after {int(f('replay_events')):,}-event replays",
        f"{f('dashboard_idle_mib'):.0f} MiB (peak {f('dashboard_peak_mib'):.0f} MiB)", "<= 50 MiB",
        f("dashboard_idle_mib") <= 50),
    row("gateway RSS, idle after the ingest load",
        f"{f('gateway_idle_mib'):.0f} MiB (peak {f('gateway_peak_mib'):.0f} MiB)", "<= 30 MiB",
        f("gateway_idle_mib") <= 30),
]
reports = []
for name in ("replay", "streaming", "ingest"):
    text = open(os.path.join(work, f"{name}.txt")).read().rstrip()
    reports.append(f"### {name}\n\n```text\n{text}\n```\n")
doc = f"""# Benchmarks

Measured by `scripts/bench/all.sh` on {datetime.date.today().isoformat()}, commit `{commit}`{dirty}:
{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}; the
broker, PostgreSQL, the service and the baseline client all on this one machine.
Each ratio compares two sides measured in the same run on the same data.{rerun}
What each figure measures, and how, is in the script that printed it
(`scripts/bench/replay.sh`, `streaming.sh`, `ingest.sh`); their reports follow
the table. Where a goal is not met, `docs/performance.md` explains the gap
with a profile.

| what | measured | goal | |
|---|---|---|---|
{chr(10).join(rows)}

## Reports

{chr(10).join(reports)}"""
open(out, "w").write(doc)
print(doc.split("## Reports")[0])
PY
log "wrote $(rel "$OUT")"
