#!/usr/bin/env bash
# Test the suite: bring up what the tests need (scripts/up.sh), run every unit
# and integration test against the real broker and database, then an
# end-to-end smoke through the running services.
#   scripts/test.sh [extra cargo test args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/scripts/up.sh"
# The dashboard's page is checked in a real browser.
apt_install_if_missing chromium chromium

log "cargo test --workspace"
(cd "$ROOT" && cargo test --workspace "$@")

log "end-to-end smoke"
"$ROOT/scripts/smoke.sh"
