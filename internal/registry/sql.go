package registry

import (
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/ddl"
	"github.com/pgtenant/pgtenant/internal/stmt"
	"github.com/pgtenant/pgtenant/schema"
)

// Table is the registry, quoted: one row per tenant of every store.
var Table = ddl.RegistryTable.Sanitize()

// KeyRow is the condition on the registry row of tenant @tenant in store
// @store; alias, if not empty, qualifies the columns ("r.").
func KeyRow(alias string) string {
	return alias + "store OPERATOR(pg_catalog.=) @store AND " + alias + "tenant_id OPERATOR(pg_catalog.=) @tenant"
}

// ActiveRow is KeyRow for an active tenant only.
func ActiveRow(alias string) string {
	return KeyRow(alias) + " AND " + alias + "state OPERATOR(pg_catalog.=) 'active'"
}

// ReadGuard is a condition, for every statement on a tenant's data, that
// is true while the tenant is active: a tombstoned tenant has no data on
// any host, even while a failed drop has left its rows. Its parameters
// are @store and @tenant.
var ReadGuard = "EXISTS (SELECT 1 FROM " + Table + " WHERE " + ActiveRow("") + ")"

// WriteGuard is ReadGuard for writes: it also locks the tenant's registry
// row FOR KEY SHARE until the write commits. Tombstone locks the row FOR
// UPDATE first, so it waits for the writes in flight, and a write that
// comes after it re-reads the row and finds the tombstone: no host
// acknowledges a write for a tenant after its tombstone.
var WriteGuard = "EXISTS (SELECT 1 FROM " + Table + " WHERE " + ActiveRow("") + " FOR KEY SHARE)"

// values are the parameters of the registry's statements.
type values struct {
	store, tenant, mode, schemaName, tableName, state string
	version                                           int
	relation                                          string
	names                                             []string
	limit                                             int64
}

var fields = stmt.Fields[values]{
	"store":       func(v *values) any { return v.store },
	"tenant":      func(v *values) any { return v.tenant },
	"mode":        func(v *values) any { return v.mode },
	"schema_name": func(v *values) any { return v.schemaName },
	"table_name":  func(v *values) any { return v.tableName },
	"state":       func(v *values) any { return v.state },
	"version":     func(v *values) any { return v.version },
	"relation":    func(v *values) any { return v.relation },
	"names":       func(v *values) any { return v.names },
	"limit":       func(v *values) any { return v.limit },
}

var parts = map[string]string{
	"registry":   Table,
	"key_row":    KeyRow(""),
	"active_row": ActiveRow(""),
	"columns":    "tenant_id, mode, schema_name, table_name, version, state",
}

func must(text string) stmt.Stmt[values] { return stmt.Must(text, parts, fields) }

// The registry's statements. A tenant's row is found by its key (store,
// tenant_id); every write of the row goes through put or an UPDATE of
// one column group.
var (
	// lookupSQL reads a tenant's row; lockSQL reads it FOR UPDATE.
	lookupSQL = must(`SELECT {columns} FROM {registry} WHERE {key_row}`)
	lockSQL   = must(`SELECT {columns} FROM {registry} WHERE {key_row} FOR UPDATE`)

	// readySQL is the cheap check for a tenant a process has not cached:
	// active, at the current version, and its message table exists.
	readySQL = must(`SELECT {columns} FROM {registry}
WHERE {active_row} AND version OPERATOR(pg_catalog.>=) @version::INT
AND pg_catalog.to_regclass(pg_catalog.quote_ident(schema_name) OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(table_name)) IS NOT NULL`)

	// checkSQL reads a tenant's row and whether it is ready.
	checkSQL = must(`SELECT {columns}, state OPERATOR(pg_catalog.=) 'active' AND version OPERATOR(pg_catalog.>=) @version::INT
	AND pg_catalog.to_regclass(pg_catalog.quote_ident(schema_name) OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(table_name)) IS NOT NULL
FROM {registry} WHERE {key_row}`)

	// putSQL writes a tenant's row; putResetSQL also forgets its usage, so
	// the next quota'd write counts it afresh. The timestamps come from the
	// VALUES list through EXCLUDED: Citus refuses non-immutable functions
	// in DO UPDATE SET.
	putSQL      = must(putText)
	putResetSQL = must(putText + `, bytes = EXCLUDED.bytes, messages = EXCLUDED.messages`)

	// migratedSQL records a tenant's new version.
	migratedSQL = must(`UPDATE {registry} SET version = @version::INT, updated = pg_catalog.now() WHERE {key_row}`)

	// listSQL lists a store's active tenants; versionsSQL with their
	// versions.
	listSQL     = must(`SELECT tenant_id FROM {registry} WHERE store OPERATOR(pg_catalog.=) @store AND state OPERATOR(pg_catalog.=) 'active' ORDER BY tenant_id`)
	versionsSQL = must(`SELECT tenant_id, version FROM {registry} WHERE store OPERATOR(pg_catalog.=) @store AND state OPERATOR(pg_catalog.=) 'active' ORDER BY tenant_id`)

	// overviewSQL gives every active tenant of a per-tenant store its
	// planner estimates and disk size from the catalog. The metadata table
	// is "m_" + the message table's name (schema.Table.Meta); the rare name
	// that Meta shortens with a hash shows an estimate of 0.
	overviewSQL = must(`SELECT t.tenant_id, GREATEST(COALESCE(c.reltuples, 0), 0)::pg_catalog.int8, COALESCE(pg_catalog.pg_total_relation_size(c.oid), 0),
	GREATEST(COALESCE((SELECT q.reltuples FROM pg_catalog.pg_class q WHERE q.relnamespace OPERATOR(pg_catalog.=) n.oid
		AND q.relname OPERATOR(pg_catalog.=) ('m_' OPERATOR(pg_catalog.||) t.table_name)), 0), 0)::pg_catalog.int8
FROM {registry} t
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname OPERATOR(pg_catalog.=) t.schema_name
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid AND c.relname OPERATOR(pg_catalog.=) t.table_name
WHERE t.store OPERATOR(pg_catalog.=) @store AND t.state OPERATOR(pg_catalog.=) 'active' ORDER BY t.tenant_id`)

	// missingColumnsSQL counts which of @names the registry lacks.
	missingColumnsSQL = must(`SELECT pg_catalog.cardinality(@names::pg_catalog.text[]) OPERATOR(pg_catalog.-) pg_catalog.count(*)::INT
FROM pg_catalog.pg_attribute WHERE attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(@relation::pg_catalog.text)
AND attname OPERATOR(pg_catalog.=) ANY (@names::pg_catalog.text[]) AND NOT attisdropped`)
)

const putText = `INSERT INTO {registry} (store, tenant_id, mode, schema_name, table_name, version, state, created, updated, bytes, messages)
VALUES (@store, @tenant, @mode, @schema_name, @table_name, @version::INT, @state, pg_catalog.now(), pg_catalog.now(), NULL, NULL)
ON CONFLICT (store, tenant_id) DO UPDATE SET state = EXCLUDED.state, version = EXCLUDED.version, mode = EXCLUDED.mode,
	schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name, updated = EXCLUDED.updated`

// sharedOverviewSQL gives every active tenant of a shared store its exact
// counts from the shared tables: one grouped scan of each, joined on the
// tenant column with the tenant-state table (co-located on Citus, so the
// whole statement runs on the workers, in parallel).
func sharedOverviewSQL(base schema.Table) (stmt.Stmt[values], error) {
	p := map[string]string{"state": base.State().Sanitize(), "table": base.Sanitize(), "meta": base.Meta().Sanitize(),
		"col": schema.TenantColumn}
	return stmt.Compile(`SELECT s.{col}, COALESCE(b.n, 0), COALESCE(b.bytes, 0)::BIGINT, COALESCE(q.n, 0)
FROM {state} s
LEFT JOIN (SELECT {col}, pg_catalog.count(*) AS n, pg_catalog.sum(size) AS bytes FROM {table} GROUP BY {col}) b ON b.{col} OPERATOR(pg_catalog.=) s.{col}
LEFT JOIN (SELECT {col}, pg_catalog.count(*) AS n FROM {meta} GROUP BY {col}) q ON q.{col} OPERATOR(pg_catalog.=) s.{col}
WHERE s.state OPERATOR(pg_catalog.=) 'active' ORDER BY s.{col}`, p, fields)
}

// sharedDropSQL deletes a batch of @limit of a tenant's messages from a
// shared table t, with row locks only.
func sharedDropSQL(t schema.Table) (stmt.Stmt[values], error) {
	p := map[string]string{"t": t.Sanitize(), "col": schema.TenantColumn}
	return stmt.Compile(`DELETE FROM {t} m USING (SELECT DISTINCT message_id FROM {t} WHERE {col} OPERATOR(pg_catalog.=) @tenant LIMIT @limit) v
WHERE m.{col} OPERATOR(pg_catalog.=) @tenant AND m.message_id OPERATOR(pg_catalog.=) v.message_id`, p, fields)
}

// registryDDL creates the registry if missing. The unique index on object
// names makes two tenants that would share a schema or table fail loudly.
func registryDDL() []string {
	return []string{
		"CREATE SCHEMA IF NOT EXISTS " + pgx.Identifier{schema.RegistrySchema}.Sanitize(),
		"CREATE TABLE IF NOT EXISTS " + Table + ` (
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
		"CREATE UNIQUE INDEX IF NOT EXISTS " + pgx.Identifier{"tenants_objects"}.Sanitize() + " ON " + Table +
			" (schema_name, table_name) WHERE mode OPERATOR(pg_catalog.<>) 'shared-table'",
		stateKeySQL,
	}
}

// stateKeySQL makes state a key column of the registry: an UPDATE of it
// (a tombstone, a revival) takes the row's FOR UPDATE lock, which waits
// for the writes in flight that hold it FOR KEY SHARE in their guard, on
// every node that has a replica of the row (Citus runs the UPDATE on
// every replica of a reference table, but a SELECT FOR UPDATE on one).
var stateKeySQL = "CREATE UNIQUE INDEX IF NOT EXISTS " + pgx.Identifier{"tenants_state_key"}.Sanitize() + " ON " + Table + " (store, tenant_id, state)"

// stateKeyDone says whether the registry has the index of stateKeySQL.
const stateKeyDone = "SELECT pg_catalog.to_regclass('" + schema.RegistrySchema + ".tenants_state_key') IS NOT NULL"

// putStateSQL writes a tenant's row of a shared table's tenant-state table
// ({state}); its state changes only with the registry row's, in the same
// transaction.
func putStateSQL(p schema.Placement) (stmt.Stmt[values], error) {
	return stmt.Compile(`INSERT INTO {state} (`+schema.TenantColumn+`, state) VALUES (@tenant, @state)
ON CONFLICT (`+schema.TenantColumn+`) DO UPDATE SET state = EXCLUDED.state`,
		map[string]string{"state": p.Table.State().Sanitize()}, fields)
}

// addedColumns are the registry's columns that an older release did not
// create; Setup adds them to an existing registry.
var addedColumns = []string{"bytes BIGINT", "messages BIGINT"}

// Statements returns every statement of the registry for layout l, named,
// in a fixed order (for the golden files): its own, the DDL it runs, and
// the statements that drop a tenant placed at p and write its state.
func Statements(l schema.Layout, p schema.Placement) ([]stmt.Named, error) {
	r, err := New(nil, l, 0)
	if err != nil {
		return nil, err
	}
	out := []stmt.Named{lookupSQL.Named("registry.lookup"), lockSQL.Named("registry.lock"), checkSQL.Named("registry.check"),
		readySQL.Named("registry.ready"), putSQL.Named("registry.put"), putResetSQL.Named("registry.put_reset"),
		migratedSQL.Named("registry.migrated"), listSQL.Named("registry.list"), versionsSQL.Named("registry.versions"),
		r.overview.Named("registry.overview"), missingColumnsSQL.Named("registry.missing_columns"),
		{Name: "registry.state_key.done", SQL: stateKeyDone}}
	for i, sql := range registryDDL() {
		out = append(out, stmt.Named{Name: fmt.Sprintf("registry.ddl.%d", i+1), SQL: sql})
	}
	if !p.Shared() {
		out = append(out, stmt.Named{Name: "registry.drop_tables", SQL: ddl.DropTables(p)})
		if p.OwnSchema() {
			out = append(out, stmt.Named{Name: "registry.drop_schema", SQL: ddl.DropSchema(p.Table.Schema)})
		}
		return out, nil
	}
	st, err := putStateSQL(p)
	if err != nil {
		return nil, err
	}
	out = append(out, st.Named("registry.put_state"))
	for _, t := range []schema.Table{p.Table, p.Table.Chunks(), p.Table.Meta()} {
		del, err := sharedDropSQL(t)
		if err != nil {
			return nil, err
		}
		out = append(out, del.Named("registry.drop_rows "+t.Name))
	}
	return out, nil
}
