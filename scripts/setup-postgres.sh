#!/usr/bin/env bash
# Installs PostgreSQL 15 from Debian, starts its cluster (there is no systemd here) and makes the
# role the tests use, idempotently. Prints the URL tests read from SWIFTLET_TEST_POSTGRES; with
# `--fresh NAME`, (re)creates an empty database NAME and prints its URL instead.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export PGOPTIONS="-c client_min_messages=warning"
as_postgres() { if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
if ! dpkg-query -W -f='${Status}' postgresql-15 2>/dev/null | grep -q "install ok installed"; then
  echo "setup-postgres: installing postgresql-15" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
[ -d /etc/postgresql/15/main ] || $SUDO pg_createcluster 15 main >/dev/null
wait_ready() {
  for _ in $(seq 50); do
    as_postgres psql -qAtc "SELECT 1" >/dev/null 2>&1 && return
    sleep 0.2
  done
}
if ! pg_lsclusters -h | awk '$1 == 15 && $2 == "main" { exit $4 == "online" ? 0 : 1 }'; then
  $SUDO pg_ctlcluster 15 main start >&2
fi
wait_ready
# Tests run several servers and stores at once, each with its own pool: more than the default 100.
if [ "$(as_postgres psql -qAtc "SHOW max_connections")" -lt 300 ]; then
  as_postgres psql -qAtc "ALTER SYSTEM SET max_connections = 300" >/dev/null
  $SUDO pg_ctlcluster 15 main restart >&2
  wait_ready
fi
# A role that may create databases: each store test gets a database of its own.
as_postgres psql -qAt >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'swiftlet') THEN
    CREATE ROLE swiftlet LOGIN CREATEDB PASSWORD 'swiftlet';
  END IF;
END $$;
SQL
as_postgres psql -qAtc "SELECT 1 FROM pg_database WHERE datname = 'swiftlet'" | grep -q 1 \
  || as_postgres createdb -O swiftlet swiftlet
if [ "${1:-}" = "--fresh" ]; then
  name="${2:?usage: setup-postgres.sh --fresh NAME}"
  [[ "$name" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "setup-postgres: bad database name '$name'" >&2; exit 2; }
  as_postgres dropdb --if-exists --force "$name"
  as_postgres createdb -O swiftlet "$name"
  echo "postgres://swiftlet:swiftlet@127.0.0.1:5432/$name"
else
  # Databases a killed test run left behind (tests make swiftlet_t_* and swiftlet_it_*).
  for leftover in $(as_postgres psql -qAtc "SELECT datname FROM pg_database WHERE datname ~ '^swiftlet_(t|it)_'"); do
    as_postgres dropdb --if-exists --force "$leftover"
  done
  echo "postgres://swiftlet:swiftlet@127.0.0.1:5432/swiftlet"
fi
