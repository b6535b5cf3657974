// Package affinity gives each tenant a small, stable set of a pool's
// connections, so that each PostgreSQL backend caches the catalog entries
// and prepared statements of a few tenants instead of all of them.
//
// The pool is split into groups, each a *pgxpool.Pool of its own. Rendezvous
// hashing ranks the groups for a tenant; the tenant uses its first choice,
// or its second when the first has no free connection. When both are busy
// it waits at the one with fewer waiters, where free connections are handed
// out round robin among the tenants waiting, never first come first
// served: a tenant flooding from many goroutines gets one connection in
// turn with every other tenant waiting there.
//
// A gate in front of each group admits at most as many statements as the
// group has connections, so pgxpool never queues; the gate is pure
// bookkeeping under a mutex (the core), the groups' pools do the I/O.
package affinity
