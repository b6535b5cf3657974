# pgtenant: `make test` prepares Docker and a PostgreSQL image (see
# scripts/ensure-postgres.sh), starts a server for the package tests
# (scripts/test-server.sh, PGTENANT_TEST_DSN), then vets and runs every
# test with -race;
# `make demo` prepares the same and runs `pgtenant demo` (see README).
#
# Packages are tested one at a time (-p 1): the integration package's
# latency assertions (TestAffinityFairness) then do not share the 2 cores
# with other packages' tests; it costs about 20 s.
#
# A failing set-up step stops the target with the script's own message:
# each image name is assigned on its own (VAR=$(...)) so that the shell's
# -e sees the script's exit status, which `export VAR=$(...)` would hide.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

export TESTCONTAINERS_RYUK_DISABLED ?= true
export TESTCONTAINERS_HOST_OVERRIDE ?= 127.0.0.1
# Integration tests that cannot start PostgreSQL fail instead of skipping.
# PGTENANT_REQUIRE_DOCKER=0 make test lets them skip (with a warning).
export PGTENANT_REQUIRE_DOCKER ?= 1

GO ?= go
ENSURE ?= scripts/ensure-postgres.sh
# The server of the package tests and Examples (the integration suite
# starts containers of its own).
TEST_SERVER ?= scripts/test-server.sh
SETUP_LOG ?= /tmp/pgtenant-setup.log
BENCH ?= .
BENCHTIME ?= 3s

.PHONY: test test-citus demo bench fuzz image

image:
	@$(ENSURE)

test:
	PGTENANT_POSTGRES_IMAGE=$$($(ENSURE)); export PGTENANT_POSTGRES_IMAGE; \
	PGTENANT_PGBOUNCER_IMAGE=$$($(ENSURE) --pgbouncer); export PGTENANT_PGBOUNCER_IMAGE; \
	echo "using images $$PGTENANT_POSTGRES_IMAGE (server), $$PGTENANT_PGBOUNCER_IMAGE (PgBouncer)"; \
	trap '$(TEST_SERVER) stop' EXIT; \
	PGTENANT_TEST_DSN=$$($(TEST_SERVER) start "$$PGTENANT_POSTGRES_IMAGE"); export PGTENANT_TEST_DSN; \
	$(GO) vet ./...; \
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }; \
	[ "$$PGTENANT_REQUIRE_DOCKER" = 1 ] || echo "WARNING: PGTENANT_REQUIRE_DOCKER=$$PGTENANT_REQUIRE_DOCKER: integration tests that cannot start PostgreSQL are SKIPPED, not failed"; \
	$(GO) test -race -count=1 -p 1 -timeout 30m ./...

# The Citus suite (integration/citus, build tag citus) against the
# coordinator at PGTENANT_CITUS_DSN, or else the cluster of $(CITUS_CLUSTER)
# (started, and given a fresh database). It fails when there is neither.
# Not part of `make test`: CI cannot build Citus.
CITUS_CLUSTER ?= ../shared/citus/cluster.sh
test-citus:
	if [ -z "$${PGTENANT_CITUS_DSN:-}" ]; then \
	  [ -f "$(CITUS_CLUSTER)" ] || { echo "no Citus: set PGTENANT_CITUS_DSN to a coordinator's DSN, or CITUS_CLUSTER to cluster.sh"; exit 1; }; \
	  bash "$(CITUS_CLUSTER)" start >/dev/null; \
	  PGTENANT_CITUS_DSN=$$(bash "$(CITUS_CLUSTER)" fresh pgtenant_citus); export PGTENANT_CITUS_DSN; \
	fi; \
	echo "Citus coordinator: $$PGTENANT_CITUS_DSN"; \
	$(GO) test -tags citus -count=1 -v -timeout 30m ./integration/citus

# The set-up's progress lines (ensure-postgres: ..., one every 20 s while
# an image builds) show on the screen; all of its output, apt's and
# Docker's included, goes to $(SETUP_LOG).
demo:
	@echo "setting up Docker and a PostgreSQL image (full log: $(SETUP_LOG))"; \
	if ! $(ENSURE) 2>&1 >$(SETUP_LOG).image | tee $(SETUP_LOG) | sed -un 's/^ensure-postgres: /  /p'; then \
	  echo "set-up failed; the end of its log:"; tail -n 20 $(SETUP_LOG); exit 1; \
	fi; \
	PGTENANT_POSTGRES_IMAGE=$$(cat $(SETUP_LOG).image); export PGTENANT_POSTGRES_IMAGE; \
	echo "ready ($$PGTENANT_POSTGRES_IMAGE)"; \
	$(GO) run ./cmd/pgtenant demo

bench:
	PGTENANT_POSTGRES_IMAGE=$$($(ENSURE)); export PGTENANT_POSTGRES_IMAGE; \
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./integration/...

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzTenantName -fuzztime 30s ./schema/
