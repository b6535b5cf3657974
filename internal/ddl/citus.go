package ddl

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/stmt"
	"github.com/pgtenant/pgtenant/schema"
)

// On a Citus coordinator pgtenant distributes what it creates by itself:
// the registry becomes a reference table (a replica on every node, so
// that the guard every statement carries reads it where the statement
// runs), each tenant's schema in SchemaPerTenant becomes a distributed
// schema (its tables single-shard and co-located, on one worker), and the
// shared tables of SharedTable become tables distributed on tenant_id,
// co-located. Every step has a Done check, so running it again, or on a
// cluster where the user already did it, changes nothing.

// citusSQL tells whether the database is a Citus coordinator: the citus
// extension is there.
const citusSQL = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus')"

// IsCitus reports whether db's database has the citus extension.
func IsCitus(ctx context.Context, db pg.DB) (bool, error) {
	var on bool
	err := db.QueryRow(ctx, citusSQL).Scan(&on)
	return on, err
}

// NoSchemaSharding turns Citus's schema-based sharding off for the rest
// of the transaction, so that a schema pgtenant creates for shared objects
// (the registry's, SharedTable's) does not become a distributed schema of
// single-shard tables. It is set_config local to the transaction: no
// session state outlives it.
const NoSchemaSharding = "SELECT pg_catalog.set_config('citus.enable_schema_based_sharding', 'off', true)"

// distribution is a query for how table $1 is distributed: 'r' a
// reference table, 's' single shard (a distributed schema's), 'h' hash
// distributed, ” a local table.
const distribution = "SELECT COALESCE((SELECT CASE WHEN partmethod OPERATOR(pg_catalog.=) 'h' THEN 'h'" +
	" WHEN repmodel OPERATOR(pg_catalog.=) 't' THEN 'r' ELSE 's' END FROM pg_catalog.pg_dist_partition" +
	" WHERE logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1::pg_catalog.text)), '')"

// schemaDistributed is a query for whether schema $1 is a distributed
// schema.
const schemaDistributed = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_schema" +
	" WHERE schemaid OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace($1::pg_catalog.text))"

// CitusRegistry returns the steps that make the registry t a reference
// table: its schema stops being a distributed schema first (an earlier
// release may have created it while schema-based sharding was on).
func CitusRegistry(t schema.Table) []Step {
	return []Step{
		{Done: "SELECT NOT (" + schemaDistributed + ")", DoneArgs: []any{t.Schema},
			SQL: []string{"SELECT pg_catalog.citus_schema_undistribute(" + literal(t.Schema) + "::pg_catalog.regnamespace)"}},
		{Done: "SELECT (" + distribution + ") OPERATOR(pg_catalog.=) 'r'", DoneArgs: []any{t.Sanitize()},
			SQL: []string{"SELECT pg_catalog.create_reference_table(" + literal(t.Sanitize()) + "::pg_catalog.regclass)"}},
	}
}

// CitusShared returns the steps that distribute a shared table t, its
// chunk, metadata and tenant-state tables on tenant_id, co-located with t.
func CitusShared(t schema.Table) []Step {
	base := literal(t.Sanitize())
	var out []Step
	for i, x := range []schema.Table{t, t.Chunks(), t.Meta(), t.State()} {
		colocate := ""
		if i > 0 {
			colocate = ", colocate_with => " + base
		}
		out = append(out, Step{Done: "SELECT (" + distribution + ") OPERATOR(pg_catalog.=) 'h'", DoneArgs: []any{x.Sanitize()},
			SQL: []string{"SELECT pg_catalog.create_distributed_table(" + literal(x.Sanitize()) + "::pg_catalog.regclass, " +
				literal(schema.TenantColumn) + "::pg_catalog.text" + colocate + ")"}})
	}
	return out
}

// CitusSchema returns the step that makes a tenant's schema a distributed
// schema, unless it is one already (as every schema created while
// citus.enable_schema_based_sharding is on becomes).
func CitusSchema(name string) Step {
	return Step{Done: schemaDistributed, DoneArgs: []any{name},
		SQL: []string{"SELECT pg_catalog.citus_schema_distribute(" + literal(name) + "::pg_catalog.regnamespace)"}}
}

// literal quotes s as an SQL string literal. Only validated identifiers
// (and their quoted forms) reach it.
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// CitusStatements returns the statements of the Citus steps, named (for
// the golden files): a shared table t's, the registry's, a tenant
// schema's.
func CitusStatements(t, registry schema.Table, tenantSchema string) []stmt.Named {
	out := []stmt.Named{{Name: "citus.is_citus", SQL: citusSQL}, {Name: "citus.no_schema_sharding", SQL: NoSchemaSharding}}
	add := func(what string, steps ...Step) {
		for i, s := range steps {
			name := fmt.Sprintf("citus.%s.%d", what, i+1)
			out = append(out, stmt.Named{Name: name + ".done", SQL: s.Done, Params: []string{"relation"}})
			for _, sql := range s.SQL {
				out = append(out, stmt.Named{Name: name, SQL: sql})
			}
		}
	}
	add("registry", CitusRegistry(registry)...)
	add("shared", CitusShared(t)...)
	add("schema", CitusSchema(tenantSchema))
	return out
}
