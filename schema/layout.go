package schema

// TenantColumn is the column that holds the tenant id in a shared table.
const TenantColumn = "tenant_id"

// CreateSchemaSQL returns the statement that creates schema name if missing.
func CreateSchemaSQL(name string) string {
	return "CREATE SCHEMA IF NOT EXISTS " + Quote(name)
}

// CreateTableSQL returns the statements that create the message table t and
// its indexes if they are missing. The layout is RetrySpool's original one,
// so tables created by that backend are used as they are:
//
//	message_id VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL,
//	size BIGINT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT NOW(),
//	updated TIMESTAMPTZ NOT NULL DEFAULT NOW()
//
// with indexes idx_<table>_created and idx_<table>_updated. When shared is
// true the table also has a leading tenant_id TEXT column, the primary key is
// (tenant_id, message_id) and the indexes lead with tenant_id.
func CreateTableSQL(t Table, shared bool) []string {
	q := t.Sanitize()
	cols := "message_id VARCHAR(255) NOT NULL PRIMARY KEY, "
	lead := ""
	if shared {
		cols = TenantColumn + " TEXT NOT NULL, message_id VARCHAR(255) NOT NULL, "
		lead = TenantColumn + ", "
	}
	cols += "data BYTEA NOT NULL, size BIGINT NOT NULL, " +
		"created TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated TIMESTAMPTZ NOT NULL DEFAULT NOW()"
	if shared {
		cols += ", PRIMARY KEY (" + TenantColumn + ", message_id)"
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + q + " (" + cols + ")",
		"CREATE INDEX IF NOT EXISTS " + Quote(t.IndexName("created")) + " ON " + q + " (" + lead + "created)",
		"CREATE INDEX IF NOT EXISTS " + Quote(t.IndexName("updated")) + " ON " + q + " (" + lead + "updated)",
	}
}
