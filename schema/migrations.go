package schema

// Migration is one step of the per-tenant objects' schema version.
type Migration struct {
	// Version is the version this step brings objects to.
	Version int
	// Name says what the step does.
	Name string
	// SQL returns the step's statements for message table t. They must be
	// idempotent: a crash after a step ran but before its version was
	// recorded runs it again.
	SQL func(t Table) []string
}

// Migrations are the steps after version 1 (the objects of CreateTableSQL),
// in order. CurrentVersion is the last one's Version.
var Migrations = []Migration{
	{
		Version: 2,
		Name:    "vacuum message tables sooner (queues delete what they store)",
		SQL: func(t Table) []string {
			return []string{
				"ALTER TABLE " + t.Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05)",
				"ALTER TABLE " + ChunkTable(t).Sanitize() + " SET (autovacuum_vacuum_scale_factor = 0.05)",
			}
		},
	},
}

// MigrationSQL returns the statements that bring message table t from
// version from to CurrentVersion.
func MigrationSQL(from int, t Table) []string {
	var stmts []string
	for _, m := range Migrations {
		if m.Version > from {
			stmts = append(stmts, m.SQL(t)...)
		}
	}
	return stmts
}
