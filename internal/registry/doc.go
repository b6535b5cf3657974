// Package registry owns the tenant registry, pgtenant.tenants: where each
// tenant lives (mode, schema and table), its state (active or tombstoned)
// and its objects' version, and every statement that reads or writes
// those, or creates, migrates and drops a tenant's objects: readiness
// checks, claiming, tombstones, drops, lists, the overview, versions,
// advisory lock keys and lock timeouts. It also supplies the guard every
// statement on a tenant's data carries (ReadGuard, WriteGuard). The usage
// columns of the row belong to package quota. Package tenant composes it
// and holds no SQL of its own.
//
// A Registry serves one layout (a store, in the registry's terms). Every
// statement names the registry and tenants' objects fully qualified and
// quoted, and qualifies its operators, functions and types with
// pg_catalog, so a caller's search_path cannot redirect them. Upserts take
// their timestamps from the VALUES list (EXCLUDED), as Citus requires.
package registry
