package ddl

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/stmt"
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
//
// Table is the layout of the single-table backend. A tenant's tables
// (Objects, Shared) lack the created index since version 6: no statement
// reads it, and every store paid for it.
func Table(t schema.Table, shared bool) []string { return table(t, shared, true) }

// table is Table, with the created index or without.
func table(t schema.Table, shared, createdIndex bool) []string {
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
	out := []string{
		"CREATE TABLE IF NOT EXISTS " + q + " (" + cols + ", chunked_version BIGINT)",
		"ALTER TABLE " + q + " ADD COLUMN IF NOT EXISTS chunked_version BIGINT",
	}
	if createdIndex {
		out = append(out, "CREATE INDEX IF NOT EXISTS "+quote(IndexName(t, "created"))+" ON "+q+" ("+lead+"created)")
	}
	return append(out,
		"CREATE INDEX IF NOT EXISTS "+quote(IndexName(t, "updated"))+" ON "+q+" ("+lead+"updated)",
		"CREATE TABLE IF NOT EXISTS "+t.Chunks().Sanitize()+" ("+tenantCol+
			"message_id VARCHAR(255) NOT NULL, version BIGINT NOT NULL, seq INT NOT NULL, data pg_catalog.bytea NOT NULL, "+
			"PRIMARY KEY ("+lead+"message_id, version, seq))",
	)
}

// createdIndex is the created index of message table t, schema-qualified
// and quoted.
func createdIndex(t schema.Table) string {
	return schema.Table{Schema: t.Schema, Name: IndexName(t, "created")}.Sanitize()
}

// MetaTable returns the statements that create the metadata table of
// message table t, t.Meta(), if missing, at the current layout: one row
// per RetrySpool message, keyed like t, with an index on (state, created,
// message_id) that iterators page along and that counts per state use.
// When shared is true the table has a leading tenant_id column, and the
// key and the index lead with it.
//
// Every string a caller gives is kept byte for byte, whatever it holds
// (invalid UTF-8, NUL): the metadata's own ID, LastError and
// RetryPolicyName are bytea, and headers are a bytea[] of key, value,
// key, value... sorted by key (NULL for a nil map). Integers are BIGINT,
// like Go's int.
//
//	message_id VARCHAR(255), meta_id BYTEA, state SMALLINT,
//	attempts BIGINT, max_attempts BIGINT, next_retry TIMESTAMPTZ,
//	created TIMESTAMPTZ, updated TIMESTAMPTZ, last_error BYTEA,
//	size BIGINT, priority BIGINT, headers BYTEA[], retry_policy BYTEA
func MetaTable(t schema.Table, shared bool) []string {
	m := t.Meta()
	lead, tenantCol := "", ""
	if shared {
		lead = schema.TenantColumn + ", "
		tenantCol = schema.TenantColumn + " pg_catalog.text NOT NULL, "
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + m.Sanitize() + " (" + tenantCol +
			"message_id VARCHAR(255) NOT NULL, meta_id pg_catalog.bytea NOT NULL, state SMALLINT NOT NULL," +
			" attempts BIGINT NOT NULL, max_attempts BIGINT NOT NULL, next_retry pg_catalog.timestamptz NOT NULL," +
			" created pg_catalog.timestamptz NOT NULL, updated pg_catalog.timestamptz NOT NULL," +
			" last_error pg_catalog.bytea NOT NULL, size BIGINT NOT NULL, priority BIGINT NOT NULL," +
			" headers pg_catalog.bytea[], retry_policy pg_catalog.bytea NOT NULL," +
			" PRIMARY KEY (" + lead + "message_id))",
		"CREATE INDEX IF NOT EXISTS " + quote(IndexName(m, "state")) + " ON " + m.Sanitize() +
			" (" + lead + "state, created, message_id)",
		"ALTER TABLE " + m.Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05)",
	}
}

// StateTable returns the statements that create the tenant-state table of
// a shared table t, t.State(), if missing: one row per tenant of t, with
// its state ('active' or 'deleted'), which every statement on the tenant's
// rows checks (see registry.Guards). The unique index on (tenant_id,
// state) makes state a key column: an UPDATE of it takes the row's FOR
// UPDATE lock, which waits for the writes in flight that hold it FOR KEY
// SHARE, on every node that has the row.
func StateTable(t schema.Table) []string {
	s := t.State()
	return []string{
		"CREATE TABLE IF NOT EXISTS " + s.Sanitize() + " (" + schema.TenantColumn + " pg_catalog.text NOT NULL PRIMARY KEY," +
			" state pg_catalog.text NOT NULL CHECK (state OPERATOR(pg_catalog.=) 'active' OR state OPERATOR(pg_catalog.=) 'deleted'))",
		"CREATE UNIQUE INDEX IF NOT EXISTS " + quote(IndexName(s, "state")) + " ON " + s.Sanitize() + " (" + schema.TenantColumn + ", state)",
	}
}

// sharedState creates the tenant-state table of a shared table t and fills
// it from the registry (registry is its quoted name, store the layout's
// key there); a table at version 5 or later has it already. Per-tenant
// tables have none: their guard reads the registry.
func sharedState(t schema.Table, shared bool, registry, store string) Step {
	if !shared {
		return Step{}
	}
	s := t.State().Sanitize()
	return Step{
		Done:     "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NOT NULL",
		DoneArgs: []any{s},
		SQL: append(StateTable(t),
			"INSERT INTO "+s+" ("+schema.TenantColumn+", state) SELECT tenant_id, state FROM "+registry+
				" WHERE store OPERATOR(pg_catalog.=) "+literal(store)+" ON CONFLICT DO NOTHING"),
	}
}

// metaBytes converts a metadata table of version 3 (text, jsonb and INT
// columns) to the layout of MetaTable. The text columns become their
// UTF-8 bytes, which is what they held; a jsonb object of headers becomes
// its pairs. Its check skips it for a table already converted, such as one
// MetaTable created.
func metaBytes(t schema.Table, _ bool) Step {
	m := t.Meta().Sanitize()
	toBytes := func(col string) string {
		return "ALTER COLUMN " + col + " TYPE pg_catalog.bytea USING pg_catalog.convert_to(" + col + ", 'UTF8')"
	}
	return Step{
		Done: "SELECT COALESCE((SELECT atttypid OPERATOR(pg_catalog.=) 'pg_catalog.bytea'::pg_catalog.regtype FROM pg_catalog.pg_attribute" +
			" WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1::pg_catalog.text) AND attname OPERATOR(pg_catalog.=) 'last_error'), true)",
		DoneArgs: []any{m},
		SQL: []string{
			"ALTER TABLE " + m + " " + toBytes("meta_id") + ", " + toBytes("last_error") + ", " + toBytes("retry_policy") +
				", ALTER COLUMN attempts TYPE BIGINT, ALTER COLUMN max_attempts TYPE BIGINT, ALTER COLUMN priority TYPE BIGINT" +
				", ADD COLUMN header_pairs pg_catalog.bytea[]",
			"UPDATE " + m + " h SET header_pairs = COALESCE((SELECT pg_catalog.array_agg(x ORDER BY k COLLATE \"C\", o) FROM (" +
				"SELECT e.key AS k, 0 AS o, pg_catalog.convert_to(e.key, 'UTF8') AS x FROM pg_catalog.jsonb_each_text(h.headers) e" +
				" UNION ALL SELECT e.key, 1, pg_catalog.convert_to(e.value, 'UTF8') FROM pg_catalog.jsonb_each_text(h.headers) e) s)," +
				" '{}'::pg_catalog.bytea[]) WHERE h.headers IS NOT NULL",
			"ALTER TABLE " + m + " DROP COLUMN headers",
			"ALTER TABLE " + m + " RENAME COLUMN header_pairs TO headers",
		},
	}
}

// Step is DDL that runs in one round trip, unless its check says its
// effect is there already.
type Step struct {
	// SQL are the statements, in order.
	SQL []string
	// Done, if not empty, is a query returning one boolean, true when the
	// step's effect is there already: the step is then skipped. DoneArgs
	// are its arguments.
	Done     string
	DoneArgs []any
}

// steps makes unchecked steps of statements.
func steps(stmts ...string) []Step {
	if len(stmts) == 0 {
		return nil
	}
	return []Step{{SQL: stmts}}
}

// Run runs steps in tx in order. Unchecked steps in a row go to the server
// together, in one round trip.
func Run(ctx context.Context, tx pgx.Tx, steps ...Step) error { return run(ctx, tx, false, steps) }

// RunEach is Run with one round trip per statement: a Citus coordinator
// propagates DDL to its workers statement by statement, and refuses
// several in one query when it does.
func RunEach(ctx context.Context, tx pgx.Tx, steps ...Step) error { return run(ctx, tx, true, steps) }

func run(ctx context.Context, tx pgx.Tx, each bool, steps []Step) error {
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var err error
		if each {
			for _, s := range batch {
				if err = pg.ExecAll(ctx, tx, s); err != nil {
					break
				}
			}
		} else {
			err = pg.ExecAll(ctx, tx, batch...)
		}
		batch = nil
		return err
	}
	for _, s := range steps {
		if s.Done != "" {
			if err := flush(); err != nil {
				return err
			}
			var done bool
			if err := tx.QueryRow(ctx, s.Done, s.DoneArgs...).Scan(&done); err != nil {
				return err
			}
			if done {
				continue
			}
		}
		batch = append(batch, s.SQL...)
	}
	return flush()
}

// Objects returns the steps that create a tenant's objects at p, at the
// current version: its schema (if it owns one), its tables (unless they
// are shared, which the layout's setup creates) and every migration. Each
// is idempotent, so running them all also brings an older tenant's
// objects to the current version and repairs objects dropped by hand.
func Objects(p schema.Placement) []Step {
	if p.Shared() {
		return nil
	}
	var stmts []string
	if p.OwnSchema() {
		stmts = append(stmts, Schema(p.Table.Schema))
	}
	stmts = append(stmts, table(p.Table, false, false)...)
	return append(steps(stmts...), Migrate(0, p.Table, false)...)
}

// Shared returns the steps that create a shared table t, its chunk and
// metadata tables and its schema, at the current version, or bring them
// there.
func Shared(t schema.Table) []Step {
	stmts := append([]string{Schema(t.Schema)}, table(t, true, false)...)
	return append(steps(stmts...), Migrate(0, t, true)...)
}

// SharedUpgrades returns the checked steps of Shared: those that an
// existing shared table may lack. They cost a catalog query each when
// there is nothing to do, and take no lock.
func SharedUpgrades(t schema.Table) []Step {
	var out []Step
	for _, s := range Migrate(0, t, true) {
		if s.Done != "" {
			out = append(out, s)
		}
	}
	return out
}

// DropTables returns the statement that drops a tenant's tables at p: its
// message, chunk and metadata tables.
func DropTables(p schema.Placement) string {
	return "DROP TABLE IF EXISTS " + p.Table.Sanitize() + ", " + p.Table.Chunks().Sanitize() + ", " + p.Table.Meta().Sanitize()
}

// DropSchema returns the statement that drops schema name if it is empty.
func DropSchema(name string) string { return "DROP SCHEMA IF EXISTS " + quote(name) }

// Exists reports whether table t exists.
func Exists(ctx context.Context, db pg.DB, t schema.Table) (bool, error) {
	var exists bool
	err := db.QueryRow(ctx, existsSQL, t.Sanitize()).Scan(&exists)
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
		return Run(ctx, tx, steps(append([]string{Schema(t.Schema)}, Table(t, false)...)...)...)
	})
}

// existsSQL is Exists's query.
const existsSQL = "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NOT NULL"

// EnsureStatements returns the statements of EnsureTable for t, named, in
// order (for the golden files): the check, then the DDL.
func EnsureStatements(t schema.Table) []stmt.Named {
	out := []stmt.Named{{Name: "ddl.ensure.exists", SQL: existsSQL, Params: []string{"relation"}}}
	for i, sql := range append([]string{Schema(t.Schema)}, Table(t, false)...) {
		out = append(out, stmt.Named{Name: fmt.Sprintf("ddl.ensure.%d", i+1), SQL: sql})
	}
	return out
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

// Statements returns the DDL pgtenant runs for a tenant placed at p, or
// for a shared table at p (p.Shared), named, in order (for the golden
// files); a step's check comes first, as "<name>.done".
func Statements(p schema.Placement) []stmt.Named {
	var steps []Step
	if p.Shared() {
		steps = Shared(p.Table)
	} else {
		steps = Objects(p)
	}
	var out []stmt.Named
	for i, s := range steps {
		name := fmt.Sprintf("ddl.step%d", i+1)
		if s.Done != "" {
			out = append(out, stmt.Named{Name: name + ".done", SQL: s.Done, Params: []string{"relation"}})
		}
		for j, sql := range s.SQL {
			out = append(out, stmt.Named{Name: fmt.Sprintf("%s.%d", name, j+1), SQL: sql})
		}
	}
	return out
}
