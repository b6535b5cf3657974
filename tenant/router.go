package tenant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Router is a datastorage.Backend that serves every tenant, or the one
// tenant of a Factory made by ForTenant. It is safe for concurrent use.
// Routers made by one Factory value share one pool and one tenant cache.
// The administration calls (Provision, Drop, Stats...) are on Admin.
type Router struct {
	h *handle
}

var _ datastorage.Backend = (*Router)(nil)

// writer returns a streaming writer for tenant id's message. The tenant's
// objects are ensured before the first statement. If that statement finds
// them gone (dropped by another host or by hand), the cached entry is
// evicted and the tenant re-checked once: re-created if the registry says
// active, ErrTenantDeleted if tombstoned.
func (r *Router) writer(ctx context.Context, id, messageID string) *engine.StreamWriter {
	c := r.h.core
	return engine.NewStreamWriter(ctx, messageID, func(retry bool) (*engine.Store, error) {
		if r.h.closed.Load() {
			return nil, ErrClosed
		}
		if retry {
			c.forget(id)
		}
		e, err := c.ensure(ctx, id, false)
		if err != nil {
			return nil, pg.ConnectionError(err)
		}
		return e.data, nil
	})
}

// read runs op on tenant id's Store without creating anything: a tenant
// whose objects do not exist has no data.
func (r *Router) read(ctx context.Context, id string, op func(*engine.Store) error) error {
	e, err := r.h.core.reading(ctx, id)
	if err != nil {
		return pg.ConnectionError(err)
	}
	err = op(e.data)
	if errors.Is(err, pg.ErrTableMissing) {
		r.h.core.forget(id)
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
	id, err := r.h.resolve(ctx, messageID)
	if err != nil {
		return 0, err
	}
	if err := engine.ValidateMessageID(messageID); err != nil {
		return 0, err
	}
	start := time.Now()
	defer func() {
		r.h.core.obs.op(ctx, "store", id, start, err)
		if err == nil {
			r.h.core.obs.bytesIn.Add(ctx, n, r.h.core.obs.attrs(id))
		}
	}()
	release, err := r.h.core.limit.acquire(ctx, id)
	if err != nil {
		return 0, err
	}
	defer release()
	sctx, done := r.h.track(ctx)
	defer done()
	n, err = r.writer(sctx, id, messageID).StoreFrom(data)
	return n, closedErr(sctx, r.h.core.writeErr(id, err))
}

// open starts a stream of the call's tenant (a reader, or a writer when
// write is true, which validates the message id too): it resolves the
// tenant, waits for its place and tracks the stream. On error it has
// recorded the failed operation.
func (r *Router) open(ctx context.Context, messageID, op string, write bool) (id string, sctx context.Context, release func(), err error) {
	start := time.Now()
	if id, err = r.h.resolve(ctx, messageID); err != nil {
		return "", nil, nil, err
	}
	if write {
		if err := engine.ValidateMessageID(messageID); err != nil {
			return "", nil, nil, err
		}
	}
	free, err := r.h.core.limit.acquire(ctx, id)
	if err != nil {
		r.h.core.obs.op(ctx, op, id, start, err)
		return "", nil, nil, err
	}
	sctx, untrack := r.h.track(ctx)
	return id, sctx, func() { untrack(); free() }, nil
}

// GetDataReader returns a reader over the tenant's body stored under
// messageID, or an error that errors.Is datastorage.ErrDataNotFound.
func (r *Router) GetDataReader(ctx context.Context, messageID string) (io.ReadCloser, error) {
	start := time.Now()
	id, sctx, release, err := r.open(ctx, messageID, "read", false)
	if err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	err = r.read(sctx, id, func(s *engine.Store) error {
		var err error
		rc, err = s.Reader(sctx, messageID)
		return err
	})
	if err != nil {
		release()
		err = closedErr(sctx, err)
		r.h.core.obs.op(ctx, "read", id, start, err)
		return nil, err
	}
	return &routerReader{ReadCloser: rc, ctx: sctx, release: release, done: func(n int64, err error) {
		r.h.core.obs.op(ctx, "read", id, start, err)
		r.h.core.obs.bytesOut.Add(ctx, n, r.h.core.obs.attrs(id))
	}}, nil
}

// GetDataWriter returns a writer whose Close stores the body under
// messageID for the call's tenant, creating the tenant's objects if needed.
func (r *Router) GetDataWriter(ctx context.Context, messageID string) (io.WriteCloser, error) {
	start := time.Now()
	id, sctx, release, err := r.open(ctx, messageID, "write", true)
	if err != nil {
		return nil, err
	}
	return &routerWriter{StreamWriter: r.writer(sctx, id, messageID), ctx: sctx, r: r, id: id, release: release,
		done: func(n int64, err error) {
			r.h.core.obs.op(ctx, "write", id, start, err)
			if err == nil {
				r.h.core.obs.bytesIn.Add(ctx, n, r.h.core.obs.attrs(id))
			}
		}}, nil
}

// DeleteData removes the tenant's body stored under messageID, or returns an
// error that errors.Is datastorage.ErrDataNotFound.
func (r *Router) DeleteData(ctx context.Context, messageID string) error {
	id, err := r.h.resolve(ctx, messageID)
	if err != nil {
		return err
	}
	start := time.Now()
	release, err := r.h.core.limit.acquire(ctx, id)
	if err == nil {
		err = r.read(ctx, id, func(s *engine.Store) error { return s.Delete(ctx, messageID) })
		release()
	}
	r.h.core.obs.op(ctx, "delete", id, start, err)
	return err
}

// Close releases the Router; the last Router, metadata backend or Admin of
// a Factory value closes the pool unless it came from WithPool. Readers
// and writers still open, and StoreData calls in flight, are ended first:
// their transactions roll back (the old version of a message being
// written stays), their connections go back to the pool, and their next
// Read, Write or Close fails with ErrClosed. So Close returns within the
// time a rollback takes, bounded by 5 s per connection for a server that
// does not answer. Close is idempotent.
func (r *Router) Close() error {
	r.h.close()
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
	return n, closedErr(w.ctx, w.r.h.core.writeErr(w.id, err))
}

func (w *routerWriter) Close() error {
	defer w.release()
	err := closedErr(w.ctx, w.r.h.core.writeErr(w.id, w.StreamWriter.Close()))
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
