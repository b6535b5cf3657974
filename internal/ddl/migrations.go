package ddl

import "github.com/pgtenant/pgtenant/schema"

// migration is one step of the per-tenant objects' schema version.
type migration struct {
	// version is the version this step brings objects to.
	version int
	// what the step does.
	name string
	// step returns the step for message table t, shared by tenants or
	// not. It must be idempotent (IF NOT EXISTS, or a Done check):
	// Objects runs every step for a tenant created or repaired at the
	// current version.
	step func(t schema.Table, shared bool) Step
}

// migrations are the steps after version 1 (the objects of Table), in
// order. Their last version is schema.CurrentVersion (a test ties them).
var migrations = []migration{
	{
		version: 2,
		name:    "vacuum message tables sooner (queues delete what they store)",
		step: func(t schema.Table, _ bool) Step {
			return Step{SQL: []string{
				"ALTER TABLE " + t.Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05)",
				"ALTER TABLE " + t.Chunks().Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05)",
			}}
		},
	},
	{
		version: 3,
		name:    "a metadata table for RetrySpool's meta storage beside the message table",
		step:    func(t schema.Table, shared bool) Step { return Step{SQL: MetaTable(t, shared)} },
	},
	{
		version: 4,
		name:    "metadata kept byte for byte (bytea strings and headers) with BIGINT integers",
		step:    metaBytes,
	},
	{
		version: 5,
		name:    "a tenant-state table beside each shared table, which its statements' guards read on the node that holds the rows",
		step: func(t schema.Table, shared bool) Step {
			return sharedState(t, shared, RegistryTable.Sanitize(), schema.Layout{Mode: schema.SharedTable, Base: t}.Store())
		},
	},
	{
		version: 6,
		name:    "no created index on a tenant's message table: no statement reads it, and every store paid for it",
		step: func(t schema.Table, _ bool) Step {
			idx := createdIndex(t)
			return Step{
				Done:     "SELECT pg_catalog.to_regclass($1::pg_catalog.text) IS NULL",
				DoneArgs: []any{idx},
				SQL:      []string{"DROP INDEX IF EXISTS " + idx},
			}
		},
	},
}

// RegistryTable is the tenant registry, pgtenant.tenants.
var RegistryTable = schema.Table{Schema: schema.RegistrySchema, Name: "tenants"}

// Migrate returns the steps that bring message table t, shared by tenants
// or not, from version from to schema.CurrentVersion.
func Migrate(from int, t schema.Table, shared bool) []Step {
	var out []Step
	for _, m := range migrations {
		if m.version > from {
			out = append(out, m.step(t, shared))
		}
	}
	return out
}
