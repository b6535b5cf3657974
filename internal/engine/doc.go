// Package engine moves message bodies and metadata in and out of one
// PostgreSQL table set (see package ddl for the layout): inline bodies with
// one statement, large ones streamed in chunks inside a transaction,
// reads, deletes, stats and purges (Store), RetrySpool metadata (MetaStore),
// the retry policy, and the tracking that lets a backend's Close end its
// open streams. It is the engine under backend.Backend and under every
// tenant of package tenant; it knows no tenants: a Target names the tables,
// the partition of a shared table, and a guard condition that an owner
// (the registry) supplies.
//
// Every statement is a template of package stmt, all of them in sql.go:
// quoted identifiers filled in once per target, values bound by name.
// Operators, functions and types are qualified with pg_catalog, so a
// caller's search_path cannot redirect them, and timestamps are bound, not
// computed by the server, as Citus requires (see internal/golden).
package engine
