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
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

var modes = []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant, schema.SharedTable}

// routerBundle is a database, an inspection pool on it, and a Factory for
// one isolation mode whose own pool connects with search_path ”.
type routerBundle struct {
	dsn     string
	pool    *pgxpool.Pool
	factory *tenant.Factory
}

func setupRouter(t *testing.T, mode schema.Isolation) *routerBundle {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	return &routerBundle{
		dsn:     dsn,
		pool:    pgtest.NewPool(t, dsn, nil),
		factory: tenant.NewFactory(dsn).WithIsolation(mode).WithConnectionLimits(8, 0),
	}
}

func (rb *routerBundle) router(t *testing.T) *host {
	t.Helper()
	r := newHost(t, rb.factory)
	return r
}

func (rb *routerBundle) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := rb.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func forEachMode(t *testing.T, run func(t *testing.T, mode schema.Isolation)) {
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			run(t, mode)
		})
	}
}

func TestRouterConformance(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		var n atomic.Int64
		conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
			r, err := rb.factory.Create()
			if err != nil {
				t.Fatal(err)
			}
			return r, tenant.WithTenant(context.Background(), fmt.Sprintf("tenant-%d", n.Add(1)))
		})
	})
}

func TestRouterTenantsAreSeparate(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		a := tenant.WithTenant(context.Background(), "alpha")
		b := tenant.WithTenant(context.Background(), "beta")
		conformance.MustStore(t, r, a, "same-id", []byte("alpha's body"))
		conformance.MustNotFind(t, r, b, "same-id")
		if err := r.DeleteData(b, "same-id"); !errors.Is(err, datastorage.ErrDataNotFound) {
			t.Fatalf("beta deleted alpha's message: %v", err)
		}
		conformance.MustStore(t, r, b, "same-id", []byte("beta's body"))
		conformance.MustRead(t, r, a, "same-id", []byte("alpha's body"))
		conformance.MustRead(t, r, b, "same-id", []byte("beta's body"))
		if err := r.DeleteData(b, "same-id"); err != nil {
			t.Fatal(err)
		}
		conformance.MustRead(t, r, a, "same-id", []byte("alpha's body"))

		got, err := r.List(context.Background())
		if err != nil || strings.Join(got, ",") != "alpha,beta" {
			t.Fatalf("List = %v, %v", got, err)
		}
	})
}

func TestRouterNeedsTenant(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	pool := pgtest.NewPool(t, rb.dsn, nil)
	r := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(schema.SchemaPerTenant).WithPool(pool))
	pool.Close() // any SQL would fail with "closed pool" from here on
	ctx := context.Background()
	if _, err := r.StoreData(ctx, "m", strings.NewReader("x")); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("StoreData without tenant = %v", err)
	}
	if _, err := r.GetDataReader(ctx, "m"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("GetDataReader without tenant = %v", err)
	}
	if _, err := r.GetDataWriter(ctx, "m"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("GetDataWriter without tenant = %v", err)
	}
	if err := r.DeleteData(ctx, "m"); !errors.Is(err, tenant.ErrNoTenant) {
		t.Errorf("DeleteData without tenant = %v", err)
	}
	bad := tenant.WithTenant(ctx, "a'; DROP SCHEMA public CASCADE; --")
	if _, err := r.StoreData(bad, "m", strings.NewReader("x")); !errors.Is(err, tenant.ErrInvalidTenant) {
		t.Errorf("StoreData with hostile tenant = %v", err)
	}
}

func TestRouterReadsCreateNothing(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		ctx := context.Background()
		before := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_class")
		for i := range 20 {
			tctx := tenant.WithTenant(ctx, fmt.Sprintf("ghost-%d", i))
			conformance.MustNotFind(t, r, tctx, "m")
			if err := r.DeleteData(tctx, "m"); !errors.Is(err, datastorage.ErrDataNotFound) {
				t.Fatalf("DeleteData on unknown tenant = %v", err)
			}
			// The error speaks of data not found, not of SQL.
			_, err := r.GetDataReader(tctx, "m")
			if msg := err.Error(); strings.Contains(msg, "SQLSTATE") || strings.Contains(msg, "relation") {
				t.Fatalf("read of an unknown tenant: %q", msg)
			}
		}
		if after := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_class"); after != before {
			t.Fatalf("reads created %d relations", after-before)
		}
		if n := rb.count(t, `SELECT count(*) FROM pgtenant.tenants`); n != 0 {
			t.Fatalf("reads registered %d tenants", n)
		}
	})
}

func TestRouterFirstTouchRace(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		hostA := rb.router(t)
		// A second Factory is a second host: its own pool, cache and once.
		hostB := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(8, 0))
		ctx := tenant.WithTenant(context.Background(), "Newcomer-Inc")
		var wg sync.WaitGroup
		errs := make(chan error, 128)
		for i := range 128 {
			r := datastorage.Backend(hostA)
			if i%2 == 1 {
				r = hostB
			}
			wg.Go(func() {
				_, err := r.StoreData(ctx, fmt.Sprintf("m-%d", i), strings.NewReader(fmt.Sprint(i)))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i := range 128 {
			conformance.MustRead(t, hostA, ctx, fmt.Sprintf("m-%d", i), []byte(fmt.Sprint(i)))
		}
		p, _ := hostA.Locate("Newcomer-Inc")
		if n := rb.count(t, "SELECT count(*) FROM pgtenant.tenants WHERE tenant_id = 'Newcomer-Inc' AND state = 'active'"); n != 1 {
			t.Fatalf("registry rows: %d", n)
		}
		if n := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2", p.Table.Schema, p.Table.Name); n != 1 {
			t.Fatalf("tables: %d", n)
		}
	})
}

func TestRouterDropAcrossHosts(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		hostA := rb.router(t)
		hostB := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(4, 0))
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "leaving")
		other := tenant.WithTenant(bg, "staying")
		conformance.MustStore(t, hostA, ctx, "m", []byte("cached on A"))
		conformance.MustStore(t, hostA, other, "m", []byte("other tenant"))

		if err := hostB.Drop(bg, "leaving"); err != nil {
			t.Fatal(err)
		}
		if _, err := hostA.StoreData(ctx, "m2", strings.NewReader("late write")); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("A's write after B's Drop = %v, want ErrTenantDeleted", err)
		}
		w, err := hostA.GetDataWriter(ctx, "m3")
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("A's writer after Drop = %v, want ErrTenantDeleted", err)
		}
		conformance.MustNotFind(t, hostA, ctx, "m")
		conformance.MustNotFind(t, hostA, ctx, "m2")
		conformance.MustRead(t, hostA, other, "m", []byte("other tenant"))
		if got, _ := hostA.List(bg); strings.Join(got, ",") != "staying" {
			t.Fatalf("List after Drop = %v", got)
		}

		if err := hostB.Provision(bg, "leaving"); err != nil {
			t.Fatal(err)
		}
		conformance.MustNotFind(t, hostA, ctx, "m") // back, empty
		conformance.MustStore(t, hostA, ctx, "m", []byte("welcome back"))
		conformance.MustRead(t, hostB, ctx, "m", []byte("welcome back"))
	})
}

func TestRouterHealsDroppedTable(t *testing.T) {
	t.Parallel()
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			rb := setupRouter(t, mode)
			r := rb.router(t)
			ctx := tenant.WithTenant(context.Background(), "fragile")
			conformance.MustStore(t, r, ctx, "m", []byte("v1"))
			p, _ := r.Locate("fragile")
			if _, err := rb.pool.Exec(context.Background(), "DROP TABLE "+p.Table.Sanitize()); err != nil {
				t.Fatal(err)
			}
			_, err := r.GetDataReader(ctx, "m")
			if !errors.Is(err, datastorage.ErrDataNotFound) || strings.Contains(err.Error(), "SQLSTATE") {
				t.Fatalf("read from a vanished table: %v, want ErrDataNotFound without SQL", err)
			}
			conformance.MustStore(t, r, ctx, "m", []byte("v2")) // re-created: the registry says active
			conformance.MustRead(t, r, ctx, "m", []byte("v2"))
			if _, err := rb.pool.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{p.Table.Schema}.Sanitize()+" CASCADE"); err != nil {
				t.Fatal(err)
			}
			if mode == schema.TablePerTenant {
				return // the shared schema is gone; nothing more to heal here
			}
			conformance.MustStore(t, r, ctx, "m", []byte("v3"))
			conformance.MustRead(t, r, ctx, "m", []byte("v3"))
		})
	}
}

func TestRouterHostileTenantIDs(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		rejected := []string{
			"'; DROP TABLE pgtenant.tenants; --", `a"b`, "a\x00b", "ümlaut", "日本語", "a b", "../etc",
			strings.Repeat("x", 200), "", "pg_catalog", "-x", "$1",
		}
		for _, id := range rejected {
			_, err := r.StoreData(tenant.WithTenant(bg, id), "m", strings.NewReader("x"))
			if id == "" {
				if !errors.Is(err, tenant.ErrNoTenant) {
					t.Errorf("empty tenant: %v", err)
				}
				continue
			}
			if id == "pg_catalog" {
				if err != nil { // a fine tenant id: it maps to "h_pg_catalog_..."
					t.Errorf("tenant pg_catalog: %v", err)
				}
				continue
			}
			if !errors.Is(err, tenant.ErrInvalidTenant) {
				t.Errorf("tenant %q: %v, want ErrInvalidTenant", id, err)
			}
		}
		prefix := strings.Repeat("p", 63)
		apart := []string{"acme", "Acme", "ACME", "acme-corp", "acme_corp", "acme.corp", "t_acme", "public",
			"information_schema", "pgtenant", prefix + "1", prefix + "2", prefix, strings.Repeat("q", 128)}
		for i, id := range apart {
			conformance.MustStore(t, r, tenant.WithTenant(bg, id), "same", []byte(fmt.Sprint(i)))
		}
		for i, id := range apart {
			conformance.MustRead(t, r, tenant.WithTenant(bg, id), "same", []byte(fmt.Sprint(i)))
		}
		if n := rb.count(t, "SELECT count(*) FROM pgtenant.tenants WHERE state = 'active'"); n != len(apart)+1 {
			t.Fatalf("registry holds %d tenants, want %d", n, len(apart)+1)
		}
	})
}

func TestRouterSearchPathUntouched(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		cfg, err := pgxpool.ParseConfig(strings.Replace(rb.dsn, "search_path=", "x_ignored=", 1))
		if err != nil {
			t.Fatal(err)
		}
		delete(cfg.ConnConfig.RuntimeParams, "x_ignored")
		cfg.MaxConns = 1
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		var def string
		if err := pool.QueryRow(context.Background(), "SHOW search_path").Scan(&def); err != nil {
			t.Fatal(err)
		}
		r := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithPool(pool))
		bg := context.Background()
		for i := range 30 {
			for _, id := range []string{"one", "two", "three"} {
				ctx := tenant.WithTenant(bg, id)
				conformance.MustStore(t, r, ctx, "m", []byte(id+fmt.Sprint(i)))
				conformance.MustRead(t, r, ctx, "m", []byte(id+fmt.Sprint(i)))
			}
		}
		for _, id := range []string{"one", "two", "three"} {
			conformance.MustRead(t, r, tenant.WithTenant(bg, id), "m", []byte(id+"29"))
		}
		var now string
		if err := pool.QueryRow(bg, "SHOW search_path").Scan(&now); err != nil {
			t.Fatal(err)
		}
		if now != def || def != `"$user", public` {
			t.Fatalf("search_path %q -> %q", def, now)
		}
	})
}

// serverConns counts the server connections to the bundle's database
// other than the inspection pool's own.
func (rb *routerBundle) serverConns(t *testing.T) int {
	t.Helper()
	return rb.count(t, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
}

func TestRouterSharesOnePool(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	// One idle connection per pool is kept open: each pool shows as one
	// server connection.
	f := rb.factory.WithConnectionLimits(4, 1)
	r1, err := openHost(f)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := openHost(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tenant.WithTenant(context.Background(), "x")
	conformance.MustStore(t, r1, ctx, "m", []byte("v"))
	conformance.MustRead(t, r2, ctx, "m", []byte("v"))
	one := rb.serverConns(t)
	if s1, s2 := r1.PoolStats(), r2.PoolStats(); s1.MaxConns != 4 || s1 != s2 {
		t.Fatalf("two Routers of one Factory see different pools: %+v, %+v", s1, s2)
	}
	other := newHost(t, f.WithCacheSize(10))
	conformance.MustRead(t, other, ctx, "m", []byte("v"))
	if got := rb.serverConns(t); got <= one {
		t.Fatalf("a WithX copy opened no pool of its own: %d server connections, %d before", got, one)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	conformance.MustStore(t, r2, ctx, "m", []byte("still open"))
	if _, err := r1.StoreData(ctx, "m", strings.NewReader("x")); !errors.Is(err, tenant.ErrClosed) {
		t.Fatalf("closed Router: %v", err)
	}
	before := rb.serverConns(t)
	_ = r2.Close()
	waitFor(t, "the pool's connections to close after the last Router closed", func() bool { return rb.serverConns(t) < before })
	if st := r2.PoolStats(); st.TotalConns != 0 {
		t.Fatalf("closed pool reports %+v", st)
	}
	r4, err := openHost(f) // reopens
	if err != nil {
		t.Fatal(err)
	}
	defer r4.Close()
	conformance.MustRead(t, r4, ctx, "m", []byte("still open"))
}

func TestRouterResolver(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	// Message ids of the form "<tenant>/<id>".
	res := tenant.ResolverFunc(func(_ context.Context, messageID string) (string, error) {
		id, _, ok := strings.Cut(messageID, "/")
		if !ok {
			return "", tenant.ErrNoTenant
		}
		return id, nil
	})
	r := newHost(t, rb.factory.WithResolver(res))
	bg := context.Background()
	conformance.MustStore(t, r, bg, "acme/1", []byte("a"))
	if n := rb.count(t, "SELECT count(*) FROM public.retryspool_data WHERE tenant_id = 'acme'"); n != 1 {
		t.Fatalf("rows for acme: %d", n)
	}
	if _, err := r.StoreData(bg, "no-tenant", strings.NewReader("x")); !errors.Is(err, tenant.ErrNoTenant) {
		t.Fatalf("%v", err)
	}
}

func TestRouterRefusesTextMode(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	if _, err := openHost(rb.factory.WithExecMode(pgx.QueryExecModeExec)); !errors.Is(err, backend.ErrTextMode) {
		t.Fatalf("%v", err)
	}
}
