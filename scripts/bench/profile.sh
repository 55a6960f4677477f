#!/usr/bin/env bash
# Where a running process spends its CPU: samples it with `perf` for a while
# and prints the hottest functions (self time, all threads), for the
# benchmark notes (docs/performance.md). Run it beside a benchmark, e.g.
#   scripts/bench/profile.sh "$(pgrep -n dashboard)" 10
#   scripts/bench/profile.sh <pid> [seconds=10] [top=25]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PID=${1:?usage: profile.sh <pid> [seconds] [top]}
SECONDS_=${2:-10}
TOP=${3:-25}
apt_install_if_missing perf linux-perf
OUT="$RUN_DIR/profile-$PID.data"
perf record -F 999 -g -p "$PID" -o "$OUT" -- sleep "$SECONDS_" 2>"$RUN_DIR/profile-$PID.log" >/dev/null
echo "profile of $(tr '\0' ' ' <"/proc/$PID/cmdline" | cut -c1-80) (pid $PID), ${SECONDS_} s at 999 Hz; self time:"
perf report -i "$OUT" --no-children --sort symbol --stdio --percent-limit 0.5 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | head -n "$TOP"
