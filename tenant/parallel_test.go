package tenant

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestForEachTenantRunsAllWithBoundedConcurrency(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e", "f", "g"}
	var (
		mu        sync.Mutex
		inFlight  int
		maxFlight int
		results   []string
	)
	boom := errors.New("boom")
	forEachTenant(context.Background(), ids, 3, func(id string) error {
		mu.Lock()
		inFlight++
		maxFlight = max(maxFlight, inFlight)
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		if id == "c" {
			return boom
		}
		return nil
	}, func(id string, err error) {
		// done runs one call at a time: no lock needed by the caller.
		if (id == "c") != errors.Is(err, boom) {
			t.Errorf("%s: %v", id, err)
		}
		results = append(results, id)
	})
	slices.Sort(results)
	if !slices.Equal(results, ids) || maxFlight > 3 {
		t.Fatalf("done for %v, at most %d at once", results, maxFlight)
	}
}

func TestForEachTenantStopsStartingOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan string, 10)
	release := make(chan struct{})
	var (
		mu       sync.Mutex
		finished []string
	)
	go func() {
		// Cancel while the first two are in flight.
		<-started
		<-started
		cancel()
		close(release)
	}()
	ids := []string{"a", "b", "c", "d", "e", "f"}
	forEachTenant(ctx, ids, 2, func(id string) error {
		started <- id
		<-release
		return nil
	}, func(id string, _ error) {
		mu.Lock()
		finished = append(finished, id)
		mu.Unlock()
	})
	// The two in flight finished; at most one more was handed out before
	// the cancellation was seen (a worker may have been ready for it).
	if len(finished) < 2 || len(finished) > 3 {
		t.Fatalf("finished %v after cancel, want the 2 in flight (and at most one more)", finished)
	}
}
