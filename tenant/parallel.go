package tenant

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
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
		select {
		case next <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}

// setLockTimeout bounds the transaction's waits for locks (SET LOCAL, so
// nothing outlives the transaction on the pooled connection).
func (c *core) setLockTimeout(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", fmt.Sprintf("%dms", c.lockTimeout.Milliseconds()))
	return err
}
