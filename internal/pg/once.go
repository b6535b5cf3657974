package pg

import (
	"context"
	"errors"
	"sync"
	"time"
)

// DDLTimeout bounds work that callers share (see Once). It runs detached
// from any one caller's cancellation, so that a caller giving up does not
// fail the others waiting for the same work.
const DDLTimeout = 30 * time.Second

// Once runs work at most once at a time per key within a process: callers
// arriving while it runs wait for its result instead of repeating it, and
// all of them get that result. Each caller stops waiting when its own
// context ends, with the context's cause. The work itself runs in a
// goroutine of its own, with a context detached from the callers'
// cancellation and bounded by DDLTimeout. The zero value is ready to use.
type Once[T any] struct {
	mu     sync.Mutex
	calls  map[string]*call[T]
	closed bool
	runs   sync.WaitGroup
	cancel map[*call[T]]context.CancelFunc
}

// errOnceClosed is what a Do after Close returns.
var errOnceClosed = errors.New("pgtenant: closed")

type call[T any] struct {
	done    chan struct{} // closed when val and err are set
	val     T
	err     error
	callers int
}

// Do runs fn for key, or joins the run already in progress, and returns
// the run's result.
func (o *Once[T]) Do(ctx context.Context, key string, fn func(ctx context.Context) (T, error)) (T, error) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		var zero T
		return zero, errOnceClosed
	}
	if o.calls == nil {
		o.calls = map[string]*call[T]{}
		o.cancel = map[*call[T]]context.CancelFunc{}
	}
	c := o.calls[key]
	if c == nil {
		c = &call[T]{done: make(chan struct{})}
		o.calls[key] = c
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DDLTimeout)
		o.cancel[c] = cancel
		o.runs.Go(func() {
			c.val, c.err = fn(wctx)
			o.mu.Lock()
			delete(o.calls, key)
			delete(o.cancel, c)
			o.mu.Unlock()
			cancel()
			close(c.done)
		})
	}
	c.callers++
	o.mu.Unlock()
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero T
		return zero, context.Cause(ctx)
	}
}

// Close cancels the runs in progress and waits for them to end; later
// calls of Do fail at once.
func (o *Once[T]) Close() {
	o.mu.Lock()
	o.closed = true
	for _, cancel := range o.cancel {
		cancel()
	}
	o.mu.Unlock()
	o.runs.Wait()
}

// callers returns how many calls have asked for the run in progress for
// key (0 when none runs).
func (o *Once[T]) callers(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.calls[key]; c != nil {
		return c.callers
	}
	return 0
}
