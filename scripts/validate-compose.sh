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
# Without a token the file must refuse to start anything (no default secret).
if env -u KAPPA_ADMIN_TOKEN "${compose[@]}" -f docker-compose.yml config -q >/dev/null 2>&1; then
  die "docker-compose.yml accepts a missing KAPPA_ADMIN_TOKEN"
fi
# Every service scripts/up.sh starts is in the file, on the same host port,
# and so is Mailpit (SMTP and web UI).
services=("${SUITE_SERVICES[@]}" mailpit:1025 mailpit:8025)
config=$(mktemp)
KAPPA_ADMIN_TOKEN=validate "${compose[@]}" -f docker-compose.yml config >"$config"
for spec in "${services[@]}"; do
  name=${spec%%:*} port=${spec##*:}
  # Debian's python3 has PyYAML (docker-compose needs it).
  /usr/bin/python3 - "$config" "$name" "$port" <<'PY' || die "scripts/up.sh runs $name on :$port; docker-compose.yml does not"
import sys, yaml
path, name, port = sys.argv[1:4]
service = yaml.safe_load(open(path))["services"].get(name) or {}
ports = [str(p.get("published")) if isinstance(p, dict) else str(p).split(":")[-2] for p in service.get("ports", [])]
sys.exit(0 if port in ports else 1)
PY
done
rm -f "$config"
log "docker-compose.yml is valid and defines every service of scripts/up.sh (${#services[@]})"
