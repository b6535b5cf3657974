#!/usr/bin/env bash
# Starts and stops the PostgreSQL server that package tests and Examples
# use (PGTENANT_TEST_DSN; the integration suite starts its own containers).
#
#   scripts/test-server.sh start IMAGE   # prints the server's DSN
#   scripts/test-server.sh stop          # removes the container
#
# The container is named pgtenant-test-<uid>; start replaces one left
# behind by an interrupted run.
set -euo pipefail
name="pgtenant-test-$(id -u)"
log() { echo "test-server: $*" >&2; }

case "${1:-}" in
start)
  image=${2:?usage: test-server.sh start IMAGE}
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" -p 127.0.0.1::5432 -e POSTGRES_PASSWORD=postgres \
    "$image" postgres -c max_connections=200 -c fsync=off >/dev/null
  port=$(docker port "$name" 5432/tcp | head -n 1 | sed 's/.*://')
  for _ in $(seq 1 120); do
    # Ready once the entrypoint's set-up is over and the server listens on TCP.
    if docker exec "$name" pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
      echo "postgres://postgres:postgres@127.0.0.1:$port/postgres?sslmode=disable"
      exit 0
    fi
    sleep 0.5
  done
  log "the server did not become ready within 60 s; its log:"
  docker logs "$name" >&2 || true
  exit 1
  ;;
stop)
  docker rm -f "$name" >/dev/null 2>&1 || true
  ;;
*)
  sed -n '2,9p' "$0"
  exit 2
  ;;
esac
