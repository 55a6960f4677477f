#!/usr/bin/env bash
# Validate docker-compose.yml without a Docker engine: `config` only parses,
# interpolates and schema-checks the file. Uses the Compose v2 plugin if
# present, else Debian's docker-compose package (the only Compose that plain
# Debian bookworm apt offers; installed if missing).
#   scripts/validate-compose.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  apt_install_if_missing docker-compose docker-compose
  compose=(docker-compose)
fi
log "validating docker-compose.yml with: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"
# A dummy token so the check does not depend on the caller's environment.
KAPPA_ADMIN_TOKEN=${KAPPA_ADMIN_TOKEN:-validate} "${compose[@]}" -f docker-compose.yml config -q
log "docker-compose.yml is valid"
