// Package schema decides where message data lives in PostgreSQL: the rules
// for identifiers and their quoting, the table layout and its DDL, the tenant
// isolation modes, the map from tenant ids to object names, creation that
// happens once across goroutines and processes, and the tenant registry.
//
// Nothing here reads a tenant from a context: tenant ids arrive as plain
// strings, and are only used to name objects. Every name that reaches SQL has
// been validated and is quoted with pgx.Identifier; no statement depends on
// search_path.
package schema
