// Package pg is the PostgreSQL plumbing that pgtenant's layers share and
// users never call: the one database interface that a pool, a connection
// and a transaction all satisfy, transactions serialised by an advisory
// lock, once-per-key work within a process, the classification of driver
// errors, and the one function that opens pools.
//
// Every statement here qualifies its functions with pg_catalog, so a
// caller's search_path cannot redirect them.
package pg
