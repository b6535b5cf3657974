package registry

import (
	"context"
	"errors"
	"fmt"
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
	PRIMARY KEY (store, tenant_id))`,
		"CREATE UNIQUE INDEX IF NOT EXISTS " + pgx.Identifier{"tenants_objects"}.Sanitize() + " ON " + q +
			" (schema_name, table_name) WHERE mode OPERATOR(pg_catalog.<>) 'shared-table'",
	}
}

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
	}
	switch r.layout.Mode {
	case schema.SharedTable:
		if ok, err := ddl.Exists(ctx, r.db, r.layout.Base.Chunks()); err != nil {
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
	rec, err := scanRecord(r.db.QueryRow(ctx, "SELECT "+columns+" FROM "+table.Sanitize()+
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
// missing. Activating a tenant records the current version.
func (r *Registry) put(ctx context.Context, tx pgx.Tx, id string, p schema.Placement, state State) error {
	_, err := tx.Exec(ctx, "INSERT INTO "+table.Sanitize()+
		" (store, tenant_id, mode, schema_name, table_name, version, state, created, updated)"+
		" VALUES ($1, $2, $3, $4, $5, $6, $7, pg_catalog.now(), pg_catalog.now())"+
		" ON CONFLICT (store, tenant_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version,"+
		" mode = EXCLUDED.mode, schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name,"+
		" updated = EXCLUDED.updated",
		r.store, id, p.Mode.String(), p.Table.Schema, p.Table.Name, schema.CurrentVersion, string(state))
	return err
}

// Claim makes sure tenant id's objects exist at the current version and
// marks it active, in one transaction under the tenant's advisory lock. A
// tombstoned tenant gives ErrTenantDeleted unless provision is true, which
// activates it again. A new tenant is placed by the layout.
func (r *Registry) Claim(ctx context.Context, id string, provision bool) (Record, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return Record{}, err
	}
	rec := Record{ID: id, Placement: p, Version: schema.CurrentVersion, State: Active}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		old, found, err := r.lookup(ctx, tx, id)
		if err != nil {
			return err
		}
		if found && old.State == Deleted && !provision {
			return ErrTenantDeleted
		}
		if stmts := ddl.Objects(p); len(stmts) > 0 {
			if err := pg.ExecAll(ctx, tx, stmts...); err != nil {
				return err
			}
		}
		return r.put(ctx, tx, id, p, Active)
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
// writes are refused on every host. It returns the tenant's placement.
func (r *Registry) Tombstone(ctx context.Context, id string) (schema.Placement, error) {
	p, err := r.layout.Place(id)
	if err != nil {
		return p, err
	}
	err = pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		return r.put(ctx, tx, id, p, Deleted)
	})
	return p, err
}

// DropObjects removes tenant id's objects at p (its rows, in a shared
// table) in a transaction of its own, under the tenant's advisory lock and
// bounded by the lock timeout. The schema of SchemaPerTenant goes too,
// unless another layout keeps a table in it.
func (r *Registry) DropObjects(ctx context.Context, id string, p schema.Placement) error {
	return pg.InTx(ctx, r.db, r.lockKey(id), func(tx pgx.Tx) error {
		if err := pg.SetLockTimeout(ctx, tx, r.lockTimeout); err != nil {
			return err
		}
		q, cq := p.Table.Sanitize(), p.Table.Chunks().Sanitize()
		switch {
		case p.Shared():
			// SHARE ROW EXCLUSIVE waits for the writes in flight (writes
			// after it see the tombstone through their guard) and, unlike
			// SHARE, is self-exclusive, so concurrent drops queue instead of
			// deadlocking on their DELETEs.
			if _, err := tx.Exec(ctx, "LOCK TABLE "+q+", "+cq+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
				return err
			}
			for _, t := range []string{cq, q} {
				if _, err := tx.Exec(ctx, "DELETE FROM "+t+" WHERE "+schema.TenantColumn+" OPERATOR(pg_catalog.=) $1", id); err != nil {
					return err
				}
			}
			return nil
		case p.OwnSchema():
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+q+", "+cq); err != nil {
				return err
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
		default:
			_, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+q+", "+cq)
			return err
		}
	})
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
}

// Overview returns cheap statistics for every active tenant, in id order:
// in the per-tenant modes from the catalog (the planner's row estimate and
// the table's disk size), in SharedTable from one grouped scan.
func (r *Registry) Overview(ctx context.Context) ([]Usage, error) {
	var sql string
	if r.layout.Mode == schema.SharedTable {
		sql = "SELECT t.tenant_id, pg_catalog.count(m.message_id), COALESCE(pg_catalog.sum(m.size), 0)::pg_catalog.int8 FROM " +
			table.Sanitize() + " t LEFT JOIN " + r.layout.Base.Sanitize() + " m ON m." + schema.TenantColumn +
			" OPERATOR(pg_catalog.=) t.tenant_id" +
			" WHERE t.store OPERATOR(pg_catalog.=) $1 AND t.state OPERATOR(pg_catalog.=) 'active' GROUP BY t.tenant_id ORDER BY t.tenant_id"
	} else {
		sql = "SELECT t.tenant_id, GREATEST(COALESCE(c.reltuples, 0), 0)::pg_catalog.int8, COALESCE(pg_catalog.pg_total_relation_size(c.oid), 0)" +
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
		err := row.Scan(&u.ID, &u.Messages, &u.Bytes)
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
		if !rec.Placement.Shared() {
			if err := pg.ExecAll(ctx, tx, ddl.Migrate(rec.Version, rec.Placement.Table)...); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE "+table.Sanitize()+" SET version = $3, updated = pg_catalog.now()"+
			" WHERE store OPERATOR(pg_catalog.=) $1 AND tenant_id OPERATOR(pg_catalog.=) $2", r.store, id, schema.CurrentVersion); err != nil {
			return err
		}
		migrated = true
		return nil
	})
	return migrated, err
}

// ActiveGuard returns an SQL condition that is true while tenant is active
// in the store, reading the store from parameter $first and the tenant from
// $first+1 (see GuardArgs). Writes carry it, so that a host whose cache
// still holds a dropped tenant cannot write for it again.
func ActiveGuard(first int) string {
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE store OPERATOR(pg_catalog.=) $%d AND tenant_id OPERATOR(pg_catalog.=) $%d"+
		" AND state OPERATOR(pg_catalog.=) 'active')", table.Sanitize(), first, first+1)
}

// GuardArgs returns ActiveGuard's parameters for tenant id.
func (r *Registry) GuardArgs(id string) []any { return []any{r.store, id} }
