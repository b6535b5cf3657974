// Package tenant owns who a call belongs to: it routes RetrySpool message
// bodies (Router, a datastorage.Backend) and metadata (MetaBackend, a
// metastorage.Backend) to per-tenant storage in PostgreSQL over one shared
// pgx pool, pins storage to one tenant for a queue host (Factory.ForTenant),
// and administers tenants (Admin: Provision, Drop, Stats, Purge,
// MigrateAll...). What one Factory opens shares one pool, one tenant cache
// and one change hub.
//
// For every call a Router resolves the tenant
// (by default from the context, see WithTenant), maps it to the tenant's
// schema, table or rows (see schema.Isolation), creates the tenant's
// objects on its first write, and runs the call on the shared pool through
// the same engine as package backend. An LRU remembers the tenants known to
// exist, with their prepared SQL text, so that steady-state calls cost one
// statement.
//
// The package holds no SQL: the tenant registry and every statement on it
// live in pgtenant's internal registry package, quotas in internal/quota,
// change announcements and cached views in internal/changes, and bytes
// move through internal/engine; this package decides who a call belongs
// to, and when.
//
// Reads and deletes never create anything: an unknown tenant has no data.
// Drop tombstones a tenant in the registry before removing its data, so a
// late write cannot bring it back; Provision does.
package tenant
