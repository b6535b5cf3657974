package tenant

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgtenant/pgtenant/internal/pg"
)

// Stats describes one tenant's messages.
type Stats struct {
	// Tenant is the tenant id.
	Tenant string
	// Messages is the number of messages (exact in Router.Stats, the
	// planner's estimate in Router.Overview for the per-tenant modes).
	Messages int64
	// Bytes is the sum of message sizes (Router.Stats, and Overview in
	// SharedTable) or the disk size of the tenant's message table with its
	// indexes and TOAST (Overview in the per-tenant modes).
	Bytes int64
	// Oldest and Newest are the earliest and latest creation times; zero in
	// Overview and when there are no messages.
	Oldest, Newest time.Time
	// Queued is the number of messages with RetrySpool metadata (see
	// Factory.Meta): exact in Router.Stats and, in SharedTable, in
	// Overview; the planner's estimate in Overview for the per-tenant
	// modes.
	Queued int64
	// States counts the messages with metadata by queue state name
	// ("incoming", "active", "deferred", ...), in Router.Stats only; states
	// without messages are left out.
	States map[string]int64
}

// Stats counts tenant id's messages exactly. A tenant without storage has
// zero messages.
func (r *Router) Stats(ctx context.Context, id string) (_ Stats, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return Stats{}, ErrClosed
	}
	if err := Validate(id); err != nil {
		return Stats{}, err
	}
	e, err := r.core.lookup(id)
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
	if errors.Is(err, pg.ErrTableMissing) { // objects of a release before metadata
		return out, nil
	}
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

// Overview returns cheap statistics for every active tenant, in tenant id
// order: in the per-tenant modes from the catalog (the planner's row
// estimate, which is -1 or 0 until the table was first vacuumed or
// analyzed, and the table's disk size), in SharedTable from one grouped
// scan of the shared table.
func (r *Router) Overview(ctx context.Context) (_ []Stats, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	usage, err := r.core.reg.Overview(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Stats, len(usage))
	for i, u := range usage {
		out[i] = Stats{Tenant: u.ID, Messages: u.Messages, Bytes: u.Bytes, Queued: u.Queued}
	}
	return out, nil
}

// Purge deletes tenant id's messages not updated for olderThan, bodies
// and metadata alike, in batches of 1 000 per statement, and returns how
// many bodies it deleted.
func (r *Router) Purge(ctx context.Context, id string, olderThan time.Duration) (_ int64, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return 0, ErrClosed
	}
	if err := Validate(id); err != nil {
		return 0, err
	}
	e, err := r.core.lookup(id)
	if err != nil {
		return 0, err
	}
	before := time.Now().Add(-olderThan)
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
	r.core.views.changed(id)
	return n, nil
}

// DropMany drops the tenants ids, each with Drop: one tenant per
// transaction, so that dropping thousands never needs more locks than one
// tenant's objects (max_locks_per_transaction). At most concurrency drops
// run at once (default 4). It returns the tenants that failed, with their
// errors, and ctx's error if it was cancelled; tenants not reached are
// untouched and tenants in flight finish.
func (r *Router) DropMany(ctx context.Context, ids []string, concurrency int) (map[string]error, error) {
	failed := map[string]error{}
	forEachTenant(ctx, ids, concurrency,
		func(id string) error { return r.Drop(context.WithoutCancel(ctx), id) },
		func(id string, err error) {
			if err != nil {
				failed[id] = err
			}
		})
	return failed, ctx.Err()
}
