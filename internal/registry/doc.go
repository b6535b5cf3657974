// Package registry owns the tenant registry, pgtenant.tenants, and every
// statement that touches it or creates, migrates and drops a tenant's
// objects: readiness checks, creation and claiming, tombstones, dropping,
// listing, the overview, versions, advisory lock keys and lock timeouts.
// Package tenant composes it and holds no SQL of its own.
//
// A Registry serves one layout (a store, in the registry's terms). Every
// statement names the registry and tenants' objects fully qualified and
// quoted, and qualifies its operators, functions and types with
// pg_catalog, so a caller's search_path cannot redirect them. Upserts take
// their timestamps from the VALUES list (EXCLUDED), as Citus requires.
package registry
