// Package pgtest starts the PostgreSQL containers the integration suite
// runs against (testcontainers-go): the suite's shared server, whose
// databases it hands out through package testdb, servers of a test's own
// that it may stop, crash and restart (NewServer), and PgBouncer in
// transaction pooling in front of one (PgBouncer). Only the integration
// package imports it, so that its dependencies never reach the library's
// consumers.
package pgtest
