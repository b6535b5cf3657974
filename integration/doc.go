// Package integration proves pgtenant against real PostgreSQL: its tests
// start a server with testcontainers-go once per test package (TestMain),
// give each test its own database, and run the conformance suite
// (package conformance) against every backend and isolation mode.
//
// The image comes from PGTENANT_POSTGRES_IMAGE (default postgres:17-alpine).
// Without Docker the tests skip with a one-line reason, unless
// PGTENANT_REQUIRE_DOCKER=1, which makes that a failure; `make test` prepares
// Docker and an image first.
package integration
