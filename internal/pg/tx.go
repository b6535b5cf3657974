package pg

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// LockKey returns the advisory lock key for name. Keys live in their own
// namespace (the hash covers a "pgtenant:" prefix).
func LockKey(name string) int64 {
	sum := sha256.Sum256([]byte("pgtenant:" + name))
	return int64(binary.BigEndian.Uint64(sum[:8]))
}

// IsAlreadyExists reports whether err is what a CREATE ... IF NOT EXISTS
// raises when another session created the object at the same moment:
// 42P06 (duplicate schema), 42P07 (duplicate table) or 23505 (unique
// violation in the catalog).
func IsAlreadyExists(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "42P06", "42P07", "23505":
		return true
	}
	return false
}

// The statements of this package: an advisory lock for a transaction
// ($1: the key) and a lock timeout for one ($1: the timeout).
const (
	LockSQL        = "SELECT pg_catalog.pg_advisory_xact_lock($1::pg_catalog.int8)"
	LockTimeoutSQL = "SELECT pg_catalog.set_config('lock_timeout', $1::pg_catalog.text, true)"
)

// Lock takes the transaction-level advisory lock for key in tx.
func Lock(ctx context.Context, tx pgx.Tx, key string) error {
	_, err := tx.Exec(ctx, LockSQL, LockKey(key))
	return err
}

// SetLockTimeout bounds tx's waits for locks to d (set_config local to the
// transaction, so nothing outlives it on a pooled connection).
func SetLockTimeout(ctx context.Context, tx pgx.Tx, d time.Duration) error {
	_, err := tx.Exec(ctx, LockTimeoutSQL, fmt.Sprintf("%dms", max(d.Milliseconds(), 1)))
	return err
}

// InTx runs fn in a transaction that first takes the advisory lock for key,
// so that sessions doing the same work run one after the other across
// processes. If fn fails because an object was created concurrently by a
// session that did not take the lock (see IsAlreadyExists), the transaction
// is rolled back and run again, up to three times.
func InTx(ctx context.Context, db DB, key string, fn func(pgx.Tx) error) error {
	var err error
	for range 3 {
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if err := Lock(ctx, tx, key); err != nil {
				return err
			}
			return fn(tx)
		})
		if !IsAlreadyExists(err) {
			return err
		}
	}
	return err
}

// ExecAll runs statements, which take no parameters (DDL), in order in
// one round trip and returns the first error. They go as one simple-protocol
// query, which the server parses statement by statement as it runs them:
// a statement may use what an earlier one created, and nothing is
// prepared (which a transaction pooler would mix up).
func ExecAll(ctx context.Context, db DB, stmts ...string) error {
	if len(stmts) == 0 {
		return nil
	}
	_, err := db.Exec(ctx, strings.Join(stmts, ";\n"))
	return err
}

// Retry runs fn up to attempts times while it fails with a transient error
// (see IsTransient), waiting 50 ms, then twice as long each time (at most
// 2 s), between attempts. retried, if not nil, is called before each new
// attempt with the error that caused it. It returns fn's last error, or
// ctx's error if ctx ends while waiting.
func Retry(ctx context.Context, attempts int, retried func(error), fn func() error) error {
	wait := 50 * time.Millisecond
	for i := 1; ; i++ {
		err := fn()
		if i >= attempts || !IsTransient(err) {
			return err
		}
		if retried != nil {
			retried(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (after %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}
