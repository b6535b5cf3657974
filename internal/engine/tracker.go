package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Tracker ends a backend's streams when the backend closes: every
// operation that may outlast a quick call (StoreData, a reader, a writer)
// runs under a context from Track, and Close cancels them all with
// ErrClosed, so their transactions roll back and their connections go
// back to the pool before the pool closes. The zero value is ready.
type Tracker struct {
	mu      sync.Mutex
	closed  bool
	next    uint64
	streams map[uint64]context.CancelCauseFunc
}

// Track returns a context for an operation, which Close ends with
// ErrClosed, and the function to call when the operation is over.
func (t *Tracker) Track(ctx context.Context) (context.Context, func()) {
	sctx, cancel := context.WithCancelCause(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		cancel(ErrClosed)
		return sctx, func() {}
	}
	if t.streams == nil {
		t.streams = map[uint64]context.CancelCauseFunc{}
	}
	t.next++
	key := t.next
	t.streams[key] = cancel
	return sctx, func() {
		t.mu.Lock()
		delete(t.streams, key)
		t.mu.Unlock()
		cancel(nil)
	}
}

// Close ends every tracked operation, and every later one at once.
func (t *Tracker) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, cancel := range t.streams {
		cancel(ErrClosed)
	}
	t.streams = nil
}

// ClosedErr puts ErrClosed in the chain of an error caused by Close
// ending the operation's context (see Track).
func ClosedErr(ctx context.Context, err error) error {
	if err != nil && !errors.Is(err, ErrClosed) && errors.Is(context.Cause(ctx), ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// TrackedReader is a reader whose Close also ends its tracking, and whose
// errors say ErrClosed when its backend closed under it.
type TrackedReader struct {
	io.ReadCloser
	Ctx  context.Context
	Done func()
	once sync.Once
}

// Read reads from the body.
func (r *TrackedReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	return n, ClosedErr(r.Ctx, err)
}

// Close closes the reader and ends its tracking.
func (r *TrackedReader) Close() error {
	defer r.once.Do(r.Done)
	return r.ReadCloser.Close()
}
