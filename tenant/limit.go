package tenant

import (
	"context"
	"fmt"
	"sync"
)

// limiter bounds the operations in flight per tenant, so that one busy
// tenant cannot take every pooled connection. Waiting honours the context.
// A nil limiter does not limit.
type limiter struct {
	n     int
	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	ch    chan struct{}
	users int // holders and waiters; the slot is dropped at zero
}

func newLimiter(n int) *limiter {
	if n <= 0 {
		return nil
	}
	return &limiter{n: n, slots: map[string]*slot{}}
}

// acquire waits for one of tenant id's n places and returns its release
// function, which may be called more than once.
func (l *limiter) acquire(ctx context.Context, id string) (func(), error) {
	if l == nil {
		return func() {}, nil
	}
	l.mu.Lock()
	s := l.slots[id]
	if s == nil {
		s = &slot{ch: make(chan struct{}, l.n)}
		l.slots[id] = s
	}
	s.users++
	l.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
		var once sync.Once
		return func() {
			once.Do(func() {
				<-s.ch
				l.leave(id, s)
			})
		}, nil
	case <-ctx.Done():
		l.leave(id, s)
		return nil, fmt.Errorf("pgtenant: waiting for a place of tenant %q: %w", id, context.Cause(ctx))
	}
}

func (l *limiter) leave(id string, s *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.users--
	if s.users == 0 {
		delete(l.slots, id)
	}
}
