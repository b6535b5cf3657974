// Package quota owns pgtenant's per-tenant quotas: the limits, the error
// that reports a refused write, and every statement on the usage a quota
// is checked against.
//
// A tenant's usage (its stored body bytes and messages) is kept in two
// columns of its registry row, so that it is exact across hosts. A quota'd
// write is one round trip: a pipeline of two statements in one implicit
// transaction. The first locks the usage row (FOR NO KEY UPDATE); the
// second, taking its snapshot only once the lock is held, reads the
// message's old size, checks the limits, updates the usage and writes, all
// in one statement (the engine's write with the CTEs of Parts). Every
// quota'd write and delete of a tenant holds the same row lock until it
// commits, on every host, so usage never drifts and limits are never
// overshot; the lock is held for the server's time of one statement, not
// for a client round trip.
//
// A usage that was never counted (NULL: a tenant created before quotas, or
// provisioned again) is counted in the same statement, once.
package quota
