#!/usr/bin/env bash
# The API contract, checked from outside: schemathesis (PyPI) generates
# requests from every started service's /openapi.json (scripts/up.sh first)
# and checks each answer: no 5xx, a documented status, the documented
# content type, headers and body schema, 4xx for invalid input, no 4xx for
# input the description calls valid, 401 without
# the token, 405 for other methods (scripts/contract/schemathesis.toml).
#   scripts/contract.sh [service ...]      (default: every service of the suite)
# Prints one summary line per service and fails if any service failed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
VENV="$CACHE_DIR/schemathesis-$SCHEMATHESIS_VERSION"
if [[ ! -e $VENV/.installed ]]; then
  log "installing schemathesis $SCHEMATHESIS_VERSION into $(rel "$VENV")"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
  touch "$VENV/.installed"
fi
TOKEN=$(<"$RUN_DIR/token")
LOGS="$RUN_DIR/contract" && mkdir -p "$LOGS"

wanted=("$@")
failed=()
for entry in "${SUITE_SERVICES[@]}"; do
  name=${entry%%:*} port=${entry##*:}
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name "* ]]; then continue; fi
  log "$name (:$port)"
  # The summary line is schemathesis's last: "== N failures ... in 5.3s ==".
  # Every check runs by default; `--checks` here would override the
  # per-operation settings of the config file.
  if (cd "$LOGS" && "$VENV/bin/schemathesis" --no-color \
      --config-file "$ROOT/scripts/contract/schemathesis.toml" run \
      "http://127.0.0.1:$port/openapi.json" --wait-for-schema 30 \
      -H "Authorization: Bearer $TOKEN") >"$LOGS/$name.log" 2>&1; then
    status=ok
  else
    status=FAIL
    failed+=("$name")
  fi
  cases=$(grep -E '^ *[0-9]+ generated' "$LOGS/$name.log" | tail -n 1 | sed 's/^ *//' || true)
  summary=$(grep -E '^=+ .* =+$' "$LOGS/$name.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//' || true)
  printf 'contract: %-4s %-20s %s | %s\n' "$status" "$name" "${cases:-no test cases}" "${summary:-$(tail -n 1 "$LOGS/$name.log")}"
done
if ((${#failed[@]})); then
  for name in "${failed[@]}"; do
    log "---- $name ($(rel "$LOGS/$name.log")) ----"
    sed -n '/FAILURES/,/SUMMARY/p' "$LOGS/$name.log" | head -n 80 >&2
  done
  die "the API contract failed for: ${failed[*]}"
fi
log "every service keeps its API contract"
