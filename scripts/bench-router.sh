#!/usr/bin/env bash
# Runs the router benchmarks one isolation mode per process (each process
# gets a fresh PostgreSQL container), so that one mode's thousands of
# tenants do not slow the next. Output: one go test -bench text per mode in
# ${OUT:-bench-out}/. Usage: scripts/bench-router.sh [benchtime] [count]
set -euo pipefail
cd "$(dirname "$0")/.."
benchtime=${1:-3s}
count=${2:-1}
out=${OUT:-bench-out}
mkdir -p "$out"
export TESTCONTAINERS_RYUK_DISABLED=${TESTCONTAINERS_RYUK_DISABLED:-true}
export TESTCONTAINERS_HOST_OVERRIDE=${TESTCONTAINERS_HOST_OVERRIDE:-127.0.0.1}
PGTENANT_POSTGRES_IMAGE=$(scripts/ensure-postgres.sh)
export PGTENANT_POSTGRES_IMAGE
for mode in schema-per-tenant table-per-tenant shared-table; do
  go test -run '^$' -bench "BenchmarkRouterCycle/mode=$mode/" -benchtime "$benchtime" -count "$count" \
    -timeout 60m ./integration/ | tee "$out/router-$mode.txt"
done
go test -run '^$' -bench 'BenchmarkStatementStrategy|BenchmarkColdTenant' -benchtime "$benchtime" -count "$count" \
  -timeout 60m ./integration/ | tee "$out/strategy.txt"
