package integration

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
)

// brokenDB is a pg.DB over a real pool that runs the first `broken`
// statements on a pooled connection broken by breakConn first, and the
// rest on the pool. It counts the statements it was asked to run.
type brokenDB struct {
	t        *testing.T
	pool     *pgxpool.Pool
	breakTo  func(t *testing.T, c *pgxpool.Conn)
	broken   atomic.Int32
	runs     atomic.Int32
	released atomic.Int32
}

func (d *brokenDB) db(ctx context.Context) (pg.DB, func()) {
	d.runs.Add(1)
	if d.broken.Add(-1) < 0 {
		return d.pool, func() {}
	}
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		d.t.Fatal(err)
	}
	d.breakTo(d.t, c)
	return c, func() { c.Release(); d.released.Add(1) }
}

func (d *brokenDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	db, done := d.db(ctx)
	defer done()
	return db.Exec(ctx, sql, args...)
}

func (d *brokenDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	db, done := d.db(ctx)
	return doneRow{db.QueryRow(ctx, sql, args...), done}
}

func (d *brokenDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return d.pool.Query(ctx, sql, args...)
}

func (d *brokenDB) Begin(ctx context.Context) (pgx.Tx, error) { return d.pool.Begin(ctx) }

func (d *brokenDB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	db, done := d.db(ctx)
	return doneBatch{db.SendBatch(ctx, b), done}
}

// doneBatch releases the broken connection when the batch is closed.
type doneBatch struct {
	pgx.BatchResults
	done func()
}

func (b doneBatch) Close() error {
	defer b.done()
	return b.BatchResults.Close()
}

type doneRow struct {
	pgx.Row
	done func()
}

func (r doneRow) Scan(dest ...any) error {
	defer r.done()
	return r.Row.Scan(dest...)
}

// closedLocally closes the connection on the client side: pgx then refuses
// to send anything on it, and says so (pgconn.SafeToRetry).
func closedLocally(t *testing.T, c *pgxpool.Conn) {
	t.Helper()
	if err := c.Conn().PgConn().Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// terminatedByServer has the server end the connection's backend, and
// waits until it is gone: the next statement is sent into a dead
// connection, and its fate is unknown to the client.
func terminatedByServer(admin *pgxpool.Pool) func(t *testing.T, c *pgxpool.Conn) {
	return func(t *testing.T, c *pgxpool.Conn) {
		t.Helper()
		pid := c.Conn().PgConn().PID()
		var ok bool
		if err := admin.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
			t.Fatalf("terminating backend %d: %v %v", pid, ok, err)
		}
		waitFor(t, "the backend to exit", func() bool {
			var n int
			if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		})
	}
}

// TestRetryPolicy checks the documented retry policy (README, "Retries")
// statement by statement against real connections broken in two ways.
func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	admin := pgtest.NewPool(t, bb.dsn, nil)
	b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("retry"))
	table, err := schema.ParseTable("retry", "public")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store := func(t *testing.T, broken int, breakTo func(*testing.T, *pgxpool.Conn)) (*engine.Store, *brokenDB) {
		db := &brokenDB{t: t, pool: bb.pool, breakTo: breakTo}
		db.broken.Store(int32(broken))
		s, err := engine.NewStore(db, engine.Target{Table: table}, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s, db
	}
	killed := terminatedByServer(admin)

	t.Run("never sent: a write is repeated", func(t *testing.T) {
		s, db := store(t, 1, closedLocally)
		if err := s.Put(ctx, "unsent", []byte("v1")); err != nil {
			t.Fatalf("Put = %v, want it repeated on another connection", err)
		}
		if got := db.runs.Load(); got != 2 {
			t.Fatalf("%d runs, want 2", got)
		}
		conformance.MustRead(t, b, ctx, "unsent", []byte("v1"))
	})
	t.Run("never sent: at most 3 runs", func(t *testing.T) {
		s, db := store(t, 2, closedLocally)
		if err := s.Put(ctx, "third", []byte("v1")); err != nil {
			t.Fatalf("Put after two unsent runs = %v, want the third run to store it", err)
		}
		if got := db.runs.Load(); got != 3 {
			t.Fatalf("%d runs, want 3", got)
		}
		s, db = store(t, 3, closedLocally)
		if err := s.Put(ctx, "never", []byte("v1")); err == nil {
			t.Fatal("Put after three unsent runs succeeded")
		}
		if got := db.runs.Load(); got != 3 {
			t.Fatalf("%d runs, want the limit of 3", got)
		}
		conformance.MustNotFind(t, b, ctx, "never")
	})
	t.Run("sent and lost: a write is not repeated", func(t *testing.T) {
		s, db := store(t, 1, killed)
		err := s.Put(ctx, "lost", []byte("v1"))
		if !errors.Is(err, backend.ErrConnection) {
			t.Fatalf("Put = %v, want ErrConnection", err)
		}
		if got := db.runs.Load(); got != 1 {
			t.Fatalf("%d runs, want 1: a write whose outcome is unknown was repeated", got)
		}
		// The backend was gone before the statement was sent, so here the
		// unknown outcome is "not stored".
		conformance.MustNotFind(t, b, ctx, "lost")
	})
	t.Run("sent and lost: a delete is not repeated", func(t *testing.T) {
		conformance.MustStore(t, b, ctx, "kept", []byte("v1"))
		s, db := store(t, 1, killed)
		if err := s.Delete(ctx, "kept"); !errors.Is(err, backend.ErrConnection) {
			t.Fatalf("Delete = %v, want ErrConnection", err)
		}
		if got := db.runs.Load(); got != 1 {
			t.Fatalf("%d runs, want 1", got)
		}
		conformance.MustRead(t, b, ctx, "kept", []byte("v1"))
	})
	t.Run("lost: a read is repeated once", func(t *testing.T) {
		conformance.MustStore(t, b, ctx, "read", []byte("v1"))
		s, db := store(t, 1, killed)
		got, err := s.Get(ctx, "read")
		if err != nil || string(got) != "v1" {
			t.Fatalf("Get = %q, %v; want v1 after one repeat", got, err)
		}
		if n := db.runs.Load(); n != 2 {
			t.Fatalf("%d runs, want 2", n)
		}
		s, db = store(t, 2, killed)
		if _, err := s.Get(ctx, "read"); !errors.Is(err, backend.ErrConnection) {
			t.Fatalf("Get after two lost connections = %v, want ErrConnection", err)
		}
		if n := db.runs.Load(); n != 2 {
			t.Fatalf("%d runs, want 2: a read is repeated once", n)
		}
	})
	t.Run("nothing is repeated after the context ended", func(t *testing.T) {
		s, db := store(t, 1, closedLocally)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, "late", []byte("v1")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put = %v, want context.Canceled", err)
		}
		if n := db.runs.Load(); n > 1 {
			t.Fatalf("%d runs after the context ended", n)
		}
	})
}
