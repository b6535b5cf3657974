// Package backend moves message bodies in and out of one PostgreSQL table
// over a pgx connection pool. It implements RetrySpool's datastorage.Backend
// as a drop-in replacement for RetrySpool's own PostgreSQL backend (same
// table layout, same NewFactory/WithTableName/WithConnectionLimits API), and
// it is the engine that package tenant runs for every tenant.
//
// Bodies travel as BYTEA in pgx's binary format, through prepared (or
// described) statements; the text "exec" modes, which hex-encode BYTEA and
// double the bytes on the wire, are refused. Every statement names its table
// fully qualified and quoted; nothing depends on search_path.
//
// The package knows tables, not tenants: a Target may select rows by a
// partition column and carry a write condition, both supplied by the caller.
package backend
