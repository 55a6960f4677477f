#!/usr/bin/env bash
# Removes what earlier test runs left behind: a test run killed (SIGKILL, a
# limit, a crashed machine) never drops its database or deletes its topics.
# Only test names are touched: databases `t_<name>_<10 hex>[_<n>]` and
# topics holding a test's 10-hex suffix (`<name>-<10 hex>-events`, ...),
# never the suite's own. Run before the tests, with nothing else testing.
#   scripts/clean-tests.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BROKER=${KAPPA_TEST_BROKERS:-127.0.0.1:9092}
URL=${KAPPA_TEST_DATABASE_URL:-postgres://kappa:kappa@127.0.0.1:5432/kappa}
PSQL=$(pg_bin)/psql
[[ -x $PSQL ]] || die "psql not found under /usr/lib/postgresql (scripts/postgres.sh installs it)"

databases=$("$PSQL" -X -At "$URL" -c "SELECT datname FROM pg_database WHERE datname ~ '^t_[a-z0-9_]*_[0-9a-f]{10}(_[0-9]+)?$'")
for db in $databases; do
  "$PSQL" -X -q "$URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || log "could not drop database $db"
done

pattern='.*-[0-9a-f]{10}([-.].*)?'
topics=$(kcat -L -b "$BROKER" 2>/dev/null | sed -n 's/^  topic "\([^"]*\)".*/\1/p' | grep -E "^${pattern}$" || true)
if [[ -n $topics ]]; then
  limit 300 "deleting test topics" "$ROOT/scripts/kafka-cli.sh" topics --bootstrap-server "$BROKER" \
    --delete --topic "$pattern" >/dev/null || log "could not delete every test topic"
fi
log "removed $(wc -w <<<"$databases") test database(s) and $(wc -w <<<"$topics") test topic(s) left by earlier runs"
