#!/usr/bin/env bash
# Runs BenchmarkScale (10 000 tenants on one server) one isolation mode per
# process, each with a fresh PostgreSQL container. Output: one go test
# -bench text per mode in ${OUT:-bench-out}/. Usage:
# scripts/bench-scale.sh [benchtime] [count]
source "$(dirname "$0")/bench-env.sh"
for mode in schema-per-tenant table-per-tenant; do
  go test -v -run '^$' -bench "BenchmarkScale/mode=$mode/" -benchtime "$benchtime" -count "$count" \
    -timeout 90m ./integration/ | tee "$out/scale-$mode.txt"
done
