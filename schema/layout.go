package schema

// TenantColumn is the column that holds the tenant id in a shared table.
const TenantColumn = "tenant_id"

// CreateSchemaSQL returns the statement that creates schema name if missing.
func CreateSchemaSQL(name string) string {
	return "CREATE SCHEMA IF NOT EXISTS " + Quote(name)
}

// ChunkTable returns the table that holds the chunks of t's large bodies:
// "c_" + t's name, in t's schema, shortened with a hash when that would
// exceed 63 bytes. Tenant tables are named "t_..." or "h_...", so a chunk
// table never takes a tenant's name.
func ChunkTable(t Table) Table {
	name := "c_" + t.Name
	if len(name) > MaxIdentifierLength {
		h := hashName(t.Name)[:13]
		name = name[:MaxIdentifierLength-len(h)-1] + "_" + h
	}
	return Table{Schema: t.Schema, Name: name}
}

// CreateTableSQL returns the statements that create the message table t, its
// indexes and its chunk table if they are missing. The message table has
// RetrySpool's original layout, so tables created by that backend are used
// as they are:
//
//	message_id VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL,
//	size BIGINT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT NOW(),
//	updated TIMESTAMPTZ NOT NULL DEFAULT NOW()
//
// with indexes idx_<table>_created and idx_<table>_updated, plus one nullable
// column, chunked_version BIGINT, added to existing tables (a catalog-only
// change): NULL for a body kept in data, else the version of a body kept in
// pieces in ChunkTable(t) (message_id, version, seq, data), with data empty.
// When shared is true both tables also have a leading tenant_id TEXT column,
// the primary keys lead with it and so do the indexes.
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
	c := ChunkTable(t)
	tenantCol := ""
	if shared {
		tenantCol = TenantColumn + " TEXT NOT NULL, "
	}
	return []string{
		"CREATE TABLE IF NOT EXISTS " + q + " (" + cols + ", chunked_version BIGINT)",
		"ALTER TABLE " + q + " ADD COLUMN IF NOT EXISTS chunked_version BIGINT",
		"CREATE INDEX IF NOT EXISTS " + Quote(t.IndexName("created")) + " ON " + q + " (" + lead + "created)",
		"CREATE INDEX IF NOT EXISTS " + Quote(t.IndexName("updated")) + " ON " + q + " (" + lead + "updated)",
		"CREATE TABLE IF NOT EXISTS " + c.Sanitize() + " (" + tenantCol +
			"message_id VARCHAR(255) NOT NULL, version BIGINT NOT NULL, seq INT NOT NULL, data BYTEA NOT NULL, " +
			"PRIMARY KEY (" + lead + "message_id, version, seq))",
	}
}
