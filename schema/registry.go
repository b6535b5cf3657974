package schema

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// RegistrySchema is the schema pgtenant owns for its own bookkeeping.
const RegistrySchema = "pgtenant"

// Registry is the table that records every tenant of every layout: its
// object names, the schema version of its objects and its state. It is
// "pgtenant"."tenants"; the registry's DDL is RegistryDDL.
var Registry = Table{Schema: RegistrySchema, Name: "tenants"}

// CurrentVersion is the version of the per-tenant objects this release
// creates: 1 for CreateTableSQL, then one more per step in Migrations.
const CurrentVersion = 2

// State is a tenant's state in the registry.
type State string

const (
	// Active tenants accept writes.
	Active State = "active"
	// Deleted tenants are tombstoned: writes are refused on every host until
	// the tenant is provisioned again.
	Deleted State = "deleted"
)

// Record is one tenant's registry row.
type Record struct {
	Store   string
	ID      string
	Mode    Isolation
	Table   Table
	Version int
	State   State
	Created time.Time
	Updated time.Time
}

// Querier runs statements; pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// RegistryDDL returns the statements that create the registry if missing.
// The unique index on object names makes two tenants that would share a
// schema or table fail loudly instead.
func RegistryDDL() []string {
	q := Registry.Sanitize()
	return []string{
		CreateSchemaSQL(RegistrySchema),
		"CREATE TABLE IF NOT EXISTS " + q + ` (
	store TEXT NOT NULL,
	tenant_id TEXT NOT NULL,
	mode TEXT NOT NULL,
	schema_name TEXT NOT NULL,
	table_name TEXT NOT NULL,
	version INT NOT NULL,
	state TEXT NOT NULL CHECK (state IN ('active', 'deleted')),
	created TIMESTAMPTZ NOT NULL DEFAULT NOW(),
	updated TIMESTAMPTZ NOT NULL DEFAULT NOW(),
	PRIMARY KEY (store, tenant_id))`,
		"CREATE UNIQUE INDEX IF NOT EXISTS " + Quote("tenants_objects") + " ON " + q +
			" (schema_name, table_name) WHERE mode <> 'shared-table'",
	}
}

// ActiveGuard returns an SQL condition that is true while tenant is active in
// store, reading store from parameter $first and the tenant from $first+1.
// Shared-table writes carry it, so that a host whose cache still holds a
// dropped tenant cannot write rows for it again.
func ActiveGuard(first int) string {
	return fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE store = $%d AND tenant_id = $%d AND state = 'active')",
		Registry.Sanitize(), first, first+1)
}

// Lookup returns the registry row of tenant id in store, if any.
func Lookup(ctx context.Context, q Querier, store, id string) (Record, bool, error) {
	var (
		r    Record
		mode string
	)
	err := q.QueryRow(ctx, "SELECT store, tenant_id, mode, schema_name, table_name, version, state, created, updated FROM "+
		Registry.Sanitize()+" WHERE store = $1 AND tenant_id = $2", store, id).
		Scan(&r.Store, &r.ID, &mode, &r.Table.Schema, &r.Table.Name, &r.Version, &r.State, &r.Created, &r.Updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	r.Mode = parseIsolation(mode)
	return r, true, nil
}

// Put writes tenant's registry row with the given state, creating it if
// missing. Activating a tenant records CurrentVersion.
func Put(ctx context.Context, q Querier, store, id string, mode Isolation, t Table, state State) error {
	_, err := q.Exec(ctx, "INSERT INTO "+Registry.Sanitize()+
		" (store, tenant_id, mode, schema_name, table_name, version, state) VALUES ($1, $2, $3, $4, $5, $6, $7)"+
		" ON CONFLICT (store, tenant_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version,"+
		" schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name, updated = NOW()",
		store, id, mode.String(), t.Schema, t.Name, CurrentVersion, string(state))
	return err
}

// List returns the ids of store's active tenants in ascending order.
func List(ctx context.Context, q Querier, store string) ([]string, error) {
	rows, err := q.Query(ctx, "SELECT tenant_id FROM "+Registry.Sanitize()+
		" WHERE store = $1 AND state = 'active' ORDER BY tenant_id", store)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

func parseIsolation(s string) Isolation {
	for i := SchemaPerTenant; i <= SharedTable; i++ {
		if i.String() == s {
			return i
		}
	}
	return Isolation(-1)
}
