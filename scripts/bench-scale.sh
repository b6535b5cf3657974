#!/usr/bin/env bash
# Runs BenchmarkScale (10 000 tenants on one server) one isolation mode per
# process, each with a fresh PostgreSQL container. Output: one go test
# -bench text per mode in ${OUT:-bench-out}/. Usage:
# scripts/bench-scale.sh [benchtime] [count]
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
for mode in schema-per-tenant table-per-tenant; do
  go test -v -run '^$' -bench "BenchmarkScale/mode=$mode/" -benchtime "$benchtime" -count "$count" \
    -timeout 90m ./integration/ | tee "$out/scale-$mode.txt"
done
