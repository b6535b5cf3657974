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
// Failures are classified at this edge: a failed or lost connection is
// ErrConnection (for a write, old or new version, complete; the outcome is
// unknown), the caller's context ends as the context's error, and a refused
// statement stays a *pgconn.PgError. An operation is repeated by itself only
// when the repeat cannot change the outcome: a request pgx reports as never
// sent (pgconn.SafeToRetry), a stale cached plan (once), and a read whose
// connection was lost (once). A write or delete that reached the server is
// never repeated.
//
// The package knows tables, not tenants: a Target may select rows by a
// partition column and carry a write condition, both supplied by the caller.
package backend
