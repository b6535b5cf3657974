// Package schema holds the rules that decide where pgtenant keeps data in
// PostgreSQL: identifier validation and quoting, the tenant isolation modes,
// the injective map from tenant ids to object names, and a tenant's
// placement (its table, chunk table, metadata table and, in a shared table,
// its partition value).
//
// Everything here is pure: nothing touches a database, and nothing reads a
// tenant from a context. Tenant ids arrive as plain strings and are only used
// to name objects. The statements built from these names (the tables' DDL,
// the tenant registry and its migrations) live in pgtenant's internal
// packages, which package tenant composes.
package schema
