#!/usr/bin/env bash
# The dead-letter queue from the shell, through the gateway (GET /dlq,
# POST /dlq/redrive) with the admin token in .run/token.
#
#   scripts/dlq.sh list [reason] [--after CURSOR] [--limit N] [--json]
#   scripts/dlq.sh redrive <filter...> [--again] [--dry-run] [--limit N] [--json]
#
# list: a page of dead letters (by partition, then offset) and the counts by
#   reason; the last line gives the cursor of the next page (--after).
# redrive: republishes the original records of the dead letters that match
#   every filter word (at least one is needed; there is no "all"):
#     P:O            a dead letter by its place in the DLQ (the `id` list shows)
#     id=EVENT_ID    by the event's id (the payload's `id`, or the derived one)
#     reason=CODE    by reason, e.g. reason=invalid_json
#     topic=T partition=P from=OFFSET to=OFFSET
#                    by origin (to is exclusive; any of the four may be left out)
#   --again redrives dead letters redriven before too (it counts toward
#   dlq.max_redrives); --dry-run only says what would happen.
# GATEWAY (default http://127.0.0.1:8080) and TOKEN (default .run/token) override.
# Exit status: 0 on a 2xx answer, 1 otherwise (the error is printed).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GATEWAY=${GATEWAY:-http://127.0.0.1:8080}

# The answers as tables (python3, as scripts/smoke.sh uses).
read -r -d '' LIST_PY <<'PY' || true
import json, os, sys
page = json.load(sys.stdin)
def origin(o):
    return "-" if not o else f"{o['topic']}/{o['partition']}/{o['offset']}"
rows = [("id", "code", "origin", "dead-lettered", "count", "redrives", "payload")]
for r in page["records"]:
    p = r["payload"]
    data = p["data"] if p["encoding"] == "text" else "base64:" + p["data"]
    shown = data.replace("\n", "\\n")
    rows.append((r["id"], r["code"], origin(r["origin"]), (r["time"] or "-")[:19],
                 str(r["redrive_count"]), str(r["redrives"]),
                 shown[:60] + ("..." if p["truncated"] or len(shown) > 60 else "")))
widths = [max(len(row[i]) for row in rows) for i in range(6)]
for row in rows:
    print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[6])
counts = " ".join(f"{k}={v}" for k, v in page["counts"].items()) or "none"
print(f"\n{page['topic']}: {page['total']} dead letters ({counts}); "
      f"{page['matched']} match, {len(page['records'])} shown")
reason = os.environ["REASON"]
if page["more"]:
    print(f"more: scripts/dlq.sh list {reason + ' ' if reason else ''}--after {page['next']}")
else:
    print(f"later arrivals: scripts/dlq.sh list {reason + ' ' if reason else ''}--after {page['next']}")
PY

read -r -d '' FILTER_PY <<'PY' || true
import json, os
e = os.environ
f = {}
ids = [i for i in e["IDS"].split("\n") if i]
if ids:
    f["ids"] = ids
if e["REASON"]:
    f["reason"] = e["REASON"]
origin = {}
if e["TOPIC"]:
    origin["topic"] = e["TOPIC"]
for key, name in (("PARTITION", "partition"), ("FROM", "from_offset"), ("TO", "to_offset"), ("LIMIT", "limit")):
    if e[key]:
        try:
            value = int(e[key])
        except ValueError:
            raise SystemExit(f"{name} must be a number, got {e[key]!r}")
        if name == "limit":
            f["limit"] = value
        else:
            origin[name] = value
if origin:
    f["origin"] = origin
if e["AGAIN"] == "true":
    f["again"] = True
if e["DRY"] == "true":
    f["dry_run"] = True
print(json.dumps(f))
PY

read -r -d '' REDRIVE_PY <<'PY' || true
import json, sys
a = json.load(sys.stdin)
verb = "would redrive" if a["dry_run"] else "redriven"
for r in a["redriven"]:
    o, to = r["origin"], r["to"]
    where = f" -> {to['topic']}/{to['partition']}/{to['offset']}" if to else ""
    again = " (again)" if r["again"] else ""
    print(f"{verb:13} {r['id']:10} {r['code']:20} {o['topic']}/{o['partition']}/{o['offset']}"
          f"{where} redrive-count={r['redrive_count']}{again}")
for r in a["refused"]:
    print(f"{'refused':13} {r['id']:10} {r['code']:20} {r['why']}: {r['message']}")
counts = ", ".join(f"{k} {v}" for k, v in a["refused_counts"].items()) or "none"
print(f"\n{a['matched']} matched; {len(a['redriven'])} {verb}; refused: {counts} "
      f"(max_redrives {a['max_redrives']})")
if a["more"]:
    print("more match than the limit: run the same redrive again for the next ones")
PY

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

token() {
  if [[ -n ${TOKEN:-} ]]; then
    printf '%s' "$TOKEN"
  elif [[ -s $RUN_DIR/token ]]; then
    cat "$RUN_DIR/token"
  else
    die "no token: set TOKEN or run scripts/up.sh (it writes .run/token)"
  fi
}

# call <curl args...>: prints the body; fails (printing it) on a non-2xx answer.
call() {
  local out status body
  out=$(curl -sS -w '\n%{http_code}' -H "Authorization: Bearer $(token)" "$@") \
    || die "no answer from $GATEWAY (is the gateway running? scripts/up.sh)"
  status=${out##*$'\n'}
  body=${out%$'\n'*}
  if [[ $status != 2* ]]; then
    log "HTTP $status: $body"
    exit 1
  fi
  printf '%s\n' "$body"
}

list() {
  local reason="" after="" limit="" json=false
  while (($#)); do
    case $1 in
      --after) after=${2:?--after needs a cursor}; shift 2 ;;
      --limit) limit=${2:?--limit needs a number}; shift 2 ;;
      --json) json=true; shift ;;
      -h|--help) usage ;;
      -*) die "unknown option $1" ;;
      *) [[ -z $reason ]] || die "one reason at most"; reason=$1; shift ;;
    esac
  done
  local args=(-G "$GATEWAY/dlq")
  [[ -z $reason ]] || args+=(--data-urlencode "reason=$reason")
  [[ -z $after ]] || args+=(--data-urlencode "after=$after")
  [[ -z $limit ]] || args+=(--data-urlencode "limit=$limit")
  local body; body=$(call "${args[@]}")
  if $json; then printf '%s\n' "$body"; return; fi
  REASON=$reason python3 -c "$LIST_PY" <<<"$body"
}

redrive() {
  local ids=() reason="" again=false dry=false limit="" json=false
  local topic="" partition="" from="" to=""
  while (($#)); do
    case $1 in
      --again) again=true ;;
      --dry-run) dry=true ;;
      --json) json=true ;;
      --limit) limit=${2:?--limit needs a number}; shift ;;
      -h|--help) usage ;;
      id=*) ids+=("${1#id=}") ;;
      reason=*) reason=${1#reason=} ;;
      topic=*) topic=${1#topic=} ;;
      partition=*) partition=${1#partition=} ;;
      from=*) from=${1#from=} ;;
      to=*) to=${1#to=} ;;
      [0-9]*:[0-9]*) ids+=("$1") ;;
      *) die "unknown filter word '$1' (see scripts/dlq.sh --help)" ;;
    esac
    shift
  done
  local filter
  filter=$(IDS=$(printf '%s\n' ${ids[@]+"${ids[@]}"}) REASON=$reason TOPIC=$topic PARTITION=$partition \
    FROM=$from TO=$to AGAIN=$again DRY=$dry LIMIT=$limit python3 -c "$FILTER_PY")
  local body
  body=$(call -H 'content-type: application/json' -d "$filter" "$GATEWAY/dlq/redrive")
  if $json; then printf '%s\n' "$body"; return; fi
  python3 -c "$REDRIVE_PY" <<<"$body"
}

case ${1:-} in
  list) shift; list "$@" ;;
  redrive) shift; redrive "$@" ;;
  -h|--help|"") usage ;;
  *) die "unknown command '$1' (list or redrive)" ;;
esac
