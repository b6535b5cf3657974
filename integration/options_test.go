package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestRouterLockTimeoutDropAgain holds a lock on a tenant's table from
// another session: Drop gives up after WithLockTimeout (55P03), well before
// the default timeout, and leaves the tenant tombstoned (no writes, not
// listed); once the lock is gone, Drop again finishes.
func TestRouterLockTimeoutDropAgain(t *testing.T) {
	t.Parallel()
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			rb := setupRouter(t, mode)
			r := newHost(t, rb.factory.WithLockTimeout(200*time.Millisecond))
			bg := context.Background()
			ctx := tenant.WithTenant(bg, "locked")
			conformance.MustStore(t, r, ctx, "m", []byte("v1"))
			loc, _ := r.Locate("locked")
			reader, err := rb.pool.Begin(bg)
			if err != nil {
				t.Fatal(err)
			}
			defer reader.Rollback(bg)
			if _, err := reader.Exec(bg, "SELECT count(*) FROM "+loc.Table.Sanitize()); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = r.Drop(bg, "locked")
			took := time.Since(start)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || !strings.Contains(err.Error(), "Drop again") {
				t.Fatalf("Drop under a lock = %v, want lock_not_available (55P03) saying to drop again", err)
			}
			if took >= tenant.DefaultLockTimeout {
				t.Fatalf("Drop waited %v: WithLockTimeout(200ms) was not applied (default %v)", took, tenant.DefaultLockTimeout)
			}
			if _, err := r.StoreData(ctx, "m2", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantDeleted) {
				t.Fatalf("write to a tombstoned tenant whose drop failed = %v, want ErrTenantDeleted", err)
			}
			if got, _ := r.List(bg); len(got) != 0 {
				t.Fatalf("List = %v, want the tombstoned tenant left out", got)
			}
			if err := reader.Rollback(bg); err != nil {
				t.Fatal(err)
			}
			if err := r.Drop(bg, "locked"); err != nil {
				t.Fatalf("Drop again: %v", err)
			}
			if n := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
				loc.Table.Schema, loc.Table.Name); n != 0 {
				t.Fatal("the table is still there after Drop again")
			}
		})
	}
}

// TestRouterMigratesOldTenantOnNextWrite turns a tenant back into a
// version-1 tenant (registry and objects) and has a fresh Router write to
// it: the write brings it to the current version first.
func TestRouterMigratesOldTenantOnNextWrite(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	bg := context.Background()
	if err := rb.router(t).Provision(bg, "old"); err != nil {
		t.Fatal(err)
	}
	loc, _ := rb.router(t).Locate("old")
	if _, err := rb.pool.Exec(bg, "UPDATE pgtenant.tenants SET version = 1 WHERE tenant_id = 'old'"); err != nil {
		t.Fatal(err)
	}
	if _, err := rb.pool.Exec(bg, "ALTER TABLE "+loc.Table.Sanitize()+" RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)"); err != nil {
		t.Fatal(err)
	}
	tuned := func() int {
		return rb.count(t, "SELECT count(*) FROM pg_catalog.pg_class WHERE oid = $1::regclass AND reloptions @> ARRAY['autovacuum_vacuum_scale_factor=0.05']",
			loc.Table.Sanitize())
	}
	if tuned() != 0 {
		t.Fatal("the reset did not take")
	}
	fresh, err := openHost(tenant.NewFactory(rb.dsn).WithConnectionLimits(2, 0)) // another host: nothing cached
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	conformance.MustStore(t, fresh, tenant.WithTenant(bg, "old"), "m", []byte("after"))
	if tuned() != 1 {
		t.Fatal("the write did not migrate the tenant's objects")
	}
	if v := rb.count(t, "SELECT version FROM pgtenant.tenants WHERE tenant_id = 'old'"); v != schema.CurrentVersion {
		t.Fatalf("registry version %d, want %d", v, schema.CurrentVersion)
	}
}

// TestRouterPurgeBatches purges 2 500 old messages: three statements of at
// most 1 000 bodies each (and one for the tenant's metadata), every message
// and piece gone, the fresh ones kept.
func TestRouterPurgeBatches(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		tracer := &statementCounter{}
		r := newHost(t, rb.factory.WithQueryTracer(tracer))
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "full")
		conformance.MustStore(t, r, ctx, "fresh", []byte("stays"))
		loc, _ := r.Locate("full")
		cols, vals := "", ""
		if loc.Partition != "" {
			cols, vals = "tenant_id, ", "'full', "
		}
		if _, err := rb.pool.Exec(bg, "INSERT INTO "+loc.Table.Sanitize()+" ("+cols+"message_id, data, size, created, updated)"+
			" SELECT "+vals+"'old-' || i, '\\x00', 1, now() - interval '2 hours', now() - interval '2 hours' FROM generate_series(1, 2500) i"); err != nil {
			t.Fatal(err)
		}
		before := tracer.n.Load()
		n, err := r.Purge(bg, "full", time.Hour)
		if err != nil || n != 2500 {
			t.Fatalf("Purge = %d, %v; want 2500", n, err)
		}
		// A batch of bodies is a transaction of two statements (the
		// messages, then their pieces): BEGIN, two, COMMIT.
		if stmts := tracer.n.Load() - before; stmts != 3*4+1 {
			t.Fatalf("Purge ran %d statements, want 3 batches of bodies (1000, 1000, 500) of 4 and 1 of metadata", stmts)
		}
		if st, err := r.Stats(bg, "full"); err != nil || st.Messages != 1 {
			t.Fatalf("after Purge: %+v, %v; want the fresh message only", st, err)
		}
		conformance.MustRead(t, r, ctx, "fresh", []byte("stays"))
	})
}

// TestRouterCacheEviction runs five tenants through a cache of two: every
// evicted tenant keeps working, and ensures (checks against the registry)
// happen exactly for the tenants that are not cached.
func TestRouterCacheEviction(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	r := newHost(t, rb.factory.WithCacheSize(2).WithMeterProvider(mp))
	bg := context.Background()
	counter := func(name string) int64 {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(bg, &rm); err != nil {
			t.Fatal(err)
		}
		n, _ := sum(rm, name)
		return n
	}
	write := func(id string, i int) {
		conformance.MustStore(t, r, tenant.WithTenant(bg, id), "m", []byte(fmt.Sprint(id, i)))
	}
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		write(id, 1)
	}
	if e, ev := counter("pgtenant.tenant.ensures"), counter("pgtenant.cache.evictions"); e != 5 || ev != 3 {
		t.Fatalf("after 5 tenants through a cache of 2: %d ensures, %d evictions; want 5 and 3", e, ev)
	}
	write("e", 2) // cached
	if e := counter("pgtenant.tenant.ensures"); e != 5 {
		t.Fatalf("a cached tenant was ensured again: %d ensures", e)
	}
	write("a", 2) // evicted: one cheap check, then cached again
	if e, ev := counter("pgtenant.tenant.ensures"), counter("pgtenant.cache.evictions"); e != 6 || ev != 4 {
		t.Fatalf("an evicted tenant: %d ensures, %d evictions; want 6 and 4", e, ev)
	}
	for _, id := range ids {
		want := fmt.Sprint(id, 1)
		if id == "a" || id == "e" {
			want = fmt.Sprint(id, 2)
		}
		conformance.MustRead(t, r, tenant.WithTenant(bg, id), "m", []byte(want))
	}
}

func TestRouterTableSchema(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.TablePerTenant)
	r := newHost(t, rb.factory.WithTableSchema("Queues"))
	conformance.MustStore(t, r, tenant.WithTenant(context.Background(), "acme"), "m", []byte("x"))
	loc, _ := r.Locate("acme")
	if loc.Table != (schema.Table{Schema: "queues", Name: "t_acme"}) {
		t.Fatalf("Locate = %+v", loc)
	}
	if n := rb.count(t, "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = 'queues' AND tablename IN ('t_acme', 'c_t_acme')"); n != 2 {
		t.Fatalf("%d of the tenant's 2 tables in schema queues", n)
	}
	if _, err := openHost(rb.factory.WithTableSchema("bad schema")); !errors.Is(err, schema.ErrInvalidName) {
		t.Fatalf("an invalid table schema = %v", err)
	}
}

// prepareCounter counts the statements pgx prepares on the server.
type prepareCounter struct {
	statementCounter
	prepares atomic.Int64
}

func (p *prepareCounter) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	p.prepares.Add(1)
	return ctx
}
func (p *prepareCounter) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

// TestRouterStatementCacheCapacity runs the same cycle ten times on one
// connection: with room for its statements nothing is prepared again; with
// a cache of 2 the cycle's 3 statements evict each other and are prepared
// on every cycle.
func TestRouterStatementCacheCapacity(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	ctx := tenant.WithTenant(context.Background(), "cached")
	prepares := func(capacity int) int64 {
		tracer := &prepareCounter{}
		r := newHost(t, rb.factory.WithConnectionLimits(1, 1).WithStatementCacheCapacity(capacity).WithQueryTracer(tracer))
		if err := cycle(ctx, r, "warm", []byte("x")); err != nil {
			t.Fatal(err)
		}
		before := tracer.prepares.Load()
		for i := range 10 {
			if err := cycle(ctx, r, fmt.Sprint("m", i), []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		return tracer.prepares.Load() - before
	}
	if n := prepares(64); n != 0 {
		t.Fatalf("with room for every statement, 10 cycles prepared %d statements", n)
	}
	if n := prepares(2); n < 10 {
		t.Fatalf("with a cache of 2, 10 cycles of 3 statements prepared only %d", n)
	}
}

// TestAdministrationConnectionErrors stops a server under a Router: every
// administration call says ErrConnection.
func TestAdministrationConnectionErrors(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t, pgtest.FastShutdown)
	r := newHost(t, tenant.NewFactory(srv.DSN()).WithConnectionLimits(2, 0))
	bg := context.Background()
	if err := r.Provision(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(bg); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Provision": func() error { return r.Provision(bg, "b") },
		"Drop":      func() error { return r.Drop(bg, "a") },
		"List":      func() error { _, err := r.List(bg); return err },
		"Stats":     func() error { _, err := r.Stats(bg, "a"); return err },
		"Overview":  func() error { _, err := r.Overview(bg); return err },
		"Purge":     func() error { _, err := r.Purge(bg, "a", time.Hour); return err },
		"MigrateAll": func() error {
			_, err := r.MigrateAll(bg, tenant.BatchOptions{})
			return err
		},
		"DropMany": func() error {
			res, err := r.DropMany(bg, []string{"a"}, tenant.BatchOptions{Concurrency: 1})
			failed := res.Failed
			return errors.Join(err, failed["a"])
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, tenant.ErrConnection) {
			t.Errorf("%s with the server down = %v, want ErrConnection", name, err)
		}
	}
}

// TestGenericPlans checks the plan cache mode of pgtenant's own
// connections: force_generic_plan on a plain server, unless the DSN sets
// plan_cache_mode, which stays as set.
func TestGenericPlans(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	for _, c := range []struct{ dsn, want string }{
		{dsn, "force_generic_plan"},
		{dsn + "&plan_cache_mode=force_custom_plan", "force_custom_plan"},
	} {
		pool, err := pg.OpenPool(ctx, c.dsn, pg.PoolOptions{MaxOpen: 1, GenericPlans: true})
		if err != nil {
			t.Fatal(err)
		}
		var got string
		err = pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&got)
		pool.Close()
		if err != nil || got != c.want {
			t.Errorf("plan_cache_mode on %s = %q, %v; want %q", c.dsn, got, err, c.want)
		}
	}
}
