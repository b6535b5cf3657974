package tenant

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/internal/changes"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	metastorage "schneider.vip/retryspool/storage/meta"
)

// MetaFactory makes RetrySpool metadata backends on a Factory's pool and
// tenant cache. It implements metastorage.Factory; see Factory.Meta.
type MetaFactory struct {
	f *Factory
}

var _ metastorage.Factory = (*MetaFactory)(nil)

// Meta returns the factory of RetrySpool metadata backends that keep each
// tenant's message metadata beside its message bodies, in the same
// isolation mode and pool: a table in the tenant's schema, a table of its
// own, or rows of a shared table. The metadata table is created with the
// tenant's other objects on its first write; reads never create it. Drop,
// DropMany, Purge, Stats, Overview and MigrateAll cover it.
//
// Backends of a Factory pinned with ForTenant serve that tenant only;
// others resolve the tenant of every call as Routers do. Their
// GetStateCount answers for the pinned tenant (0 when not pinned).
func (f *Factory) Meta() *MetaFactory { return &MetaFactory{f: f} }

// Name returns "pgtenant".
func (m *MetaFactory) Name() string { return "pgtenant" }

// Create returns a new metadata backend, a *MetaBackend. It shares the
// Factory's pool and tenant cache, opening them if no Router has.
func (m *MetaFactory) Create() (metastorage.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.Open(ctx)
}

// Open is Create with a context.
func (m *MetaFactory) Open(ctx context.Context) (*MetaBackend, error) {
	h, err := m.f.open(ctx)
	if err != nil {
		return nil, err
	}
	h.core.hub.Start()
	return &MetaBackend{h: h}, nil
}

// MetaBackend is a metastorage.Backend and metastorage.StateCounterBackend
// over pgtenant's tenants. Every operation is one statement, so one round
// trip, except iterators over states that did not change, which need none
// (see NewMessageIterator). It is safe for concurrent use.
type MetaBackend struct {
	h *handle
}

var _ metastorage.StateCounterBackend = (*MetaBackend)(nil)

// resolve finds the call's tenant, or ErrBackendClosed once closed.
func (b *MetaBackend) resolve(ctx context.Context, messageID string) (string, error) {
	if b.h.closed.Load() {
		return "", metastorage.ErrBackendClosed
	}
	return b.h.resolve(ctx, messageID)
}

// reading runs op on tenant id's statements, creating nothing, and maps a
// missing table (an unknown or dropped tenant) onto notFound: no data.
// A write of existing messages (UpdateMeta, MoveToState, DeleteMeta) runs
// here too: it creates nothing either, and what it changes is announced.
func (b *MetaBackend) reading(ctx context.Context, id string, notFound error, op func(*engine.MetaStore) error) error {
	c := b.h.core
	e, err := c.reading(ctx, id)
	if err != nil {
		return pg.ConnectionError(err)
	}
	err = op(e.meta)
	if errors.Is(err, pg.ErrTableMissing) {
		c.forget(id)
		if notFound == nil {
			return nil
		}
		// The table's absence is the answer, not a fault: no server text.
		return fmt.Errorf("%w: tenant %q has no stored messages", notFound, id)
	}
	return pg.ConnectionError(c.writeErr(id, err))
}

// writing runs a write on tenant id's statements, creating its objects if
// needed; the change is announced once it is done.
func (b *MetaBackend) writing(ctx context.Context, id string, op func(*engine.MetaStore) error) error {
	c := b.h.core
	defer c.hub.Changed(id)
	for attempt := 0; ; attempt++ {
		e, err := c.ensure(ctx, id, false)
		if err != nil {
			return pg.ConnectionError(err)
		}
		err = op(e.meta)
		if errors.Is(err, pg.ErrTableMissing) && attempt == 0 {
			c.forget(id) // dropped under the cache: check again, once
			continue
		}
		return pg.ConnectionError(c.writeErr(id, err))
	}
}

// StoreMeta stores the metadata of messageID, replacing what was there.
// Updated becomes now, and Created too if it is zero.
func (b *MetaBackend) StoreMeta(ctx context.Context, messageID string, metadata metastorage.MessageMetadata) error {
	id, err := b.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	return b.writing(ctx, id, func(m *engine.MetaStore) error { return m.Store(ctx, messageID, metadata) })
}

// GetMeta returns the metadata of messageID, or an error that errors.Is
// metastorage.ErrMessageNotFound. Its ID is the one stored.
func (b *MetaBackend) GetMeta(ctx context.Context, messageID string) (metastorage.MessageMetadata, error) {
	id, err := b.resolve(ctx, messageID)
	if err != nil {
		return metastorage.MessageMetadata{}, err
	}
	var md metastorage.MessageMetadata
	err = b.reading(ctx, id, metastorage.ErrMessageNotFound, func(m *engine.MetaStore) (err error) {
		md, err = m.Get(ctx, messageID)
		return err
	})
	return md, err
}

// UpdateMeta replaces the metadata of messageID, keeping its creation time;
// Updated becomes now. A missing message is metastorage.ErrMessageNotFound.
func (b *MetaBackend) UpdateMeta(ctx context.Context, messageID string, metadata metastorage.MessageMetadata) error {
	id, err := b.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	defer b.h.core.hub.Changed(id)
	return b.reading(ctx, id, metastorage.ErrMessageNotFound, func(m *engine.MetaStore) error {
		return m.Update(ctx, messageID, metadata)
	})
}

// DeleteMeta removes the metadata of messageID. A missing message is
// metastorage.ErrMessageNotFound.
func (b *MetaBackend) DeleteMeta(ctx context.Context, messageID string) error {
	id, err := b.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	defer b.h.core.hub.Changed(id)
	return b.reading(ctx, id, metastorage.ErrMessageNotFound, func(m *engine.MetaStore) error {
		_, err := m.Delete(ctx, messageID)
		return err
	})
}

// MoveToState moves messageID from fromState to toState as a compare and
// swap, in one statement: of concurrent moves from the same state, on any
// number of hosts, exactly one succeeds and the others get
// metastorage.ErrStateConflict. A missing message is
// metastorage.ErrMessageNotFound. Updated becomes now.
func (b *MetaBackend) MoveToState(ctx context.Context, messageID string, fromState, toState metastorage.QueueState) error {
	id, err := b.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	defer b.h.core.hub.Changed(id)
	return b.reading(ctx, id, metastorage.ErrMessageNotFound, func(m *engine.MetaStore) error {
		return m.Move(ctx, messageID, fromState, toState)
	})
}

// ListMessages lists the ids of the messages in state: created or updated
// at or after options.Since (if set), sorted by options.SortBy ("created",
// "updated", "priority", "attempts"; anything else by created; ties by
// message id) in options.SortOrder ("desc", else ascending), from
// options.Offset, at most options.Limit of them (0: all). Total counts
// every match; HasMore says whether more follow the returned ones.
func (b *MetaBackend) ListMessages(ctx context.Context, state metastorage.QueueState, options metastorage.MessageListOptions) (metastorage.MessageListResult, error) {
	id, err := b.resolve(ctx, "")
	if err != nil {
		return metastorage.MessageListResult{}, err
	}
	res := metastorage.MessageListResult{MessageIDs: []string{}}
	err = b.reading(ctx, id, nil, func(m *engine.MetaStore) error {
		ids, total, err := m.List(ctx, state, options)
		if err == nil {
			res = metastorage.MessageListResult{MessageIDs: ids, Total: total,
				HasMore: max(options.Offset, 0)+len(ids) < total}
		}
		return err
	})
	return res, err
}

// NewMessageIterator returns an iterator over every message in state, in
// (created, message id) order, each with its message id as ID. It pages
// through the state by key, batchSize messages per round trip (100 when
// not positive), so messages that leave the state meanwhile never make
// others be skipped, and its memory follows batchSize.
//
// A state of up to 1 000 messages (and 2 MiB) is kept in memory, per
// tenant, once an iteration has read it to its end, until the tenant's
// data changes: on this host the next iterator sees the change at once;
// another host's change arrives through a notification (LISTEN/NOTIFY),
// usually within milliseconds. So an idle queue, whose scheduler scans its
// states every 10 ms, costs no round trip. While notifications are not
// heard (the listening connection is down, or passes through a transaction
// pooler: see Factory.WithListenDSN), every iterator reads the database.
func (b *MetaBackend) NewMessageIterator(ctx context.Context, state metastorage.QueueState, batchSize int) (metastorage.MessageIterator, error) {
	id, err := b.resolve(ctx, "")
	if err != nil {
		return nil, err
	}
	if batchSize <= 0 {
		batchSize = 100
	}
	it := &metaIterator{b: b, tenant: id, state: state, batch: batchSize}
	list, ok, ticket := b.h.core.hub.State(id, state)
	if ok {
		it.list, it.done = list, true
		return it, nil
	}
	it.fill = ticket.Fill(state)
	if err := it.next(ctx); err != nil {
		return nil, err
	}
	return it, nil
}

// GetStateCount returns how many messages of the pinned tenant are in
// state (0 on a backend that is not pinned, and 0 when the count cannot be
// taken). Counts are kept in memory and taken again, with one grouped
// index scan, only after the tenant's data changed (on any host).
func (b *MetaBackend) GetStateCount(state metastorage.QueueState) int64 {
	id := b.h.pinned
	if id == "" || b.h.closed.Load() {
		return 0
	}
	n, ok, ticket := b.h.core.hub.Count(id, state)
	if ok {
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var counts map[metastorage.QueueState]int64
	err := b.reading(ctx, id, nil, func(m *engine.MetaStore) (err error) {
		counts, err = m.Counts(ctx)
		return err
	})
	if err != nil {
		return 0
	}
	ticket.KeepCounts(counts)
	return counts[state]
}

// Close closes the backend; later calls fail with
// metastorage.ErrBackendClosed. It is idempotent.
func (b *MetaBackend) Close() error {
	b.h.close()
	return nil
}

// metaIterator walks one state: from memory, or page by page from the
// database, gathering the pages for the view as it goes.
type metaIterator struct {
	b      *MetaBackend
	tenant string
	state  metastorage.QueueState
	batch  int

	mu     sync.Mutex
	list   []metastorage.MessageMetadata
	pos    int
	cursor *engine.Cursor
	done   bool // no page after list
	fill   *changes.Fill
	closed atomic.Bool
}

// next loads the next page after the cursor.
func (it *metaIterator) next(ctx context.Context) error {
	var (
		page []metastorage.MessageMetadata
		last *engine.Cursor
	)
	err := it.b.reading(ctx, it.tenant, nil, func(m *engine.MetaStore) (err error) {
		page, last, err = m.Page(ctx, it.state, it.cursor, it.batch)
		return err
	})
	if err != nil {
		return err
	}
	it.list, it.pos, it.done = page, 0, len(page) < it.batch
	if last != nil {
		it.cursor = last
	}
	it.fill.Add(page)
	if it.done {
		it.fill.Done()
	}
	return nil
}

// Next returns the next message and whether more may follow; at the end
// it returns a zero metadata (empty ID) and false.
func (it *metaIterator) Next(ctx context.Context) (metastorage.MessageMetadata, bool, error) {
	if err := ctx.Err(); err != nil {
		return metastorage.MessageMetadata{}, false, err
	}
	if it.closed.Load() || it.b.h.closed.Load() {
		return metastorage.MessageMetadata{}, false, metastorage.ErrBackendClosed
	}
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.pos >= len(it.list) {
		if it.done {
			return metastorage.MessageMetadata{}, false, nil
		}
		if err := it.next(ctx); err != nil {
			return metastorage.MessageMetadata{}, false, err
		}
		if len(it.list) == 0 {
			return metastorage.MessageMetadata{}, false, nil
		}
	}
	md := it.list[it.pos]
	md.Headers = maps.Clone(md.Headers) // the list may be shared with the view
	it.pos++
	return md, it.pos < len(it.list) || !it.done, nil
}

// Close ends the iterator; Next then fails.
func (it *metaIterator) Close() error {
	it.closed.Store(true)
	return nil
}
