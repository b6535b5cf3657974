package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/registry"
	"github.com/pgtenant/pgtenant/schema"
)

// Admin administers the tenants of a Factory's store: Provision,
// ProvisionMany, Drop, DropMany, MigrateAll, Purge, Stats, Overview, List,
// Info, Locate, PoolStats.
// It shares the Factory's pool, tenant cache and change announcements with
// the Factory's Routers and metadata backends (see Factory.OpenAdmin), so
// a change it makes is seen by every backend on every host. It is safe
// for concurrent use.
type Admin struct {
	h *handle
}

// Close releases the Admin; the last Router, metadata backend or Admin of
// a Factory value closes the pool unless it came from WithPool. Close is
// idempotent.
func (a *Admin) Close() error {
	a.h.close()
	return nil
}

// open checks that the Admin is open and id is valid.
func (a *Admin) open(id string) error {
	if a.h.closed.Load() {
		return ErrClosed
	}
	return Validate(id)
}

// Provision creates tenant id's objects if they are missing and marks it
// active, also after Drop (the tenant comes back empty). It is idempotent.
func (a *Admin) Provision(ctx context.Context, id string) (err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if err := a.open(id); err != nil {
		return err
	}
	c := a.h.core
	if _, err = c.ensure(ctx, id, true); err == nil {
		c.obs.log.InfoContext(ctx, "pgtenant: tenant provisioned", "tenant", id, "store", c.reg.Store())
	}
	return err
}

// Drop offboards tenant id: it writes a tombstone to the registry first, so
// that from then on writes answer ErrTenantDeleted on every host, then
// removes the tenant's objects (its rows, in SharedTable) in a transaction
// of its own bounded by the lock timeout. If that second step fails the
// tenant stays tombstoned and Drop can be called again. Every host's
// cached views of the tenant are dropped (see MetaBackend).
func (a *Admin) Drop(ctx context.Context, id string) (err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if err := a.open(id); err != nil {
		return err
	}
	c := a.h.core
	if err = c.drop(ctx, id); err == nil {
		c.obs.log.InfoContext(ctx, "pgtenant: tenant dropped", "tenant", id, "store", c.reg.Store())
	} else {
		c.obs.log.WarnContext(ctx, "pgtenant: dropping tenant failed", "tenant", id, "err", err)
	}
	return err
}

// BatchOptions tune the calls over many tenants: ProvisionMany, DropMany
// and MigrateAll.
type BatchOptions struct {
	// Concurrency is the number of tenants worked on at once (default 4).
	Concurrency int
	// Progress, if not nil, is called after each tenant, from the worker
	// goroutines one at a time, with the counts so far and the tenant's
	// result.
	Progress func(done, total int, id string, err error)
}

// DropResult counts what DropMany did.
type DropResult struct {
	// Dropped tenants are gone (or were never there).
	Dropped int
	// Failed tenants are listed with their errors; see Drop.
	Failed map[string]error
}

// DropMany drops the tenants ids, each with Drop: one tenant per
// transaction, so that dropping thousands never needs more locks than one
// tenant's objects (max_locks_per_transaction). It returns ctx's error if
// it was cancelled: tenants not reached are untouched and tenants in
// flight finish.
func (a *Admin) DropMany(ctx context.Context, ids []string, opts BatchOptions) (DropResult, error) {
	n, failed, err := a.batch(ctx, ids, opts, a.Drop)
	return DropResult{Dropped: n, Failed: failed}, err
}

// ProvisionResult counts what ProvisionMany did.
type ProvisionResult struct {
	// Provisioned tenants are active (some may have been already).
	Provisioned int
	// Failed tenants are listed with their errors; see Provision.
	Failed map[string]error
}

// ProvisionMany provisions the tenants ids, each with Provision (one
// tenant per transaction), opts.Concurrency at once. A creation that hits
// a transient bound, such as a lock timeout or a deadlock, is tried again
// before it counts as failed. It returns ctx's error if it was cancelled:
// tenants not reached are untouched and tenants in flight finish.
func (a *Admin) ProvisionMany(ctx context.Context, ids []string, opts BatchOptions) (ProvisionResult, error) {
	n, failed, err := a.batch(ctx, ids, opts, a.Provision)
	return ProvisionResult{Provisioned: n, Failed: failed}, err
}

// batch runs fn for each of ids, opts.Concurrency at once, each under a
// context that ctx's cancellation does not reach (a tenant in flight
// finishes); it stops handing out tenants when ctx ends. It returns how
// many succeeded, the errors of the others and ctx's error.
func (a *Admin) batch(ctx context.Context, ids []string, opts BatchOptions, fn func(context.Context, string) error) (int, map[string]error, error) {
	ok, failed, done := 0, map[string]error{}, 0
	forEachTenant(ctx, ids, opts.Concurrency,
		func(id string) error { return fn(context.WithoutCancel(ctx), id) },
		func(id string, err error) {
			if err != nil {
				failed[id] = err
			} else {
				ok++
			}
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(ids), id, err)
			}
		})
	return ok, failed, ctx.Err()
}

// List returns the ids of the active tenants of the store, in ascending
// order, from the registry.
func (a *Admin) List(ctx context.Context) (_ []string, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if a.h.closed.Load() {
		return nil, ErrClosed
	}
	return a.h.core.reg.List(ctx)
}

// Location says where one tenant's data lives.
type Location struct {
	// Mode is the tenant's isolation mode.
	Mode Isolation
	// Table, Chunks and Meta are the tenant's message table, its chunk
	// table and its metadata table (Sanitize quotes them for SQL).
	Table, Chunks, Meta schema.Table
	// Partition is the value of the tenant_id column that selects the
	// tenant's rows in shared tables; empty in the per-tenant modes.
	Partition string
}

// Locate returns where tenant id's data lives, as the store's layout
// places it. It validates id and runs no SQL.
func (a *Admin) Locate(id string) (Location, error) {
	if err := Validate(id); err != nil {
		return Location{}, err
	}
	p, err := a.h.core.reg.Layout().Place(id)
	if err != nil {
		return Location{}, err
	}
	return locationOf(registry.Record{Placement: p}), nil
}

// PoolStats counts the connections of the Factory's pool, and what the
// change listener and the queue-state views do.
type PoolStats struct {
	// MaxConns is the most the pool opens.
	MaxConns int32
	// TotalConns are open now: AcquiredConns in use, IdleConns idle.
	TotalConns, AcquiredConns, IdleConns int32
	// Groups is the number of connection groups with tenant affinity
	// (see Factory.WithConnectionAffinity); 1 without.
	Groups int
	// Escapes counts statements that waited 100 ms at their tenant's
	// groups and then ran on another group's free connection.
	Escapes int64
	// Listening is true while the change listener hears its own probes:
	// only then are queue states scanned from memory.
	Listening bool
	// ListenerDeaf is true when the listener's last connection never
	// heard one of its probes: notifications do not reach it (a
	// transaction pooler such as PgBouncer in between, most likely; see
	// Factory.WithListenDSN), and every scan reads the database.
	ListenerDeaf bool
	// ListenSessions counts the listener's connections so far.
	ListenSessions int64
	// ViewsDropped counts the times the views were emptied because the
	// listener could no longer vouch for them (one of its probes, sent
	// every second, came back late, or its connection was lost): until
	// the next probe returns, scans read the database.
	ViewsDropped int64
	// ViewTenants and ViewBytes are what the queue-state views hold.
	ViewTenants int
	ViewBytes   int64
}

// PoolStats returns the counts of the shared pool's connections.
func (a *Admin) PoolStats() PoolStats {
	c := a.h.core
	s := c.conns.stat()
	groups := 1
	if g := c.conns.groups; g != nil {
		groups = g.Groups()
	}
	v := c.hub.ViewStats()
	return PoolStats{MaxConns: s.MaxConns, TotalConns: s.TotalConns, AcquiredConns: s.AcquiredConns, IdleConns: s.IdleConns,
		Groups: groups, Escapes: s.Escapes, Listening: v.Trusted, ListenerDeaf: c.hub.Deaf(), ListenSessions: c.hub.Sessions(),
		ViewsDropped: c.hub.Distrusts(), ViewTenants: v.Tenants, ViewBytes: v.Bytes}
}

// Stats describes one tenant's messages.
type Stats struct {
	// Tenant is the tenant id.
	Tenant string
	// Messages is the number of messages: exact, unless Estimated.
	Messages int64
	// Bytes is the sum of message sizes; 0 (unknown) when Estimated.
	Bytes int64
	// DiskBytes is the size on disk of the tenant's message table with its
	// indexes and TOAST, in Overview for the per-tenant modes; 0 otherwise
	// (a shared table's size is no one tenant's).
	DiskBytes int64
	// Estimated is true when Messages and Queued are the planner's row
	// estimates rather than counts: in Overview, for the per-tenant modes,
	// past ExactOverview tenants. An estimate is 0 until the table was
	// first vacuumed or analyzed.
	Estimated bool
	// Oldest and Newest are the earliest and latest creation times; zero in
	// Overview and when there are no messages.
	Oldest, Newest time.Time
	// Queued is the number of messages with RetrySpool metadata (see
	// Factory.Meta): exact, unless Estimated.
	Queued int64
	// States counts the messages with metadata by queue state name
	// ("incoming", "active", "deferred", ...), in Stats only; states
	// without messages are left out.
	States map[string]int64
}

// Stats counts tenant id's messages exactly. A tenant without storage has
// zero messages.
func (a *Admin) Stats(ctx context.Context, id string) (_ Stats, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if err := a.open(id); err != nil {
		return Stats{}, err
	}
	e, err := a.h.core.reading(ctx, id)
	if err != nil {
		return Stats{}, err
	}
	st, err := e.data.Stats(ctx)
	if errors.Is(err, pg.ErrTableMissing) {
		return Stats{Tenant: id}, nil
	}
	if err != nil {
		return Stats{}, fmt.Errorf("stats of tenant %q: %w", id, err)
	}
	out := Stats{Tenant: id, Messages: st.Messages, Bytes: st.Bytes, Oldest: st.Oldest, Newest: st.Newest}
	counts, err := e.meta.Counts(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("stats of tenant %q: %w", id, err)
	}
	if len(counts) > 0 {
		out.States = map[string]int64{}
		for state, n := range counts {
			out.States[state.String()] += n
			out.Queued += n
		}
	}
	return out, nil
}

// ExactOverview is the number of tenants up to which Overview counts
// every tenant's messages exactly in the per-tenant modes (two statements
// per tenant); past it, Overview reads the catalog's estimates.
const ExactOverview = 100

// Overview returns statistics for every active tenant, in tenant id order.
// In SharedTable they are exact, from one grouped scan of the shared
// tables. In the per-tenant modes each tenant's table size comes from the
// catalog, and its counts are exact for up to ExactOverview tenants and
// the planner's estimates beyond (Stats.Estimated).
func (a *Admin) Overview(ctx context.Context) (_ []Stats, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if a.h.closed.Load() {
		return nil, ErrClosed
	}
	usage, err := a.h.core.reg.Overview(ctx)
	if err != nil {
		return nil, err
	}
	perTenant := a.h.core.reg.Layout().Mode != SharedTable
	out := make([]Stats, len(usage))
	for i, u := range usage {
		if !perTenant {
			out[i] = Stats{Tenant: u.ID, Messages: u.Messages, Bytes: u.Bytes, Queued: u.Queued}
			continue
		}
		out[i] = Stats{Tenant: u.ID, DiskBytes: u.Bytes, Messages: u.Messages, Queued: u.Queued, Estimated: true}
		if len(usage) > ExactOverview {
			continue
		}
		st, err := a.Stats(ctx, u.ID)
		if err != nil {
			return nil, err
		}
		out[i].Messages, out[i].Bytes, out[i].Queued, out[i].Estimated = st.Messages, st.Bytes, st.Queued, false
	}
	return out, nil
}

// Purge deletes tenant id's messages not updated for olderThan, bodies
// and metadata alike, in batches of 1 000 per statement, and returns how
// many bodies it deleted. Every host's cached views of the tenant are
// dropped, also after a partial purge.
func (a *Admin) Purge(ctx context.Context, id string, olderThan time.Duration) (_ int64, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if err := a.open(id); err != nil {
		return 0, err
	}
	c := a.h.core
	e, err := c.reading(ctx, id)
	if err != nil {
		return 0, err
	}
	before := time.Now().Add(-olderThan)
	defer c.hub.Changed(id)
	n, err := e.data.Purge(ctx, before)
	if errors.Is(err, pg.ErrTableMissing) {
		return n, nil
	}
	if err != nil {
		return n, err
	}
	if _, err := e.meta.Purge(ctx, before); err != nil && !errors.Is(err, pg.ErrTableMissing) {
		return n, err
	}
	return n, nil
}
