package tenant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// ErrClosed reports use of a closed Router, or of a reader or writer
// after Close.
var ErrClosed = engine.ErrClosed

// Router is a datastorage.Backend that serves every tenant. It is safe for
// concurrent use. Routers made by one Factory value share one pool and one
// tenant cache.
type Router struct {
	core      *core
	pinned    string // the tenant of a Factory.ForTenant Router; "" otherwise
	release   func()
	closed    atomic.Bool
	closeOnce sync.Once

	mu      sync.Mutex
	next    uint64
	streams map[uint64]context.CancelCauseFunc // open streams, ended by Close
}

// track returns a context for an operation that may outlast a quick call
// (StoreData, a reader, a writer), which Close ends with ErrClosed, and the
// function to call when the operation is over.
func (r *Router) track(ctx context.Context) (context.Context, func()) {
	sctx, cancel := context.WithCancelCause(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		cancel(ErrClosed)
		return sctx, func() {}
	}
	if r.streams == nil {
		r.streams = map[uint64]context.CancelCauseFunc{}
	}
	r.next++
	key := r.next
	r.streams[key] = cancel
	return sctx, func() {
		r.mu.Lock()
		delete(r.streams, key)
		r.mu.Unlock()
		cancel(nil)
	}
}

// closedErr puts ErrClosed in the chain of an error caused by Close ending
// the operation's context.
func closedErr(ctx context.Context, err error) error {
	if err != nil && !errors.Is(err, ErrClosed) && errors.Is(context.Cause(ctx), ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

var _ datastorage.Backend = (*Router)(nil)

// resolve finds and validates the call's tenant; no SQL runs before it.
func (r *Router) resolve(ctx context.Context, messageID string) (string, error) {
	if r.closed.Load() {
		return "", ErrClosed
	}
	id, err := r.core.resolver.Resolve(ctx, messageID)
	if r.pinned != "" {
		switch {
		case errors.Is(err, ErrNoTenant) || (err == nil && id == ""):
			return r.pinned, nil
		case err == nil && id != r.pinned:
			return "", fmt.Errorf("%w: the call names tenant %q, this storage serves %q", ErrTenantMismatch, id, r.pinned)
		}
	}
	if err != nil {
		if errors.Is(err, ErrNoTenant) || errors.Is(err, ErrInvalidTenant) {
			return "", err
		}
		return "", fmt.Errorf("%w: resolver: %w", ErrNoTenant, err)
	}
	if id == "" {
		return "", ErrNoTenant
	}
	if err := Validate(id); err != nil {
		return "", err
	}
	return id, nil
}

// writer returns a streaming writer for tenant id's message. The tenant's
// objects are ensured before the first statement. If that statement finds
// them gone (dropped by another host or by hand), the cached entry is
// evicted and the tenant re-checked once: re-created if the registry says
// active, ErrTenantDeleted if tombstoned.
func (r *Router) writer(ctx context.Context, id, messageID string) *engine.StreamWriter {
	return engine.NewStreamWriter(ctx, messageID, func(retry bool) (*engine.Store, error) {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		if retry {
			r.core.ensured.Remove(id)
		}
		e, err := r.core.ensure(ctx, id, false)
		if err != nil {
			return nil, pg.ConnectionError(err)
		}
		return e.data, nil
	})
}

// writeErr maps a refused write guard (SharedTable) onto ErrTenantDeleted
// and forgets the tenant.
func (r *Router) writeErr(id string, err error) error {
	if errors.Is(err, engine.ErrGuardFailed) {
		r.core.ensured.Remove(id)
		return fmt.Errorf("%w: %q", ErrTenantDeleted, id)
	}
	return err
}

// read runs op on tenant id's Store without creating anything: a tenant
// whose objects do not exist has no data.
func (r *Router) read(id string, op func(*engine.Store) error) error {
	e, err := r.core.lookup(id)
	if err != nil {
		return pg.ConnectionError(err)
	}
	err = op(e.data)
	if errors.Is(err, pg.ErrTableMissing) {
		r.core.ensured.Remove(id)
		// The table's absence is the answer, not a fault: say so in the
		// words of ErrDataNotFound, without the server's message.
		return fmt.Errorf("%w: tenant %q has no stored messages", datastorage.ErrDataNotFound, id)
	}
	return err
}

// StoreData stores the body read from data under messageID for the call's
// tenant, creating the tenant's objects on its first write, and returns the
// number of bytes stored.
func (r *Router) StoreData(ctx context.Context, messageID string, data io.Reader) (n int64, err error) {
	id, err := r.resolve(ctx, messageID)
	if err != nil {
		return 0, err
	}
	if err := engine.ValidateMessageID(messageID); err != nil {
		return 0, err
	}
	start := time.Now()
	defer func() {
		r.core.obs.op(ctx, "store", id, start, err)
		if err == nil {
			r.core.obs.bytesIn.Add(ctx, n, r.core.obs.attrs(id))
		}
	}()
	release, err := r.core.limit.acquire(ctx, id)
	if err != nil {
		return 0, err
	}
	defer release()
	sctx, done := r.track(ctx)
	defer done()
	n, err = r.writer(sctx, id, messageID).StoreFrom(data)
	return n, closedErr(sctx, r.writeErr(id, err))
}

// GetDataReader returns a reader over the tenant's body stored under
// messageID, or an error that errors.Is datastorage.ErrDataNotFound.
func (r *Router) GetDataReader(ctx context.Context, messageID string) (io.ReadCloser, error) {
	id, err := r.resolve(ctx, messageID)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	release, err := r.core.limit.acquire(ctx, id)
	if err != nil {
		r.core.obs.op(ctx, "read", id, start, err)
		return nil, err
	}
	sctx, untrack := r.track(ctx)
	var rc io.ReadCloser
	err = r.read(id, func(s *engine.Store) error {
		var err error
		rc, err = s.Reader(sctx, messageID)
		return err
	})
	if err != nil {
		untrack()
		release()
		err = closedErr(sctx, err)
		r.core.obs.op(ctx, "read", id, start, err)
		return nil, err
	}
	return &routerReader{ReadCloser: rc, ctx: sctx, release: func() { untrack(); release() }, done: func(n int64, err error) {
		r.core.obs.op(ctx, "read", id, start, err)
		r.core.obs.bytesOut.Add(ctx, n, r.core.obs.attrs(id))
	}}, nil
}

// GetDataWriter returns a writer whose Close stores the body under
// messageID for the call's tenant, creating the tenant's objects if needed.
func (r *Router) GetDataWriter(ctx context.Context, messageID string) (io.WriteCloser, error) {
	id, err := r.resolve(ctx, messageID)
	if err != nil {
		return nil, err
	}
	if err := engine.ValidateMessageID(messageID); err != nil {
		return nil, err
	}
	start := time.Now()
	release, err := r.core.limit.acquire(ctx, id)
	if err != nil {
		r.core.obs.op(ctx, "write", id, start, err)
		return nil, err
	}
	sctx, untrack := r.track(ctx)
	return &routerWriter{StreamWriter: r.writer(sctx, id, messageID), ctx: sctx, r: r, id: id,
		release: func() { untrack(); release() },
		done: func(n int64, err error) {
			r.core.obs.op(ctx, "write", id, start, err)
			if err == nil {
				r.core.obs.bytesIn.Add(ctx, n, r.core.obs.attrs(id))
			}
		}}, nil
}

// DeleteData removes the tenant's body stored under messageID, or returns an
// error that errors.Is datastorage.ErrDataNotFound.
func (r *Router) DeleteData(ctx context.Context, messageID string) error {
	id, err := r.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	start := time.Now()
	release, err := r.core.limit.acquire(ctx, id)
	if err == nil {
		err = r.read(id, func(s *engine.Store) error { return s.Delete(ctx, messageID) })
		release()
	}
	r.core.obs.op(ctx, "delete", id, start, err)
	return err
}

// Provision creates tenant id's objects if they are missing and marks it
// active, also after Drop (the tenant comes back empty). It is idempotent.
func (r *Router) Provision(ctx context.Context, id string) (err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return ErrClosed
	}
	if err := Validate(id); err != nil {
		return err
	}
	_, err = r.core.ensure(ctx, id, true)
	if err == nil {
		r.core.obs.log.InfoContext(ctx, "pgtenant: tenant provisioned", "tenant", id, "store", r.core.reg.Store())
	}
	return err
}

// Drop offboards tenant id: it writes a tombstone to the registry first, so
// that from then on writes answer ErrTenantDeleted on every host, then
// removes the tenant's objects (its rows, in SharedTable) in a transaction
// of its own bounded by the lock timeout. If that second step fails the
// tenant stays tombstoned and Drop can be called again.
func (r *Router) Drop(ctx context.Context, id string) (err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return ErrClosed
	}
	if err := Validate(id); err != nil {
		return err
	}
	err = r.core.drop(ctx, id)
	if err == nil {
		r.core.obs.log.InfoContext(ctx, "pgtenant: tenant dropped", "tenant", id, "store", r.core.reg.Store())
	} else {
		r.core.obs.log.WarnContext(ctx, "pgtenant: dropping tenant failed", "tenant", id, "err", err)
	}
	return err
}

// List returns the ids of the active tenants of the Router's layout, in
// ascending order, from the registry.
func (r *Router) List(ctx context.Context) (_ []string, err error) {
	defer func() { err = pg.ConnectionError(err) }()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	return r.core.reg.List(ctx)
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

// Locate returns where tenant id's data lives, as the Router's layout
// places it. It validates id and runs no SQL.
func (r *Router) Locate(id string) (Location, error) {
	if err := Validate(id); err != nil {
		return Location{}, err
	}
	p, err := r.core.reg.Layout().Place(id)
	if err != nil {
		return Location{}, err
	}
	return locationOf(p), nil
}

func locationOf(p schema.Placement) Location {
	return Location{Mode: p.Mode, Table: p.Table, Chunks: p.Table.Chunks(), Meta: p.Table.Meta(), Partition: p.Partition}
}

// PoolStats counts the connections of the Router's pool.
type PoolStats struct {
	// MaxConns is the most the pool opens.
	MaxConns int32
	// TotalConns are open now: AcquiredConns in use, IdleConns idle.
	TotalConns, AcquiredConns, IdleConns int32
	// Groups is the number of connection groups with tenant affinity
	// (see Factory.WithConnectionAffinity); 1 without.
	Groups int
	// Escapes counts statements that waited affinity.EscapeAfter (100 ms)
	// at their tenant's groups and then ran on another group's free
	// connection.
	Escapes int64
}

// PoolStats returns the counts of the shared pool's connections.
func (r *Router) PoolStats() PoolStats {
	s := r.core.conns.stat()
	groups := 1
	if g := r.core.conns.groups; g != nil {
		groups = g.Groups()
	}
	return PoolStats{MaxConns: s.MaxConns, TotalConns: s.TotalConns, AcquiredConns: s.AcquiredConns, IdleConns: s.IdleConns,
		Groups: groups, Escapes: s.Escapes}
}

// Close releases the Router; the last Router of a Factory value closes the
// pool unless it came from WithPool. Readers and writers still open, and
// StoreData calls in flight, are ended first: their transactions roll back
// (the old version of a message being written stays), their connections go
// back to the pool, and their next Read, Write or Close fails with
// ErrClosed. So Close returns within the time a rollback takes, bounded by
// 5 s per connection for a server that does not answer. Close is
// idempotent.
func (r *Router) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed.Store(true)
		for _, cancel := range r.streams {
			cancel(ErrClosed)
		}
		r.streams = nil
		r.mu.Unlock()
		r.release()
	})
	return nil
}

// routerWriter maps write errors the way StoreData does.
type routerWriter struct {
	*engine.StreamWriter
	ctx     context.Context
	r       *Router
	id      string
	release func()
	done    func(n int64, err error)
	closed  bool
}

func (w *routerWriter) Write(p []byte) (int, error) {
	n, err := w.StreamWriter.Write(p)
	return n, closedErr(w.ctx, w.r.writeErr(w.id, err))
}

func (w *routerWriter) Close() error {
	defer w.release()
	err := closedErr(w.ctx, w.r.writeErr(w.id, w.StreamWriter.Close()))
	if !w.closed {
		w.closed = true
		w.done(w.Len(), err)
	}
	return err
}

// routerReader counts the bytes read and gives the tenant's place back on
// Close.
type routerReader struct {
	io.ReadCloser
	ctx     context.Context
	release func()
	done    func(n int64, err error)
	n       int64
	err     error
	closed  bool
}

func (r *routerReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	err = closedErr(r.ctx, err)
	r.n += int64(n)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

func (r *routerReader) Close() error {
	defer r.release()
	err := r.ReadCloser.Close()
	if !r.closed {
		r.closed = true
		r.done(r.n, r.err)
	}
	return err
}
