package schema

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/singleflight"
)

// Beginner starts transactions; *pgxpool.Pool and *pgx.Conn satisfy it.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// LockKey returns the advisory lock key pgtenant uses for name. Keys live in
// their own namespace (the hash covers a "pgtenant:" prefix).
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

// InTx runs fn in a transaction that first takes the transaction-level
// advisory lock for key, so that sessions doing the same work run one after
// the other across processes. If fn fails because an object was created
// concurrently by a session that did not take the lock (see IsAlreadyExists),
// the transaction is rolled back and run again, up to three times.
func InTx(ctx context.Context, db Beginner, key string, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey(key)); err != nil {
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

// ExecAll runs statements in order in one round trip and returns the first
// error.
func ExecAll(ctx context.Context, tx pgx.Tx, stmts ...string) error {
	b := &pgx.Batch{}
	for _, s := range stmts {
		b.Queue(s)
	}
	return tx.SendBatch(ctx, b).Close()
}

// DDLTimeout bounds a creation that callers share (see Once). It runs
// detached from any one caller's cancellation, so that a caller giving up does
// not fail the others waiting for the same work.
const DDLTimeout = 30 * time.Second

// Once runs work at most once at a time per key within a process: callers
// arriving while it runs wait for its result instead of repeating it. Each
// caller stops waiting when its own context ends. The work itself runs with
// a context detached from the callers' cancellation and bounded by
// DDLTimeout. The zero value is ready to use.
type Once struct {
	g singleflight.Group
}

// Do runs fn for key, or joins the run already in progress.
func (o *Once) Do(ctx context.Context, key string, fn func(ctx context.Context) error) error {
	ch := o.g.DoChan(key, func() (any, error) {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DDLTimeout)
		defer cancel()
		return nil, fn(wctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return fmt.Errorf("pgtenant: waiting for %s: %w", key, context.Cause(ctx))
	}
}

// TableExists reports whether table t exists.
func TableExists(ctx context.Context, q Querier, t Table) (bool, error) {
	var exists bool
	err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", t.Sanitize()).Scan(&exists)
	return exists, err
}

// EnsureTable creates the message table t (see CreateTableSQL), its chunk
// table and its schema, unless they exist; an existing table without the
// chunk table (one made by RetrySpool's original backend) gets the
// chunked_version column and the chunk table. Concurrent callers in any
// number of processes are serialised by an advisory lock keyed by t.
func EnsureTable(ctx context.Context, db Beginner, q Querier, t Table, shared bool) error {
	if ok, err := TableExists(ctx, q, ChunkTable(t)); err != nil || ok {
		return err
	}
	return InTx(ctx, db, "table:"+t.String(), func(tx pgx.Tx) error {
		return ExecAll(ctx, tx, append([]string{CreateSchemaSQL(t.Schema)}, CreateTableSQL(t, shared)...)...)
	})
}
