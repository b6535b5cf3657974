// Package ddl builds the statements that create and migrate the tables
// pgtenant keeps message data in: a message table, its chunk table and, for
// RetrySpool metadata, its metadata table, each in a tenant's schema, as a
// tenant's own table, or shared by tenants with a tenant_id column.
//
// Every type, function and operator is qualified with pg_catalog (or is a
// keyword), so that a caller's search_path cannot redirect it, also in
// column defaults. Every table has a primary key and no serial column, as
// Citus's schema-based sharding requires.
package ddl
