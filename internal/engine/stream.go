package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// StreamWriter stores one body, streaming: it holds at most one chunk
// (Options.ChunkSize) in memory whatever the body's size.
//
// A body that fits in one chunk is stored on Close with one statement, inline
// in the data column (the fast path). A larger one is written as it arrives,
// chunk by chunk, inside a transaction on one pooled connection, under a new
// version number; Close then points the message row at that version, deletes
// the pieces of other versions and commits. So a replace is atomic: readers
// see the old body or the new one, and a write that fails, is cancelled or
// exceeds the maximum size leaves the old body and no pieces behind.
//
// Write after Close returns ErrClosed; Close runs once and a second Close
// returns the first one's result. If the context ends before Close, the
// transaction is rolled back and the connection returned at once. Not safe
// for concurrent use, like most io.Writers.
type StreamWriter struct {
	ctx   context.Context
	id    string
	store func(retry bool) (*Store, error)

	mu      sync.Mutex // guards tx against the context's AfterFunc
	s       *Store
	buf     []byte
	n       int64
	tx      pgx.Tx
	stop    func() bool
	version int64
	seq     int32
	closed  bool
	err     error // sticky
}

// NewStreamWriter returns a writer for message id. store supplies the Store
// at the first statement; if that statement finds the table missing and no
// byte has been written yet, store(true) is asked once more (a caller such
// as the tenant router re-creates the table there) and the statement runs
// again.
func NewStreamWriter(ctx context.Context, id string, store func(retry bool) (*Store, error)) *StreamWriter {
	return &StreamWriter{ctx: ctx, id: id, store: store}
}

func (w *StreamWriter) open() error {
	if w.s != nil {
		return nil
	}
	s, err := w.store(false)
	if err != nil {
		return err
	}
	w.s = s
	if w.buf == nil {
		w.buf = make([]byte, 0, min(s.chunkSize, 4<<10)) // grows by append up to one chunk
	}
	return nil
}

// Len returns the number of bytes written so far.
func (w *StreamWriter) Len() int64 { return w.n }

// Write adds p to the body.
func (w *StreamWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.open(); err != nil {
		return 0, w.fail(err)
	}
	written := 0
	for len(p) > 0 {
		if w.n+int64(len(p)) > w.s.maxSize {
			return written, w.fail(tooLarge(w.s.maxSize))
		}
		if err := w.s.quota.BodyTooLarge(w.n + int64(len(p))); err != nil {
			return written, w.fail(err)
		}
		if len(w.buf) == w.s.chunkSize {
			if err := w.flush(); err != nil {
				return written, w.fail(err)
			}
		}
		k := min(len(p), w.s.chunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		w.n += int64(k)
		written += k
		p = p[k:]
	}
	return written, nil
}

// StoreFrom copies r into the body and closes the writer, returning the
// number of bytes stored.
func (w *StreamWriter) StoreFrom(r io.Reader) (int64, error) {
	if r != nil {
		if _, err := io.Copy(w, r); err != nil {
			if !errors.Is(err, w.err) && w.err == nil {
				err = fmt.Errorf("pgtenant: reading message %q: %w", w.id, err)
			}
			w.fail(err)
			_ = w.Close()
			return 0, err
		}
	}
	if err := w.Close(); err != nil {
		return 0, err
	}
	return w.n, nil
}

// flush writes the full buffer as the next chunk, starting the transaction
// first if needed.
func (w *StreamWriter) flush() error {
	if err := context.Cause(w.ctx); err != nil {
		return err
	}
	if !w.started() {
		if err := w.begin(); err != nil {
			return err
		}
	}
	s := w.s
	if err := w.withTx(func(tx pgx.Tx) error {
		v := s.call(w.id)
		v.version, v.seq, v.data = w.version, w.seq, w.buf
		_, err := tx.Exec(w.ctx, s.chunkInsert.SQL, s.chunkInsert.Args(s.mode, v)...)
		return translate(err)
	}); err != nil {
		return err
	}
	w.seq++
	w.buf = w.buf[:0]
	return nil
}

// started reports whether the chunked transaction was begun (it may have
// been aborted since).
func (w *StreamWriter) started() bool { return w.stop != nil }

// withTx runs fn on the open transaction, holding w.mu so that the
// context's AfterFunc (abort) never rolls back while a statement is on
// the connection: it waits for fn, whose statement ends promptly once the
// context is done. Without an open transaction it returns the context's
// cause, or ErrClosed.
func (w *StreamWriter) withTx(fn func(tx pgx.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tx == nil {
		if err := context.Cause(w.ctx); err != nil {
			return err
		}
		return ErrClosed
	}
	return fn(w.tx)
}

func (w *StreamWriter) begin() error {
	var v [8]byte
	if _, err := rand.Read(v[:]); err != nil {
		return err
	}
	w.version = int64(binary.BigEndian.Uint64(v[:]) >> 1)
	for attempt := 0; ; attempt++ {
		var tx pgx.Tx
		err := retry(w.ctx, writes, func() (err error) {
			tx, err = w.s.db.Begin(w.ctx)
			return translate(err)
		})
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.tx = tx
		w.mu.Unlock()
		w.stop = context.AfterFunc(w.ctx, w.abort)
		// Probe the chunk table before the first chunk goes out, so that a
		// missing table can still be re-created and retried.
		err = w.withTx(func(tx pgx.Tx) error {
			_, err := tx.Exec(w.ctx, w.s.probe.SQL, w.s.mode)
			return err
		})
		if err == nil {
			return nil
		}
		w.rollback()
		w.stop = nil
		err = translate(err)
		if attempt > 0 || !errors.Is(err, pg.ErrTableMissing) {
			return err
		}
		if w.s, err = w.store(true); err != nil {
			return err
		}
	}
}

// abort rolls the transaction back; it runs when the context ends first.
func (w *StreamWriter) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tx != nil {
		rollback(w.ctx, w.tx)
		w.tx = nil
	}
}

func (w *StreamWriter) rollback() {
	if w.stop != nil {
		w.stop()
	}
	w.abort()
}

func (w *StreamWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	w.rollback()
	w.buf = nil
	return w.err
}

// Close stores the body, once.
func (w *StreamWriter) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.err != nil {
		w.rollback()
		return w.err
	}
	if err := w.open(); err != nil {
		return w.fail(err)
	}
	if !w.started() {
		err := w.s.Put(w.ctx, w.id, w.buf)
		if errors.Is(err, pg.ErrTableMissing) {
			if w.s, err = w.store(true); err == nil {
				err = w.s.Put(w.ctx, w.id, w.buf)
			}
		}
		if err != nil {
			return w.fail(err)
		}
		w.buf = nil
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.flush(); err != nil {
			return w.fail(err)
		}
	}
	if err := w.commit(); err != nil {
		return w.fail(err)
	}
	w.buf = nil
	return nil
}

func (w *StreamWriter) commit() error {
	if err := context.Cause(w.ctx); err != nil {
		return err
	}
	s := w.s
	return w.withTx(func(tx pgx.Tx) error {
		v := s.call(w.id)
		v.size, v.version = w.n, w.version
		if err := s.write(w.ctx, tx, s.chunkedPut, v, false); err != nil {
			return err
		}
		if _, err := tx.Exec(w.ctx, s.chunkClean.SQL, s.chunkClean.Args(s.mode, v)...); err != nil {
			return translate(err)
		}
		err := tx.Commit(w.ctx)
		w.tx = nil
		w.stop()
		return translate(err)
	})
}

// Reader returns a reader over the body stored under id. A body kept inline
// comes back with one statement and is held in memory (at most one chunk).
// A larger one is streamed: the reader opens a read-only REPEATABLE READ
// transaction on one pooled connection and reads the pieces one at a time,
// so all its bytes belong to one version even if a writer replaces the
// message meanwhile. It holds that connection until Close, or until ctx
// ends, whichever comes first.
func (s *Store) Reader(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := ValidateMessageID(id); err != nil {
		return nil, err
	}
	var rc io.ReadCloser
	err := retry(ctx, reads, func() error {
		var (
			data    []byte
			size    int64
			version *int64
		)
		err := translate(s.row(ctx, s.db, s.get, s.call(id), &data, &size, &version))
		switch {
		case err != nil:
			return err
		case version == nil:
			rc = NewBytesReader(data)
			return nil
		}
		rc, err = s.chunkReader(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rc, nil
}

func (s *Store) chunkReader(ctx context.Context, id string) (io.ReadCloser, error) {
	tx, err := pg.BeginTx(ctx, s.db, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, translate(err)
	}
	var (
		data    []byte
		size    int64
		version *int64
	)
	if err := s.row(ctx, tx, s.get, s.call(id), &data, &size, &version); err != nil {
		rollback(ctx, tx)
		return nil, translate(err)
	}
	if version == nil { // replaced by a small body in between
		rollback(ctx, tx)
		return NewBytesReader(data), nil
	}
	if scanHook != nil {
		scanHook(ctx, beforeScan)
	}
	v := s.call(id)
	v.version = *version
	rows, err := tx.Query(ctx, s.chunkScan.SQL, s.chunkScan.Args(s.mode, v)...)
	if err != nil {
		rollback(ctx, tx)
		return nil, translate(err)
	}
	if scanHook != nil {
		scanHook(ctx, afterScan)
	}
	r := &chunkReader{ctx: ctx, tx: tx, rows: rows, size: size}
	// The callback may run at once, in its own goroutine, if ctx is done
	// already: r.stop is set under r.mu, where the callback looks.
	stop := context.AfterFunc(ctx, r.abort)
	r.mu.Lock()
	r.stop = stop
	r.mu.Unlock()
	return r, nil
}

// rollbackTimeout bounds a rollback, which runs even after the caller's
// context ended: a server that does not answer does not keep the caller
// (or Router.Close) waiting longer than that.
const rollbackTimeout = 5 * time.Second

// rollback rolls tx back with a context detached from ctx's cancellation
// and bounded by rollbackTimeout. If the rollback fails the connection is
// closed by pgx and not reused.
func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	_ = tx.Rollback(rctx)
}

// scanHook, when not nil, is called by a chunked read between its read of
// the message row and its scan of the pieces (beforeScan), inside the
// reader's transaction, and once the scan has started, before the reader
// watches its context (afterScan). Only tests set it, to change the
// message or end the context at exactly those moments.
var scanHook func(ctx context.Context, at scanStage)

type scanStage int

const (
	beforeScan scanStage = iota
	afterScan
)

// chunkReader streams a chunked body; see Store.Reader.
type chunkReader struct {
	ctx  context.Context
	mu   sync.Mutex
	tx   pgx.Tx
	rows pgx.Rows
	stop func() bool
	cur  []byte // rest of the current chunk, owned by rows until Next
	read int64
	size int64
	err  error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		if err := context.Cause(r.ctx); err != nil { // ended, its callback may not have run yet
			r.release()
			r.err = err
		}
	}
	if r.err != nil {
		return 0, r.err
	}
	for len(r.cur) == 0 {
		if !r.rows.Next() {
			err := r.rows.Err()
			switch {
			case err != nil:
				r.err = translate(err)
			case r.read != r.size:
				r.err = fmt.Errorf("pgtenant: body has %d of %d bytes", r.read, r.size)
			default:
				r.err = io.EOF
			}
			r.release()
			return 0, r.err
		}
		r.cur = r.rows.RawValues()[0]
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	r.read += int64(n)
	return n, nil
}

// release ends the transaction and returns the connection; r.mu is held.
func (r *chunkReader) release() {
	if r.tx == nil {
		return
	}
	r.rows.Close()
	rollback(r.ctx, r.tx)
	r.tx = nil
	r.cur = nil
}

// abort ends the read when its context ends: later reads return the
// context's cause.
func (r *chunkReader) abort() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.release()
	if r.err == nil {
		r.err = context.Cause(r.ctx)
	}
}

// Close returns the connection; it is idempotent.
func (r *chunkReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.stop()
	}
	r.release()
	if r.err == nil || r.err == io.EOF {
		r.err = ErrClosed
	}
	return nil
}
