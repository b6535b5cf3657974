package tenant

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

// waitQueued spins until n calls wait for a place of id: the order in
// which waiters queued is then known.
func waitQueued(l *limiter, id string, n int) {
	for l.waiting(id) < n {
		runtime.Gosched()
	}
}

func TestLimiterServesWaitersInArrivalOrder(t *testing.T) {
	l := newLimiter(1)
	bg := context.Background()
	hold, err := l.acquire(bg, "a")
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	releases := make(chan func(), 3)
	for i := range 3 {
		go func() {
			release, err := l.acquire(bg, "a")
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			releases <- release
		}()
		waitQueued(l, "a", i+1)
	}
	// Another tenant has places of its own.
	other, err := l.acquire(bg, "b")
	if err != nil {
		t.Fatalf("tenant b waits behind tenant a: %v", err)
	}
	other()
	hold()
	hold() // a second release gives nothing back twice
	for want := range 3 {
		if got := <-order; got != want {
			t.Fatalf("waiter %d got the place, want waiter %d", got, want)
		}
		if l.waiting("a") != 2-want {
			t.Fatalf("%d still waiting after waiter %d", l.waiting("a"), want)
		}
		(<-releases)()
	}
	if len(l.slots) != 0 {
		t.Fatalf("slots left after every place came back: %v", l.slots)
	}
}

func TestLimiterWaitHonoursContext(t *testing.T) {
	l := newLimiter(1)
	bg := context.Background()
	hold, _ := l.acquire(bg, "a")
	ctx, cancel := context.WithCancelCause(bg)
	gaveUp := errors.New("caller gave up")
	done := make(chan error)
	go func() {
		_, err := l.acquire(ctx, "a")
		done <- err
	}()
	waitQueued(l, "a", 1)
	// The next waiter queues behind the one that gives up, and gets the
	// place when it comes back: nothing is lost with the cancelled one.
	next := make(chan error)
	go func() {
		release, err := l.acquire(bg, "a")
		if err == nil {
			release()
		}
		next <- err
	}()
	waitQueued(l, "a", 2)
	cancel(gaveUp)
	if err := <-done; !errors.Is(err, gaveUp) {
		t.Fatalf("cancelled wait = %v, want the context's cause", err)
	}
	hold()
	if err := <-next; err != nil {
		t.Fatal(err)
	}
	if len(l.slots) != 0 {
		t.Fatalf("slots left: %v", l.slots)
	}
}

func TestNilLimiterDoesNotLimit(t *testing.T) {
	l := newLimiter(0)
	for range 100 {
		if _, err := l.acquire(context.Background(), "a"); err != nil {
			t.Fatal(err)
		}
	}
}
