# pgtenant: `make test` prepares Docker and a PostgreSQL image (see
# scripts/ensure-postgres.sh), then vets and runs every test with -race;
# `make demo` prepares the same and runs `pgtenant demo` (see README).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

export TESTCONTAINERS_RYUK_DISABLED ?= true
export TESTCONTAINERS_HOST_OVERRIDE ?= 127.0.0.1

GO ?= go
BENCH ?= .
BENCHTIME ?= 3s

.PHONY: test demo bench fuzz image

image:
	@scripts/ensure-postgres.sh

test:
	export PGTENANT_POSTGRES_IMAGE=$$(scripts/ensure-postgres.sh); \
	export PGTENANT_PGBOUNCER_IMAGE=$$(scripts/ensure-postgres.sh --pgbouncer); \
	echo "using images $$PGTENANT_POSTGRES_IMAGE (server), $$PGTENANT_PGBOUNCER_IMAGE (PgBouncer)"; \
	$(GO) vet ./...; \
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }; \
	$(GO) test -race -count=1 -timeout 30m ./...

demo:
	export PGTENANT_POSTGRES_IMAGE=$$(scripts/ensure-postgres.sh); \
	$(GO) run ./cmd/pgtenant demo

bench:
	export PGTENANT_POSTGRES_IMAGE=$$(scripts/ensure-postgres.sh); \
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./integration/...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzTenantName -fuzztime 30s ./schema/
