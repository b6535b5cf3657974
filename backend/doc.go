// Package backend is a drop-in replacement for RetrySpool's PostgreSQL data
// backend: a datastorage.Factory whose Backends keep message bodies in one
// table over a pgx connection pool, with the same table layout and the same
// NewFactory/WithTableName/WithConnectionLimits API.
//
// Bodies travel as BYTEA in pgx's binary format, through prepared (or
// described) statements; the text "exec" modes, which hex-encode BYTEA and
// double the bytes on the wire, are refused. Bodies larger than 1 MiB are
// streamed in chunks, so neither side holds a whole large body in memory.
// Every statement names its table fully qualified and quoted and qualifies
// its operators and functions with pg_catalog; nothing depends on
// search_path.
//
// Failures are classified at this edge: a failed or lost connection is
// ErrConnection (for a write, old or new version, complete; the outcome is
// unknown), the caller's context ends as the context's error, and a refused
// statement stays a *pgconn.PgError. An operation is repeated by itself only
// when the repeat cannot change the outcome: a request pgx reports as never
// sent (pgconn.SafeToRetry), a stale cached plan (once), and a read whose
// connection was lost (once). A write or delete that reached the server is
// never repeated.
//
// For many tenants on one pool, see package tenant, which runs the same
// engine for every tenant.
package backend
