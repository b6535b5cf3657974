#!/usr/bin/env bash
# Runs the router benchmarks one isolation mode per process (each process
# gets a fresh PostgreSQL container), so that one mode's thousands of
# tenants do not slow the next. Output: one go test -bench text per mode in
# ${OUT:-bench-out}/. Usage: scripts/bench-router.sh [benchtime] [count]
source "$(dirname "$0")/bench-env.sh"
for mode in schema-per-tenant table-per-tenant shared-table; do
  go test -run '^$' -bench "BenchmarkRouterCycle/mode=$mode/" -benchtime "$benchtime" -count "$count" \
    -timeout 60m ./integration/ | tee "$out/router-$mode.txt"
done
go test -run '^$' -bench 'BenchmarkStatementStrategy|BenchmarkColdTenant' -benchtime "$benchtime" -count "$count" \
  -timeout 60m ./integration/ | tee "$out/strategy.txt"
