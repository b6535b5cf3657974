package engine

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/internal/pg"
)

// maxAttempts bounds the runs of one operation under the retry policy.
const maxAttempts = 3

// effect says whether an operation changes data, which decides what the
// retry policy may repeat.
type effect bool

const (
	reads  effect = false
	writes effect = true
)

// retry runs op under pgtenant's retry policy (README, "Retries"):
//
//   - a request pgx reports as never sent (pgconn.SafeToRetry) is run
//     again, whatever it does, after a short pause;
//   - a stale cached plan (pg.ErrStalePlan) is run again once: pgx has
//     dropped the statement, so the next run prepares it anew;
//   - a read that lost its connection (pg.ErrConnection) is run again once:
//     it has no effect to repeat;
//   - a write or delete that reached the server is never run again: its
//     outcome is unknown and the caller gets pg.ErrConnection, which says
//     so.
//
// op must be one autocommit statement or a transaction it rolls back on
// failure, so a repeat cannot double a partial effect. It runs at most
// maxAttempts times and never after ctx has ended.
func retry(ctx context.Context, e effect, op func() error) error {
	stale, lost := false, false
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil || attempt == maxAttempts || ctx.Err() != nil {
			return err
		}
		switch {
		case pgconn.SafeToRetry(err):
		case errors.Is(err, pg.ErrStalePlan) && !stale:
			stale = true
			continue // no pause: the next run succeeds at once
		case e == reads && errors.Is(err, pg.ErrConnection) && !lost:
			lost = true
		default:
			return err
		}
		t := time.NewTimer(time.Duration(attempt*attempt) * 10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
