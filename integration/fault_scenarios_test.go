package integration

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// TestFaultKillConnections terminates every connection of the load's
// database (pg_terminate_backend) every 100-200 ms for 3 s under the mixed
// load, in all isolation modes at once. No acknowledged write is lost, no
// failed one is half-applied, every failure is ErrConnection, and the same
// Routers serve again within a bound once the kills stop.
func TestFaultKillConnections(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	pool := pgtest.NewPool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = 12 })
	killer := pgtest.NewPool(t, dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	mux := newModeMux(t, pool, 2)
	load := startLoad(t, mux, mux.tenants)
	load.waitOK(t, 100, time.Minute)

	ctx := context.Background()
	killed, rounds := 0, 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); rounds++ {
		var n int
		if err := killer.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
			FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		killed += n
		time.Sleep(time.Duration(100+rand.IntN(100)) * time.Millisecond) // the fault's period
	}
	took := recoverWithin(t, mux, mux.tenants, recoveryBound)
	load.waitOK(t, 100, time.Minute)
	load.check(t, mux)
	if killed == 0 {
		t.Fatal("no connection was terminated; the fault did not happen")
	}
	t.Logf("%d connections terminated in %d rounds; recovered %v after the last", killed, rounds, took)
}

// TestFaultServerRestart stops (fast shutdown) and starts a dedicated
// server in the middle of the mixed load. Its data survives, the ledger
// holds, and the Routers (not recreated) serve again within a bound.
func TestFaultServerRestart(t *testing.T) {
	t.Parallel()
	restartUnderLoad(t, pgtest.FastShutdown)
}

// TestFaultServerCrash kills a dedicated server (SIGKILL) in the middle of
// the mixed load and starts it again: crash recovery replays the WAL, and
// every acknowledged write is there.
func TestFaultServerCrash(t *testing.T) {
	t.Parallel()
	restartUnderLoad(t, pgtest.Crash)
}

// recoveryBound is how soon after a fault every tenant must be served
// again; measured recoveries are under 4 s even with the whole suite
// running beside them on 2 cores.
const recoveryBound = 30 * time.Second

func restartUnderLoad(t *testing.T, stopSignal string) {
	srv := pgtest.NewServer(t, stopSignal)
	pool := pgtest.NewPool(t, srv.DSN(), func(c *pgxpool.Config) { c.MaxConns = 12 })
	mux := newModeMux(t, pool, 2)
	load := startLoad(t, mux, mux.tenants)
	load.waitOK(t, 100, time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	down := time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	failedBefore := load.fail.Load()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	downFor := time.Since(down)
	took := recoverWithin(t, mux, mux.tenants, recoveryBound)
	load.waitOK(t, 100, time.Minute)
	load.check(t, mux)
	if failedBefore == 0 && load.fail.Load() == 0 {
		t.Fatal("no operation failed; the server's stop did not hit the load")
	}
	t.Logf("server down (%s) and up again in %v; recovered %v after it accepted connections", stopSignal, downFor, took)
}

// TestFaultSlowServer holds an ACCESS EXCLUSIVE lock on the tenant's table
// from another session while callers with 300 ms deadlines write, stream,
// read and delete through a pool of 4. Every call returns
// context.DeadlineExceeded in time, every connection goes back to the pool,
// and once the lock is gone each message holds a complete version.
func TestFaultSlowServer(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(4, 0))
		ctx := tenant.WithTenant(context.Background(), "slow")
		if _, err := r.StoreData(ctx, "big", bodyReader(1, 3<<20)); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, r, ctx, "small", []byte("small v1"))
		conformance.MustStore(t, r, ctx, "gone", []byte("to be deleted"))
		pl, err := r.Locate("slow")
		if err != nil {
			t.Fatal(err)
		}

		lock, err := rb.pool.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Rollback(context.Background())
		if _, err := lock.Exec(context.Background(), "LOCK TABLE "+pl.Table.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}

		const deadline = 300 * time.Millisecond
		ops := map[string]func(context.Context) error{
			"store small": func(ctx context.Context) error {
				_, err := r.StoreData(ctx, "small", strings.NewReader("small v2"))
				return err
			},
			"store small again": func(ctx context.Context) error {
				_, err := r.StoreData(ctx, "small", strings.NewReader("small v3"))
				return err
			},
			"stream big": func(ctx context.Context) error {
				w, err := r.GetDataWriter(ctx, "big")
				if err != nil {
					return err
				}
				if _, err := io.Copy(w, bodyReader(2, 3<<20)); err != nil {
					_ = w.Close()
					return err
				}
				return w.Close()
			},
			"read small": func(ctx context.Context) error {
				_, err := conformance.Read(t, r, ctx, "small")
				return err
			},
			"read big": func(ctx context.Context) error {
				_, err := readState(ctx, r, "big")
				return err
			},
			"delete":         func(ctx context.Context) error { return r.DeleteData(ctx, "gone") },
			"delete missing": func(ctx context.Context) error { return r.DeleteData(ctx, "never-was") },
			"stats": func(ctx context.Context) error {
				_, err := r.Stats(ctx, "slow")
				return err
			},
		}
		var wg sync.WaitGroup
		for name, op := range ops {
			wg.Go(func() {
				octx, cancel := context.WithTimeout(ctx, deadline)
				defer cancel()
				start := time.Now()
				err := op(octx)
				took := time.Since(start)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s: got %v, want context.DeadlineExceeded", name, err)
				}
				if took > deadline+2*time.Second {
					t.Errorf("%s: returned after %v, deadline %v", name, took, deadline)
				}
			})
		}
		wg.Wait()
		waitFor(t, "connections back in the pool", func() bool { return r.PoolStats().AcquiredConns == 0 })
		if err := lock.Rollback(context.Background()); err != nil {
			t.Fatal(err)
		}
		db := rb.pool.Config().ConnConfig.Database
		waitFor(t, "cancelled statements to end", func() bool {
			return rb.count(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()", db) == 0
		})

		// A cancelled autocommit statement may still have run to the end
		// (a cancel request can arrive too late); what a message holds is
		// always one complete version.
		got, err := conformance.Read(t, r, ctx, "small")
		if err != nil || !slices.Contains([]string{"small v1", "small v2", "small v3"}, string(got)) {
			t.Fatalf("small holds %q (%v)", got, err)
		}
		mustMatch(t, r, ctx, "big", 1, 3<<20) // its writer never committed
		if n := rb.count(t, "SELECT count(DISTINCT version) FROM "+pl.Chunks.Sanitize()); n != 1 {
			t.Fatalf("chunk table holds %d versions, want 1", n)
		}
		if got, err := readState(ctx, r, "gone"); err != nil || (got.present && got.size != int64(len("to be deleted"))) {
			t.Fatalf("gone holds %v (%v), want nothing or its one version", got, err)
		}
		// The pool serves at once.
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		conformance.MustStore(t, r, octx, "after", []byte("after"))
		conformance.MustRead(t, r, octx, "after", []byte("after"))
	})
}

// TestFaultStatementTimeoutKeepsOldVersion has the server cancel a write
// (SQLSTATE 57014, as statement_timeout would) at exactly the statement
// under test: the write is blocked there by a lock another session holds,
// the test checks in pg_stat_activity that the blocked statement is the one
// intended, and cancels it (pg_cancel_backend). Cases: a large write at its
// last statement, after the whole 3 MiB body was sent; a large write at its
// first chunk; an inline write. The caller gets the
// server's error, the old version is intact, and no piece of the new one
// is left.
func TestFaultStatementTimeoutKeepsOldVersion(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "disk")
		if _, err := r.StoreData(ctx, "big", bodyReader(1, 3<<20)); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, r, ctx, "small", []byte("small v1"))
		pl, err := r.Locate("disk")
		if err != nil {
			t.Fatal(err)
		}
		table, chunks := pl.Table.Sanitize(), pl.Chunks.Sanitize()

		block := func(t *testing.T, sql string) {
			t.Helper()
			tx, err := rb.pool.Begin(bg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tx.Rollback(bg) })
			if _, err := tx.Exec(bg, sql); err != nil {
				t.Fatal(err)
			}
		}
		// cancelBlocked runs write, waits until one of its statements waits
		// for a lock, checks that statement starts with want, and cancels it.
		cancelBlocked := func(t *testing.T, want string, write func() error) error {
			t.Helper()
			done := make(chan error, 1)
			go func() { done <- write() }()
			var (
				pid   int
				query string
			)
			waitFor(t, "the write to wait for the lock", func() bool {
				return rb.pool.QueryRow(bg, `SELECT pid, query FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&pid, &query) == nil
			})
			if !strings.HasPrefix(query, want) {
				t.Errorf("the write waits at %q, want the statement starting %q", query, want)
			}
			if _, err := rb.pool.Exec(bg, "SELECT pg_cancel_backend($1)", pid); err != nil {
				t.Fatal(err)
			}
			return <-done
		}
		stream := func(seed uint64) func() error {
			return func() error {
				w, err := r.GetDataWriter(ctx, "big")
				if err != nil {
					return err
				}
				if _, err := io.Copy(w, bodyReader(seed, 3<<20)); err != nil {
					_ = w.Close()
					return err
				}
				return w.Close()
			}
		}
		wantCancelled := func(t *testing.T, err error) {
			t.Helper()
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
				t.Fatalf("got %v, want the server's cancellation (57014)", err)
			}
		}
		intact := func(t *testing.T) {
			t.Helper()
			mustMatch(t, r, ctx, "big", 1, 3<<20)
			conformance.MustRead(t, r, ctx, "small", []byte("small v1"))
			if n := rb.count(t, "SELECT count(*) FROM "+chunks); n != 3 {
				t.Fatalf("chunk table holds %d pieces, want the old version's 3", n)
			}
		}

		t.Run("at the last statement", func(t *testing.T) {
			block(t, "SELECT 1 FROM "+table+" WHERE message_id = 'big' FOR UPDATE")
			wantCancelled(t, cancelBlocked(t, "INSERT INTO "+table+" (", stream(2)))
			intact(t)
		})
		t.Run("at the first chunk", func(t *testing.T) {
			block(t, "LOCK TABLE "+chunks+" IN SHARE MODE")
			wantCancelled(t, cancelBlocked(t, "INSERT INTO "+chunks, stream(3)))
			intact(t)
		})
		t.Run("inline", func(t *testing.T) {
			block(t, "SELECT 1 FROM "+table+" WHERE message_id = 'small' FOR UPDATE")
			wantCancelled(t, cancelBlocked(t, "INSERT INTO "+table+" AS m (", func() error { // the inline fast path
				_, err := r.StoreData(ctx, "small", strings.NewReader("small v2"))
				return err
			}))
			intact(t)
		})
	})
}

// waitFor polls cond until it holds, failing t after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}
