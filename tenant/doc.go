// Package tenant routes RetrySpool message data to per-tenant storage in
// PostgreSQL over one shared pgx pool.
//
// A Router is a datastorage.Backend. For every call it resolves the tenant
// (by default from the context, see WithTenant), maps it to the tenant's
// schema, table or rows (see schema.Isolation), creates the tenant's
// objects on its first write, and runs the call through the backend package
// on the shared pool. An LRU remembers the tenants known to exist, with
// their prepared SQL text, so that steady-state calls cost one statement.
//
// Reads and deletes never create anything: an unknown tenant has no data.
// Drop tombstones a tenant in the registry before removing its data, so a
// late write cannot bring it back; Provision does.
package tenant
