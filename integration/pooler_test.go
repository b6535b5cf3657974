package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

// bouncedFactory returns a Factory for mode whose pool goes through b, in
// the exec mode documented for PgBouncer's transaction pooling, and the
// database's direct DSN for inspection.
func bouncedFactory(t *testing.T, b *pgtest.Bouncer, mode schema.Isolation) (*tenant.Factory, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	return tenant.NewFactory(b.DSN(t, dsn)).WithIsolation(mode).WithConnectionLimits(8, 0).
		WithExecMode(pgx.QueryExecModeCacheDescribe), dsn
}

// TestPgBouncerConformance runs the conformance suite in every mode through
// PgBouncer in transaction pooling mode with two server connections.
func TestPgBouncerConformance(t *testing.T) {
	t.Parallel()
	b := pgtest.PgBouncer(t, 2)
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		f, _ := bouncedFactory(t, b, mode)
		var n atomic.Int64
		conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
			r, err := f.Create()
			if err != nil {
				t.Fatal(err)
			}
			return r, tenant.WithTenant(context.Background(), fmt.Sprintf("tenant-%d", n.Add(1)))
		})
	})
}

// TestPgBouncerSharedConnectionIsolation multiplexes many tenants, from a
// client pool of 8 connections, onto ONE server connection, writing and
// reading the same message ids concurrently: every read returns its own
// tenant's body. The first subtest is the control: it shows that session
// state set by one client connection is seen by another through this
// PgBouncer, which is why pgtenant keeps no per-tenant session state.
func TestPgBouncerSharedConnectionIsolation(t *testing.T) {
	t.Parallel()
	b := pgtest.PgBouncer(t, 1)

	t.Run("control: session state leaks across clients", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.NewPool(t, b.DSN(t, pgtest.NewDatabase(t)), func(c *pgxpool.Config) {
			c.AfterConnect = nil
			c.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		})
		ctx := context.Background()
		a, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Release()
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
		if _, err := a.Exec(ctx, "SET search_path = tenant_a"); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := c.QueryRow(ctx, "SHOW search_path").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != "tenant_a" {
			t.Fatalf("another client connection sees search_path %q; the pooler does not share server connections as the test assumes", got)
		}
	})

	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		f, dsn := bouncedFactory(t, b, mode)
		r := newHost(t, f)
		const tenants, rounds = 8, 20
		var wg sync.WaitGroup
		errs := make(chan error, tenants*2)
		for i := range tenants {
			for w := range 2 {
				wg.Go(func() {
					name := fmt.Sprintf("tenant-%d", i)
					ctx := tenant.WithTenant(context.Background(), name)
					for k := range rounds {
						id := fmt.Sprintf("shared-%d", k%4) // the same ids in every tenant
						body := fmt.Appendf(nil, "%s writer %d round %d", name, w, k)
						if _, err := r.StoreData(ctx, id, strings.NewReader(string(body))); err != nil {
							errs <- fmt.Errorf("%s: store: %w", name, err)
							return
						}
						got, err := conformance.Read(t, r, ctx, id)
						if err != nil {
							errs <- fmt.Errorf("%s: read: %w", name, err)
							return
						}
						if !strings.HasPrefix(string(got), name+" writer ") {
							errs <- fmt.Errorf("%s read %q: another tenant's body", name, got)
							return
						}
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		if open := r.PoolStats().TotalConns; open < 2 {
			t.Fatalf("client pool opened %d connections; the test needs several sharing one server connection", open)
		}
		inspect := pgtest.NewPool(t, dsn, nil)
		var servers int
		db := inspect.Config().ConnConfig.Database
		if err := inspect.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", db).Scan(&servers); err != nil {
			t.Fatal(err)
		}
		if servers != 1 {
			t.Fatalf("%d server connections served the tenants, want exactly 1", servers)
		}
	})
}

// TestPgBouncerCLI runs the operator commands through PgBouncer with
// --exec-mode describe.
func TestPgBouncerCLI(t *testing.T) {
	t.Parallel()
	b := pgtest.PgBouncer(t, 1)
	dsn := b.DSN(t, pgtest.NewDatabase(t))
	mustCLI(t, "tenants", "provision", "acme", "globex", "--dsn", dsn, "--exec-mode", "describe")
	if out := mustCLI(t, "tenants", "list", "--dsn", dsn, "--exec-mode", "describe"); out != "acme\nglobex\n" {
		t.Fatalf("list: %q", out)
	}
	if out := mustCLI(t, "migrate", "--dsn", dsn, "--exec-mode", "describe"); !strings.Contains(out, "2 already current") {
		t.Fatalf("migrate: %s", out)
	}
	mustCLI(t, "tenants", "drop", "acme", "--dsn", dsn, "--exec-mode", "describe")
	if code, _, stderr := runCLI(t, "tenants", "list", "--dsn", dsn, "--exec-mode", "simple"); code != 2 || !strings.Contains(stderr, "--exec-mode") {
		t.Fatalf("bad --exec-mode: exit %d, %s", code, stderr)
	}
}

// TestPgBouncerDefaultModeSaysWhatToDo runs the default exec mode, which
// prepares named statements, through PgBouncer's transaction pooling:
// concurrent first writes from several client connections on one server
// connection fail, and each failure is ErrPreparedStatements naming the
// exec mode that works. The named statements stay on the server
// connection, so a second Router in the default mode fails too; the
// describe mode then works on the same server connection.
func TestPgBouncerDefaultModeSaysWhatToDo(t *testing.T) {
	t.Parallel()
	b := pgtest.PgBouncer(t, 1)
	dsn := b.DSN(t, pgtest.NewDatabase(t))
	f := tenant.NewFactory(dsn).WithIsolation(tenant.SharedTable).WithConnectionLimits(8, 0)
	saysWhatToDo := func(err error) bool {
		return errors.Is(err, tenant.ErrPreparedStatements) && strings.Contains(err.Error(), "WithExecMode(pgx.QueryExecModeCacheDescribe)") &&
			strings.Contains(err.Error(), "--exec-mode describe")
	}
	failures := func(r *host, round int) (n int) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				ctx := tenant.WithTenant(context.Background(), fmt.Sprintf("tenant-%d", i))
				_, err := r.StoreData(ctx, fmt.Sprintf("m-%d", round), strings.NewReader("body"))
				if err == nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				n++
				if !saysWhatToDo(err) {
					t.Errorf("a failure that does not say what to do: %v", err)
				}
			})
		}
		wg.Wait()
		return n
	}
	// The Router's own set-up statements run on several pool connections
	// too (connection affinity spreads them), so it may fail already.
	r, err := openHost(f)
	switch {
	case err == nil:
		n := 0
		for round := range 5 {
			n += failures(r, round)
		}
		r.Close()
		if n == 0 {
			t.Fatal("the default exec mode worked through PgBouncer's transaction pooling; the test's premise is wrong")
		}
		t.Logf("%d of 40 first writes failed in the default mode", n)
	case saysWhatToDo(err):
		t.Logf("the first Router's set-up failed in the default mode: %v", err)
	default:
		t.Fatalf("first Router: %v, want ErrPreparedStatements saying what to do", err)
	}

	// The first Router's named statements are still on the server
	// connection: the next Router in the default mode trips over them.
	r2, err := openHost(f)
	if err == nil {
		n2 := 0
		for round := range 3 {
			n2 += failures(r2, round)
		}
		r2.Close()
		if n2 == 0 {
			t.Errorf("a second Router in the default mode met none of the first one's statements")
		}
	} else if !saysWhatToDo(err) {
		t.Errorf("second Router: %v, want ErrPreparedStatements saying what to do", err)
	}

	// The describe mode works on the same server connection.
	r3 := newHost(t, f.WithExecMode(pgx.QueryExecModeCacheDescribe))
	if n := failures(r3, 9); n != 0 {
		t.Fatalf("describe mode: %d of 8 writes failed", n)
	}
}
