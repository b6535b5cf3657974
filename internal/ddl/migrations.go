package ddl

import "github.com/pgtenant/pgtenant/schema"

// migration is one step of the per-tenant objects' schema version.
type migration struct {
	// version is the version this step brings objects to.
	version int
	// what the step does.
	name string
	// sql returns the step's statements for message table t, shared by
	// tenants or not. They must be idempotent: a crash after a step ran
	// but before its version was recorded runs it again.
	sql func(t schema.Table, shared bool) []string
}

// migrations are the steps after version 1 (the objects of Table), in
// order. Their last version is schema.CurrentVersion (a test ties them).
var migrations = []migration{
	{
		version: 2,
		name:    "vacuum message tables sooner (queues delete what they store)",
		sql: func(t schema.Table, _ bool) []string {
			return []string{
				"ALTER TABLE " + t.Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05)",
				"ALTER TABLE " + t.Chunks().Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05)",
			}
		},
	},
	{
		version: 3,
		name:    "a metadata table for RetrySpool's meta storage beside the message table",
		sql:     MetaTable,
	},
}

// Migrate returns the statements that bring message table t, shared by
// tenants or not, from version from to schema.CurrentVersion.
func Migrate(from int, t schema.Table, shared bool) []string {
	var stmts []string
	for _, m := range migrations {
		if m.version > from {
			stmts = append(stmts, m.sql(t, shared)...)
		}
	}
	return stmts
}
