package ddl

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
)

// Schema returns the statement that creates schema name if missing.
func Schema(name string) string {
	return "CREATE SCHEMA IF NOT EXISTS " + quote(name)
}

// Table returns the statements that create the message table t, its
// indexes and its chunk table if they are missing. The message table has
// RetrySpool's original layout, so tables created by that backend are used
// as they are:
//
//	message_id VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL,
//	size BIGINT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now(),
//	updated TIMESTAMPTZ NOT NULL DEFAULT now()
//
// with indexes idx_<table>_created and idx_<table>_updated, plus one nullable
// column, chunked_version BIGINT, added to existing tables (a catalog-only
// change): NULL for a body kept in data, else the version of a body kept in
// pieces in t.Chunks() (message_id, version, seq, data), with data empty.
// When shared is true both tables also have a leading tenant_id column, the
// primary keys lead with it and so do the indexes.
func Table(t schema.Table, shared bool) []string {
	q := t.Sanitize()
	lead, tenantCol := "", ""
	cols := "message_id VARCHAR(255) NOT NULL PRIMARY KEY, "
	if shared {
		lead = schema.TenantColumn + ", "
		tenantCol = schema.TenantColumn + " pg_catalog.text NOT NULL, "
		cols = tenantCol + "message_id VARCHAR(255) NOT NULL, "
	}
	cols += "data pg_catalog.bytea NOT NULL, size BIGINT NOT NULL, " +
		"created pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(), " +
		"updated pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now()"
	if shared {
		cols += ", PRIMARY KEY (" + lead + "message_id)"
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + q + " (" + cols + ", chunked_version BIGINT)",
		"ALTER TABLE " + q + " ADD COLUMN IF NOT EXISTS chunked_version BIGINT",
		"CREATE INDEX IF NOT EXISTS " + quote(IndexName(t, "created")) + " ON " + q + " (" + lead + "created)",
		"CREATE INDEX IF NOT EXISTS " + quote(IndexName(t, "updated")) + " ON " + q + " (" + lead + "updated)",
		"CREATE TABLE IF NOT EXISTS " + t.Chunks().Sanitize() + " (" + tenantCol +
			"message_id VARCHAR(255) NOT NULL, version BIGINT NOT NULL, seq INT NOT NULL, data pg_catalog.bytea NOT NULL, " +
			"PRIMARY KEY (" + lead + "message_id, version, seq))",
	}
}

// MetaTable returns the statements that create the metadata table of
// message table t, t.Meta(), if missing: one row per RetrySpool message,
// keyed like t, with an index on (state, created, message_id) that
// iterators page along and that counts per state use. When shared is true
// the table has a leading tenant_id column, and the key and the index lead
// with it.
//
//	message_id VARCHAR(255), meta_id TEXT (the metadata's own ID field),
//	state SMALLINT, attempts INT, max_attempts INT, next_retry TIMESTAMPTZ,
//	created TIMESTAMPTZ, updated TIMESTAMPTZ, last_error TEXT, size BIGINT,
//	priority INT, headers JSONB (NULL for a nil map), retry_policy TEXT
func MetaTable(t schema.Table, shared bool) []string {
	m := t.Meta()
	lead, tenantCol := "", ""
	if shared {
		lead = schema.TenantColumn + ", "
		tenantCol = schema.TenantColumn + " pg_catalog.text NOT NULL, "
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + m.Sanitize() + " (" + tenantCol +
			"message_id VARCHAR(255) NOT NULL, meta_id pg_catalog.text NOT NULL, state SMALLINT NOT NULL," +
			" attempts INT NOT NULL, max_attempts INT NOT NULL, next_retry pg_catalog.timestamptz NOT NULL," +
			" created pg_catalog.timestamptz NOT NULL, updated pg_catalog.timestamptz NOT NULL," +
			" last_error pg_catalog.text NOT NULL, size BIGINT NOT NULL, priority INT NOT NULL," +
			" headers pg_catalog.jsonb, retry_policy pg_catalog.text NOT NULL," +
			" PRIMARY KEY (" + lead + "message_id))",
		"CREATE INDEX IF NOT EXISTS " + quote(IndexName(m, "state")) + " ON " + m.Sanitize() +
			" (" + lead + "state, created, message_id)",
		"ALTER TABLE " + m.Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05)",
	}
}

// Objects returns every statement that creates a tenant's objects at p, at
// the current version: its schema (if it owns one), its tables (unless
// they are shared, which the layout's setup creates) and every migration.
// Each is idempotent, so running them all also repairs objects dropped by
// hand under a registry row that is already current.
func Objects(p schema.Placement) []string {
	var stmts []string
	if p.OwnSchema() {
		stmts = append(stmts, Schema(p.Table.Schema))
	}
	if !p.Shared() {
		stmts = append(stmts, Table(p.Table, false)...)
		stmts = append(stmts, Migrate(0, p.Table, false)...)
	}
	return stmts
}

// Shared returns the statements that create a shared table t, its chunk
// and metadata tables and its schema, at the current version.
func Shared(t schema.Table) []string {
	stmts := append([]string{Schema(t.Schema)}, Table(t, true)...)
	return append(stmts, Migrate(0, t, true)...)
}

// Exists reports whether table t exists.
func Exists(ctx context.Context, db pg.DB, t schema.Table) (bool, error) {
	var exists bool
	err := db.QueryRow(ctx, "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NOT NULL", t.Sanitize()).Scan(&exists)
	return exists, err
}

// EnsureTable creates the message table t (see Table), its chunk table and
// its schema, unless they exist; an existing table without the chunk table
// (one made by RetrySpool's original backend) gets the chunked_version
// column and the chunk table. Concurrent callers in any number of processes
// are serialised by an advisory lock keyed by t.
func EnsureTable(ctx context.Context, db pg.DB, t schema.Table) error {
	if ok, err := Exists(ctx, db, t.Chunks()); err != nil || ok {
		return err
	}
	return pg.InTx(ctx, db, "table:"+t.String(), func(tx pgx.Tx) error {
		return pg.ExecAll(ctx, tx, append([]string{Schema(t.Schema)}, Table(t, false)...)...)
	})
}

// IndexName returns the name of t's index on column: idx_<table>_<column>,
// as RetrySpool's original backend named it, or, when that would exceed 63
// bytes, a shortened form ending in a hash of the full name so that the
// indexes of one table never share a name.
func IndexName(t schema.Table, column string) string {
	name := "idx_" + t.Name + "_" + column
	if len(name) <= schema.MaxIdentifierLength {
		return name
	}
	h := hashName(name)[:12]
	return name[:schema.MaxIdentifierLength-len(h)-1] + "_" + h
}

func quote(ident string) string { return pgx.Identifier{ident}.Sanitize() }

var nameEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func hashName(s string) string {
	sum := sha256.Sum256([]byte(s))
	return nameEncoding.EncodeToString(sum[:])
}

// WithoutAssignments returns sql without the assignments of its SET
// clauses ("col = value" is not an operator): tests use it to look for
// unqualified operators.
func WithoutAssignments(sql string) string {
	for {
		i := strings.Index(sql, " SET ")
		if i < 0 {
			return sql
		}
		rest := sql[i+5:]
		j := strings.Index(rest, " WHERE ")
		if j < 0 {
			return sql[:i]
		}
		sql = sql[:i] + rest[j:]
	}
}
