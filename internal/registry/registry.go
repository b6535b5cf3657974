package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
)

// table is the registry: one row per tenant of every store.
var table = schema.Table{Schema: schema.RegistrySchema, Name: "tenants"}

// State is a tenant's state in the registry.
type State string

const (
	// Active tenants accept writes.
	Active State = "active"
	// Deleted tenants are tombstoned: writes are refused on every host until
	// the tenant is provisioned again.
	Deleted State = "deleted"
)

// ErrTenantDeleted reports a write to a tenant that was dropped and not
// provisioned again. Nothing is written.
var ErrTenantDeleted = errors.New("pgtenant: tenant deleted")

// Record is one tenant's registry row.
type Record struct {
	ID        string
	Placement schema.Placement
	Version   int
	State     State
}

// Registry runs the registry's statements for one layout.
type Registry struct {
	db          pg.DB
	layout      schema.Layout
	store       string
	lockTimeout time.Duration
}

// New returns the Registry of layout over db; lockTimeout bounds the lock
// waits of drops and migrations.
func New(db pg.DB, layout schema.Layout, lockTimeout time.Duration) *Registry {
	return &Registry{db: db, layout: layout, store: layout.Store(), lockTimeout: lockTimeout}
}

// Store returns the layout's key in the registry.
func (r *Registry) Store() string { return r.store }

// Layout returns the registry's layout.
func (r *Registry) Layout() schema.Layout { return r.layout }

// ddlStatements returns the statements that create the registry if missing.
// The unique index on object names makes two tenants that would share a
// schema or table fail loudly instead.
func ddlStatements() []string {
	q := table.Sanitize()
	return []string{
		ddl.Schema(schema.RegistrySchema),
		"CREATE TABLE IF NOT EXISTS " + q + ` (
	store pg_catalog.text NOT NULL,
	tenant_id pg_catalog.text NOT NULL,
	mode pg_catalog.text NOT NULL,
	schema_name pg_catalog.text NOT NULL,
	table_name pg_catalog.text NOT NULL,
	version INT NOT NULL,
	state pg_catalog.text NOT NULL CHECK (state OPERATOR(pg_catalog.=) 'active' OR state OPERATOR(pg_catalog.=) 'deleted'),
	created pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated pg_catalog.timestamptz NOT NULL DEFAULT pg_catalog.now(),
	bytes BIGINT,
	messages BIGINT,
	PRIMARY KEY (store, tenant_id))`,
		"CREATE UNIQUE INDEX IF NOT EXISTS " + pgx.Identifier{"tenants_objects"}.Sanitize() + " ON " + q +
			" (schema_name, table_name) WHERE mode OPERATOR(pg_catalog.<>) 'shared-table'",
	}
}

// addedColumns are the registry's columns that an older release did not
// create; Setup adds them to an existing registry.
var addedColumns = []string{"bytes BIGINT", "messages BIGINT"}

// lockKey is the advisory lock that serialises everything done to one
// tenant of the store: creation, tombstone, drop, migration.
func (r *Registry) lockKey(id string) string { return "tenant:" + r.store + "\x00" + id }

// Setup creates the registry and the layout's shared objects (the shared
// table, or the schema of TablePerTenant's tables) if they are missing.
func (r *Registry) Setup(ctx context.Context) error {
	var stmts []string
	if ok, err := ddl.Exists(ctx, r.db, table); err != nil {
		return err
	} else if !ok {
		stmts = append(stmts, ddlStatements()...)
	} else {
		var missing int
		names := make([]string, len(addedColumns))
		for i, c := range addedColumns {
			names[i], _, _ = strings.Cut(c, " ")
		}
		if err := r.db.QueryRow(ctx, "SELECT pg_catalog.cardinality($2::pg_catalog.text[]) OPERATOR(pg_catalog.-) pg_catalog.count(*)::INT"+
			" FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1::pg_catalog.text)"+
			" AND attname OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) AND NOT attisdropped",
			table.Sanitize(), names).Scan(&missing); err != nil {
			return err
		}
		for _, c := range addedColumns[len(addedColumns)-missing:] {
			stmts = append(stmts, "ALTER TABLE "+table.Sanitize()+" ADD COLUMN IF NOT EXISTS "+c)
		}
	}
	switch r.layout.Mode {
	case schema.SharedTable:
		// The shared tables are made at the current version; a shared table
		// of an older release gets what it lacks (its migrations are
		// idempotent).
		if ok, err := ddl.Exists(ctx, r.db, r.layout.Base.Meta()); err != nil {
			return err
		} else if !ok {
			stmts = append(stmts, ddl.Shared(r.layout.Base)...)
		}
	case schema.TablePerTenant:
		stmts = append(stmts, ddl.Schema(r.layout.Base.Schema))
	}
	if len(stmts) == 0 {
		return nil
	}
	return pg.InTx(ctx, r.db, "setup:"+r.store, func(tx pgx.Tx) error {
		return pg.ExecAll(ctx, tx, stmts...)
	})
}

const columns = "tenant_id, mode, schema_name, table_name, version, state"

func scanRecord(row pgx.Row) (Record, error) {
	var (
		rec        Record
		mode       string
		state      string
		schemaName string
		tableName  string
	)
	if err := row.Scan(&rec.ID, &mode, &schemaName, &tableName, &rec.Version, &state); err != nil {
		return Record{}, err
	}
	iso, err := schema.ParseIsolation(mode)
	if err != nil {
		return Record{}, err
	}
	rec.State = State(state)
	rec.Placement = schema.Placement{Mode: iso, Table: schema.Table{Schema: schemaName, Name: tableName}}
	if iso == schema.SharedTable {
		rec.Placement.Partition = rec.ID
	}
	return rec, nil
}

// Lookup returns tenant id's registry row, if any.
func (r *Registry) Lookup(ctx context.Context, id string) (Record, bool, error) {
	return r.lookup(ctx, r.db, id)
}

func (r *Registry) lookup(ctx context.Context, db pg.DB, id string) (Record, bool, error) {
	rec, err := scanRecord(db.QueryRow(ctx, "SELECT "+columns+" FROM "+table.Sanitize()+
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2", r.store, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// Ready is the cheap check for a tenant a process has not cached: its row,
// if it is active, at the current version, and its table exists. One
// statement, no transaction, no lock. A tenant that is not ready has false
// and no error.
func (r *Registry) Ready(ctx context.Context, id string) (Record, bool, error) {
	return r.ready(ctx, r.db, id)
}

func (r *Registry) ready(ctx context.Context, db pg.DB, id string) (Record, bool, error) {
	rec, err := scanRecord(db.QueryRow(ctx, "SELECT "+columns+" FROM "+table.Sanitize()+
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2"+
		" AND state OPERATOR(pg_catalog.=) 'active' AND version OPERATOR(pg_catalog.>=) $3"+
		" AND pg_catalog.to_regclass(pg_catalog.quote_ident(schema_name) OPERATOR(pg_catalog.||) '.'"+
		" OPERATOR(pg_catalog.||) pg_catalog.quote_ident(table_name)) IS NOT NULL",
		r.store, id, schema.CurrentVersion))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// put writes tenant id's row with placement p and state, creating it if
// missing. Activating a tenant records the current version. When
// resetUsage is true the usage counters become unknown (NULL): the next
// write under a quota counts them afresh.
func (r *Registry) put(ctx context.Context, tx pgx.Tx, id string, p schema.Placement, state State, resetUsage bool) error {
	_, err := tx.Exec(ctx, putSQL(resetUsage),
		r.store, id, p.Mode.String(), p.Table.Schema, p.Table.Name, schema.CurrentVersion, string(state))
	return err
}

// putSQL is put's upsert. Its timestamps come from the VALUES list through
// EXCLUDED: Citus refuses non-immutable functions in DO UPDATE SET.
func putSQL(resetUsage bool) string {
	usage := ""
	if resetUsage {
		usage = ", bytes = EXCLUDED.bytes, messages = EXCLUDED.messages"
	}
	return "INSERT INTO " + table.Sanitize() +
		" (store, tenant_id, mode, schema_name, table_name, version, state, created, updated, bytes, messages)" +
		" VALUES ($1, $2, $3, $4, $5, $6, $7, pg_catalog.now(), pg_catalog.now(), NULL, NULL)" +
		" ON CONFLICT (store, tenant_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version," +
		" mode = EXCLUDED.mode, schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name," +
		" updated = EXCLUDED.updated" + usage
}

// Claim makes sure tenant id's objects exist at the current version and
// marks it active, in one transaction under the tenant's advisory lock. A
// tombstoned tenant gives ErrTenantDeleted unless provision is true, which
// activates it again, empty: whatever a failed drop left is removed first.
// A new tenant is placed by the layout.
//
// Under the lock it checks again whether the tenant is ready (another host
// may have created it meanwhile) and then changes nothing. Otherwise it
// writes the tenant's registry row before any DDL: writes lock that row
// (in their guard) before they touch the tenant's tables, so taking the
// same order here means the DDL's table locks cannot deadlock with them.
func (r *Registry) Claim(ctx context.Context, id string, provision bool) (Record, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return Record{}, err
	}
	rec := Record{ID: id, Placement: p, Version: schema.CurrentVersion, State: Active}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		if ready, ok, err := r.ready(ctx, tx, id); err != nil || ok {
			rec = ready
			return err
		}
		old, found, err := r.lookup(ctx, tx, id)
		if err != nil {
			return err
		}
		revive := found && old.State == Deleted
		if revive && !provision {
			return ErrTenantDeleted
		}
		if err := r.put(ctx, tx, id, p, Active, revive || !found); err != nil {
			return err
		}
		if revive {
			if err := r.dropIn(ctx, tx, id, old.Placement); err != nil {
				return err
			}
		}
		if stmts := ddl.Objects(p); len(stmts) > 0 {
			return pg.ExecAll(ctx, tx, stmts...)
		}
		return nil
	})
	if err != nil {
		return Record{}, objectsClash(err)
	}
	return rec, nil
}

// objectsClash explains a unique violation on the registry's object index:
// two tenants mapped to one object, which the name map rules out.
func objectsClash(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "tenants_objects" {
		return fmt.Errorf("two tenants map to one object (refused): %w", err)
	}
	return err
}

// Tombstone marks tenant id deleted and commits, so that from then on its
// writes are refused on every host. It first locks the tenant's row (FOR
// UPDATE), which waits for the writes in flight: each holds the row FOR KEY
// SHARE in its guard until it commits, and a write that comes later sees
// the tombstone. It returns the tenant's placement.
func (r *Registry) Tombstone(ctx context.Context, id string) (schema.Placement, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return p, err
	}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		rec, found, err := r.lookupForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		if found {
			p = rec.Placement
		}
		return r.put(ctx, tx, id, p, Deleted, true)
	})
	return p, err
}

func (r *Registry) lookupForUpdate(ctx context.Context, tx pgx.Tx, id string) (Record, bool, error) {
	rec, err := scanRecord(tx.QueryRow(ctx, "SELECT "+columns+" FROM "+table.Sanitize()+
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2 FOR UPDATE", r.store, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	return rec, err == nil, err
}

// DropObjects removes tenant id's objects at p (its rows, in a shared
// table) in a transaction of its own, under the tenant's advisory lock and
// bounded by the lock timeout. The schema of SchemaPerTenant goes too,
// unless another layout keeps a table in it.
func (r *Registry) DropObjects(ctx context.Context, id string, p schema.Placement) error {
	return pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		return r.dropIn(ctx, tx, id, p)
	})
}

// dropBatch is the number of a shared table's messages one statement
// deletes when a tenant is dropped.
const dropBatch = 10_000

// dropIn removes tenant id's objects at p in tx. In a shared table it
// deletes the tenant's rows in batches, taking row locks only: the other
// tenants' reads and writes go on. Message rows go before chunk and
// metadata rows, the order every write locks them in.
func (r *Registry) dropIn(ctx context.Context, tx pgx.Tx, id string, p schema.Placement) error {
	if err := pg.SetLockTimeout(ctx, tx, r.lockTimeout); err != nil {
		return err
	}
	tables := []schema.Table{p.Table, p.Table.Chunks(), p.Table.Meta()}
	if !p.Shared() {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.Sanitize()
		}
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+strings.Join(names, ", ")); err != nil {
			return err
		}
		if !p.OwnSchema() {
			return nil
		}
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := sp.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{p.Table.Schema}.Sanitize()); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "2BP01" { // another layout's table is there
				return sp.Rollback(ctx)
			}
			return err
		}
		return sp.Commit(ctx)
	}
	col := schema.TenantColumn
	for _, t := range tables {
		if ok, err := ddl.Exists(ctx, tx, t); err != nil || !ok {
			if err != nil {
				return err
			}
			continue
		}
		q, eq := t.Sanitize(), " OPERATOR(pg_catalog.=) "
		sql := "DELETE FROM " + q + " m USING (SELECT DISTINCT message_id FROM " + q + " WHERE " + col + eq + "$1 LIMIT $2) v" +
			" WHERE m." + col + eq + "$1 AND m.message_id" + eq + "v.message_id"
		for {
			tag, err := tx.Exec(ctx, sql, id, dropBatch)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				break
			}
		}
	}
	return nil
}

// List returns the ids of the store's active tenants in ascending order.
func (r *Registry) List(ctx context.Context) ([]string, error) {
	rows, err := r.db.Query(ctx, "SELECT tenant_id FROM "+table.Sanitize()+
		" WHERE store OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'active' ORDER BY tenant_id", r.store)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Usage is one tenant's line of the overview.
type Usage struct {
	ID string
	// Messages is exact in a shared table, else the planner's estimate.
	Messages int64
	// Bytes is the sum of body sizes in a shared table, else the disk size
	// of the tenant's message table with its indexes and TOAST.
	Bytes int64
	// Queued is the number of metadata rows: exact in a shared table, else
	// the planner's estimate.
	Queued int64
}

// Overview returns cheap statistics for every active tenant, in id order:
// in the per-tenant modes from the catalog (the planner's row estimate and
// the table's disk size), in SharedTable from one grouped scan.
func (r *Registry) Overview(ctx context.Context) ([]Usage, error) {
	var sql string
	if r.layout.Mode == schema.SharedTable {
		col := " OPERATOR(pg_catalog.=) t.tenant_id"
		sql = "SELECT t.tenant_id, (SELECT pg_catalog.count(*) FROM " + r.layout.Base.Sanitize() + " m WHERE m." + schema.TenantColumn + col + ")," +
			" (SELECT COALESCE(pg_catalog.sum(m.size), 0)::BIGINT FROM " + r.layout.Base.Sanitize() + " m WHERE m." + schema.TenantColumn + col + ")," +
			" (SELECT pg_catalog.count(*) FROM " + r.layout.Base.Meta().Sanitize() + " q WHERE q." + schema.TenantColumn + col + ")" +
			" FROM " + table.Sanitize() + " t" +
			" WHERE t.store OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'active' ORDER BY t.tenant_id"
	} else {
		// The metadata table is "m_" + the message table's name
		// (schema.Table.Meta); the rare name that Meta shortens with a hash
		// shows an estimate of 0 here.
		sql = "SELECT t.tenant_id, GREATEST(COALESCE(c.reltuples, 0), 0)::pg_catalog.int8, COALESCE(pg_catalog.pg_total_relation_size(c.oid), 0)," +
			" GREATEST(COALESCE((SELECT q.reltuples FROM pg_catalog.pg_class q WHERE q.relnamespace OPERATOR(pg_catalog.=) n.oid" +
			" AND q.relname OPERATOR(pg_catalog.=) ('m_' OPERATOR(pg_catalog.||) t.table_name)), 0), 0)::pg_catalog.int8" +
			" FROM " + table.Sanitize() + " t" +
			" LEFT JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) t.schema_name" +
			" LEFT JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid AND c.relname OPERATOR(pg_catalog.=) t.table_name" +
			" WHERE t.store OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'active' ORDER BY t.tenant_id"
	}
	rows, err := r.db.Query(ctx, sql, r.store)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Usage, error) {
		var u Usage
		err := row.Scan(&u.ID, &u.Messages, &u.Bytes, &u.Queued)
		return u, err
	})
}

// Version is one tenant's object version.
type Version struct {
	ID      string
	Version int
}

// Versions returns the store's active tenants with the version of their
// objects, in id order.
func (r *Registry) Versions(ctx context.Context) ([]Version, error) {
	rows, err := r.db.Query(ctx, "SELECT tenant_id, version FROM "+table.Sanitize()+
		" WHERE store OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) 'active' ORDER BY tenant_id", r.store)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Version, error) {
		var v Version
		err := row.Scan(&v.ID, &v.Version)
		return v, err
	})
}

// Migrate brings tenant id's objects to the current version in one
// transaction, under the tenant's advisory lock and the lock timeout, and
// records the version in the same transaction. It reports false when there
// was nothing to do (the tenant is current, gone or tombstoned).
func (r *Registry) Migrate(ctx context.Context, id string) (bool, error) {
	migrated := false
	err := pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		if err := pg.SetLockTimeout(ctx, tx, r.lockTimeout); err != nil {
			return err
		}
		rec, found, err := r.lookup(ctx, tx, id)
		if err != nil || !found || rec.State != Active || rec.Version >= schema.CurrentVersion {
			return err
		}
		// The registry row first, then the tables: the order writes lock
		// them in.
		if _, err := tx.Exec(ctx, "UPDATE "+table.Sanitize()+" SET version = $3, updated = pg_catalog.now()"+
			" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2", r.store, id, schema.CurrentVersion); err != nil {
			return err
		}
		if !rec.Placement.Shared() {
			if err := pg.ExecAll(ctx, tx, ddl.Migrate(rec.Version, rec.Placement.Table, false)...); err != nil {
				return err
			}
		}
		migrated = true
		return nil
	})
	return migrated, err
}

// ReadGuard returns an SQL condition that is true while the tenant is
// active in the store, reading the store from parameter $first and the
// tenant from $first+1 (see GuardArgs). Reads and deletes carry it: a
// tombstoned tenant has no data, on every host, even while a failed drop
// has left its rows.
func ReadGuard(first int) string {
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE store OPERATOR(pg_catalog.=) $%d AND tenant_id OPERATOR(pg_catalog.=) $%d"+
		" AND state OPERATOR(pg_catalog.=) 'active')", table.Sanitize(), first, first+1)
}

// WriteGuard is ReadGuard for writes: it also locks the tenant's registry
// row FOR KEY SHARE until the write commits. Tombstone locks the row FOR
// UPDATE first, so it waits for the writes in flight, and a write that
// comes after it re-reads the row and finds the tombstone: no host
// acknowledges a write for a tenant after its tombstone.
func WriteGuard(first int) string {
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE store OPERATOR(pg_catalog.=) $%d AND tenant_id OPERATOR(pg_catalog.=) $%d"+
		" AND state OPERATOR(pg_catalog.=) 'active' FOR KEY SHARE)", table.Sanitize(), first, first+1)
}

// GuardArgs returns the guards' and usage statements' parameters for
// tenant id.
func (r *Registry) GuardArgs(id string) []any { return []any{r.store, id} }

// Usage statements keep a tenant's stored bytes and messages in its
// registry row, for quotas that hold across hosts. Parameters: the store
// and the tenant ($1, $2, see GuardArgs), then the statement's own.
var (
	// UsageLockSQL returns the tenant's usage (NULLs: not counted yet) and
	// locks its row FOR UPDATE until the transaction ends; no row when the
	// tenant is not active.
	UsageLockSQL = "SELECT bytes, messages FROM " + table.Sanitize() +
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2 AND state OPERATOR(pg_catalog.=) 'active' FOR UPDATE"
	// UsageSetSQL sets the usage to $3 bytes and $4 messages.
	UsageSetSQL = "UPDATE " + table.Sanitize() + " SET bytes = $3, messages = $4" +
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2"
	// UsageAddSQL adds $3 bytes and $4 messages to a counted usage.
	UsageAddSQL = "UPDATE " + table.Sanitize() + " SET bytes = bytes OPERATOR(pg_catalog.+) $3, messages = messages OPERATOR(pg_catalog.+) $4" +
		" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2 AND bytes IS NOT NULL"
)
