// Package testdb gives tests databases of their own on a PostgreSQL
// server. Package tests and Examples find the server in
// PGTENANT_TEST_DSN, which `make test` sets (it starts a container with
// scripts/test-server.sh); package internal/pgtest, for the integration
// suite, starts a container and points this package at it with SetServer.
//
// It imports nothing but pgx and the standard library: the library's
// packages use it in their tests, and whatever their tests import lands
// in the go.sum of every program that imports them.
package testdb
