package tenant

import (
	"container/list"
	"context"
	"fmt"
	"sync"
)

// limiter bounds the operations in flight per tenant, so that one busy
// tenant cannot take every pooled connection. Waiters are served in the
// order they arrived, and waiting honours the context. A nil limiter does
// not limit.
type limiter struct {
	n     int
	mu    sync.Mutex
	slots map[string]*slot
}

// slot is one tenant's places: held of them are taken, and waiters queue
// for the next one, oldest first.
type slot struct {
	held    int
	waiters list.List // of *waiter
}

type waiter struct {
	ready   chan struct{} // closed when the place is handed over
	granted bool
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
		s = &slot{}
		l.slots[id] = s
	}
	if s.held < l.n && s.waiters.Len() == 0 {
		s.held++
		l.mu.Unlock()
		return l.releaser(id, s), nil
	}
	w := &waiter{ready: make(chan struct{})}
	e := s.waiters.PushBack(w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return l.releaser(id, s), nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			// The place arrived as the context ended: pass it on.
			l.mu.Unlock()
			l.release(id, s)
		} else {
			s.waiters.Remove(e)
			l.forget(id, s)
			l.mu.Unlock()
		}
		return nil, fmt.Errorf("waiting for a place of tenant %q: %w", id, context.Cause(ctx))
	}
}

func (l *limiter) releaser(id string, s *slot) func() {
	var once sync.Once
	return func() { once.Do(func() { l.release(id, s) }) }
}

// release hands a place to the oldest waiter, or gives it back.
func (l *limiter) release(id string, s *slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := s.waiters.Front(); e != nil {
		w := s.waiters.Remove(e).(*waiter)
		w.granted = true
		close(w.ready)
		return
	}
	s.held--
	l.forget(id, s)
}

// forget drops an unused slot; l.mu is held.
func (l *limiter) forget(id string, s *slot) {
	if s.held == 0 && s.waiters.Len() == 0 {
		delete(l.slots, id)
	}
}

// waiting returns the number of calls waiting for a place of tenant id.
func (l *limiter) waiting(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.slots[id]; s != nil {
		return s.waiters.Len()
	}
	return 0
}
