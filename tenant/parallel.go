package tenant

import (
	"context"
	"sync"
)

// forEachTenant calls fn for each id from at most concurrency goroutines
// (default 4). When ctx ends no new id starts; the calls in flight finish.
// fn's calls are not serialised; done, if not nil, is called after each
// with fn's error, one call at a time.
func forEachTenant(ctx context.Context, ids []string, concurrency int, fn func(id string) error, done func(id string, err error)) {
	if concurrency <= 0 {
		concurrency = 4
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan string)
	)
	for range min(concurrency, max(len(ids), 1)) {
		wg.Go(func() {
			for id := range next {
				err := fn(id)
				if done != nil {
					mu.Lock()
					done(id, err)
					mu.Unlock()
				}
			}
		})
	}
feed:
	for _, id := range ids {
		if ctx.Err() != nil {
			break // cancellation wins over a worker that is ready
		}
		select {
		case next <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}
