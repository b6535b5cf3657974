package pg

import (
	"context"
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
	mu    sync.Mutex
	calls map[string]*call[T]
}

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
	if o.calls == nil {
		o.calls = map[string]*call[T]{}
	}
	c := o.calls[key]
	if c == nil {
		c = &call[T]{done: make(chan struct{})}
		o.calls[key] = c
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DDLTimeout)
		go func() {
			defer cancel()
			c.val, c.err = fn(wctx)
			o.mu.Lock()
			delete(o.calls, key)
			o.mu.Unlock()
			close(c.done)
		}()
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
