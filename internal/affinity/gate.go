package affinity

import (
	"sync"
)

// gate admits at most size holders at once. Waiters queue per key (a
// tenant). A freed slot goes to the waiting key that holds the fewest
// slots, and among those to the one whose turn it is (round robin): a key
// flooding the gate holds its slots, and any other key that arrives is
// next.
type gate struct {
	mu      sync.Mutex
	free    int
	waiting int
	held    map[string]int // slots held per key
	queues  map[string]*queue
	ring    []string // keys with waiters, in turn order
}

type queue struct {
	waiters []*waiter
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

func newGate(size int) *gate {
	return &gate{free: size, held: make(map[string]int), queues: make(map[string]*queue)}
}

// tryAcquire takes a slot for key if one is free and nobody waits.
func (g *gate) tryAcquire(key string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.free > 0 && g.waiting == 0 {
		g.free--
		g.held[key]++
		return true
	}
	return false
}

// load is the number of waiters, for choosing between gates.
func (g *gate) load() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

// enqueue takes a slot for key at once if one is free and nobody waits
// (nil), or queues a waiter whose ch closes when it is granted one.
func (g *gate) enqueue(key string) *waiter {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.free > 0 && g.waiting == 0 {
		g.free--
		g.held[key]++
		return nil
	}
	w := &waiter{ch: make(chan struct{})}
	q, ok := g.queues[key]
	if !ok {
		q = &queue{}
		g.queues[key] = q
		g.ring = append(g.ring, key)
	}
	q.waiters = append(q.waiters, w)
	g.waiting++
	return w
}

// cancel takes waiter w of key out of the queue. It reports whether w was
// granted a slot before that, which the caller then holds.
func (g *gate) cancel(key string, w *waiter) (granted bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		return true
	}
	g.remove(key, w)
	return false
}

// remove takes a waiter that gave up out of key's queue. g.mu is held.
func (g *gate) remove(key string, w *waiter) {
	q := g.queues[key]
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			g.waiting--
			break
		}
	}
	if len(q.waiters) == 0 {
		g.dropKey(key)
	}
}

// dropKey forgets key, whose queue is empty. g.mu is held.
func (g *gate) dropKey(key string) {
	delete(g.queues, key)
	for i, k := range g.ring {
		if k == key {
			g.ring = append(g.ring[:i], g.ring[i+1:]...)
			return
		}
	}
}

// release frees key's slot. It goes to the first waiter of the waiting key
// that holds the fewest slots, the earliest in turn among equals; that key
// moves to the end of the turn order.
func (g *gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held[key]--; g.held[key] <= 0 {
		delete(g.held, key)
	}
	if len(g.ring) == 0 {
		g.free++
		return
	}
	pick := 0
	for i, k := range g.ring {
		if g.held[k] < g.held[g.ring[pick]] {
			pick = i
		}
	}
	next := g.ring[pick]
	q := g.queues[next]
	w := q.waiters[0]
	q.waiters = q.waiters[1:]
	g.waiting--
	g.ring = append(g.ring[:pick], g.ring[pick+1:]...)
	if len(q.waiters) == 0 {
		delete(g.queues, next)
	} else {
		g.ring = append(g.ring, next)
	}
	g.held[next]++
	w.granted = true
	close(w.ch)
}
