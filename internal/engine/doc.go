// Package engine moves message bodies in and out of one PostgreSQL table
// (see package ddl for its layout): inline bodies with one statement, large
// ones streamed in chunks inside a transaction, reads, deletes, stats and
// purges. It is the engine under backend.Backend and under every tenant of
// tenant.Router; users don't call it.
//
// Every statement names its tables fully qualified and quoted, and
// qualifies operators, functions and types with pg_catalog, so a caller's
// search_path cannot redirect them. Upserts compute their timestamps in
// the VALUES list and take them from EXCLUDED, as Citus requires.
package engine
