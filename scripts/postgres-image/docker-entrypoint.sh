#!/bin/bash
# Entrypoint of the locally built pgtenant/postgres image. It behaves like the
# official postgres image's entrypoint for what testcontainers uses:
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, /docker-entrypoint-initdb.d/*.sql,
# and extra server arguments (e.g. "postgres -c fsync=off").
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"

if [ "${1:-}" = postgres ]; then
  shift
fi

as_pg() { runuser -u postgres -- "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" >"$pwfile"
  chown postgres "$pwfile"
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"

  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -w -o "-c listen_addresses=''" start
  psql=("$PGBIN/psql" -h /var/run/postgresql -p 5432 -U "$user" -v ON_ERROR_STOP=1 -q)
  if [ "$db" != postgres ]; then
    as_pg "${psql[@]}" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$f" ] || continue
    as_pg "${psql[@]}" -d "$db" -f "$f"
  done
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
