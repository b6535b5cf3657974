package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/internal/registry"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

// Benchmarks share one database per process; expensive setups (thousands of
// provisioned tenants) are made once and reused by every b.N round.
var (
	benchMu   sync.Mutex
	benchSets = map[string]any{}
)

func benchDatabase(b *testing.B) string {
	return memo(b, "database", func() string { return pgtest.ProcessDatabase(b, "bench") })
}

// memo returns the value made by make for key, making it once per process.
// make may itself call memo for another key.
func memo[T any](b *testing.B, key string, make func() T) T {
	benchMu.Lock()
	once, ok := benchSets[key].(func() T)
	if !ok {
		once = sync.OnceValue(make)
		benchSets[key] = once
	}
	benchMu.Unlock()
	return once()
}

const benchClients = 16

// benchPool opens a pool of benchClients connections, as pgtenant opens
// its own, with the exec mode and statement cache of o; it lives until the
// package's tests end.
func benchPool(b *testing.B, dsn string, o pg.PoolOptions) *pgxpool.Pool {
	o.MaxOpen, o.MaxIdle = benchClients, benchClients
	pool, err := pg.OpenPool(context.Background(), dsn, o)
	if err != nil {
		b.Fatal(err)
	}
	pgtest.AtExit(pool.Close)
	return pool
}

// plainStore is the engine under a plain backend's table: the buffered
// Put/Get/Delete of one table, for benchmarks that compare paths.
func plainStore(b *testing.B, table string) *engine.Store {
	return memo(b, "plain-store:"+table, func() *engine.Store {
		be := plainBackend(b, table) // creates the table
		t, err := schema.ParseTable(table, "public")
		if err != nil {
			b.Fatal(err)
		}
		s, err := engine.NewStore(be.Pool(), engine.Target{Table: t}, engine.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	})
}

// tenantStore is the engine under one tenant of a bench Router whose pool
// is db: with guarded, the Router's own statements (the same SQL text, so
// they share prepared statements); without, the same tables without the
// registry guard.
func tenantStore(b *testing.B, r *host, db pg.DB, id string, mode pgx.QueryExecMode, guarded bool) *engine.Store {
	loc, err := r.Locate(id)
	if err != nil {
		b.Fatal(err)
	}
	t := engine.Target{Table: loc.Table, Partition: loc.Partition}
	if guarded {
		t.Guard = &engine.Guard{Read: registry.ReadGuard, Write: registry.WriteGuard, Store: benchLayout(loc.Mode).Store(), Tenant: id}
	}
	s, err := engine.NewStore(db, t, engine.Options{Mode: mode})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func plainBackend(b *testing.B, table string) *backend.Backend {
	return memo(b, "plain:"+table, func() *backend.Backend {
		dsn := benchDatabase(b)
		be, err := backend.NewFactory(dsn).WithPool(benchPool(b, dsn, pg.PoolOptions{})).WithTableName(table).Open(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return be
	})
}

// runParallel runs op from benchClients goroutines and reports ops/s.
func runParallel(b *testing.B, op func(worker int, i int) error) {
	var workers atomic.Int64
	b.SetParallelism((benchClients + 1) / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer() // setup before this point is not measured
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := int(workers.Add(1))
		for i := 0; pb.Next(); i++ {
			if err := op(w, i); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

func cycle(ctx context.Context, be datastorage.Backend, id string, body []byte) error {
	if _, err := be.StoreData(ctx, id, bytes.NewReader(body)); err != nil {
		return err
	}
	r, err := be.GetDataReader(ctx, id)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, r)
	r.Close()
	if err != nil || n != int64(len(body)) {
		return fmt.Errorf("read %d bytes, %v", n, err)
	}
	return be.DeleteData(ctx, id)
}

// BenchmarkBackend measures the plain backend's store, read and delete at
// 1 KiB and 64 KiB, serial and with 16 parallel clients.
func BenchmarkBackend(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := bytes.Repeat([]byte("x"), size)
		be := plainBackend(b, "bench_plain")
		ctx := context.Background()
		for _, par := range []bool{false, true} {
			name := func(op string) string {
				mode := "serial"
				if par {
					mode = "parallel16"
				}
				return fmt.Sprintf("%s/%dKiB/%s", op, size>>10, mode)
			}
			ids := func(prefix string, w, i int) string { return prefix + strconv.Itoa(w) + "-" + strconv.Itoa(i) }
			b.Run(name("Store"), func(b *testing.B) {
				b.SetBytes(int64(size))
				if !par {
					i := 0
					for b.Loop() {
						i++
						if _, err := be.StoreData(ctx, ids("s", 0, i%1000), bytes.NewReader(body)); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				runParallel(b, func(w, i int) error {
					_, err := be.StoreData(ctx, ids("s", w, i%1000), bytes.NewReader(body))
					return err
				})
			})
			for i := range 1000 {
				if _, err := be.StoreData(ctx, ids("r", 0, i), bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(name("Read"), func(b *testing.B) {
				b.SetBytes(int64(size))
				read := func(i int) error {
					r, err := be.GetDataReader(ctx, ids("r", 0, i%1000))
					if err != nil {
						return err
					}
					_, err = io.Copy(io.Discard, r)
					r.Close()
					return err
				}
				if !par {
					i := 0
					for b.Loop() {
						i++
						if err := read(i); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				runParallel(b, func(w, i int) error { return read(i + w*7919) })
			})
			b.Run(name("Delete"), func(b *testing.B) {
				// Deleting needs a row per delete: store, then delete, and
				// subtract nothing; the Store numbers above show the store's
				// share.
				del := func(w, i int) error {
					id := ids("d", w, i)
					if _, err := be.StoreData(ctx, id, bytes.NewReader(body)); err != nil {
						return err
					}
					return be.DeleteData(ctx, id)
				}
				if !par {
					i := 0
					for b.Loop() {
						i++
						if err := del(0, i); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				runParallel(b, del)
			})
		}
	}
}

// compareRounds runs variants in turns (A, B, C, A, B, C, ...) for rounds
// rounds of d each, every variant with benchClients clients calling its op
// as fast as it can, so that the machine's noise falls on all of them
// alike. It reports each variant's median ops/s and, for every variant
// after the first, its ratio to the first: the median of the per-round
// ratios and their interquartile range (p25, p75), so that the spread can
// be read next to the claim. Set PGTENANT_BENCH_ROUNDS and
// PGTENANT_BENCH_ROUND to change the defaults (20 rounds of 500 ms).
func compareRounds(b *testing.B, names []string, ops []func(w, i int) error) {
	compareRoundsFor(b, 20, 500*time.Millisecond, names, ops)
}

// compareRoundsFor is compareRounds with rounds rounds of d by default.
func compareRoundsFor(b *testing.B, rounds int, d time.Duration, names []string, ops []func(w, i int) error) {
	if v, err := strconv.Atoi(os.Getenv("PGTENANT_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	if v, err := time.ParseDuration(os.Getenv("PGTENANT_BENCH_ROUND")); err == nil && v > 0 {
		d = v
	}
	rates := make([][]float64, len(ops)) // per variant, per round
	for b.Loop() {
		for range rounds {
			for k, op := range ops {
				rates[k] = append(rates[k], runFor(b, d, op))
			}
		}
	}
	// quantile interpolates linearly between the closest ranks, so that
	// with few rounds p25 and p75 differ from the median.
	quantile := func(v []float64, q float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		pos := q * float64(len(v)-1)
		lo := int(pos)
		if lo+1 >= len(v) {
			return v[lo]
		}
		return v[lo] + (pos-float64(lo))*(v[lo+1]-v[lo])
	}
	for k, name := range names {
		b.ReportMetric(quantile(rates[k], 0.5), name+"-ops/s")
		if k == 0 {
			continue
		}
		ratios := make([]float64, len(rates[k]))
		for r := range ratios {
			ratios[r] = rates[k][r] / rates[0][r]
		}
		b.Logf("%s/%s by round: %.2f", name, names[0], ratios)
		b.ReportMetric(quantile(ratios, 0.5), name+"/"+names[0])
		b.ReportMetric(quantile(ratios, 0.25), name+"/"+names[0]+"-p25")
		b.ReportMetric(quantile(ratios, 0.75), name+"/"+names[0]+"-p75")
	}
}

// runFor calls op from benchClients goroutines for d and returns the
// calls per second.
func runFor(b *testing.B, d time.Duration, op func(w, i int) error) float64 {
	var (
		n  atomic.Int64
		wg sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	for w := range benchClients {
		wg.Go(func() {
			for i := 0; time.Now().Before(end); i++ {
				if err := op(w, i); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}

// BenchmarkCycle compares a store+read+delete cycle of 1 KiB with 16
// clients through the plain backend against a bare pgx pool running the
// backend's own three statements (the same SQL text: inline upsert with
// its chunk-cleaning CTE, the select of data, size and chunked_version, the
// delete with its CTE) on the same pool, in interleaved rounds. What
// differs is the backend's Go side only: validation, the retry wrapper, the
// streaming writer and reader objects.
func BenchmarkCycle(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	ctx := context.Background()
	be := plainBackend(b, "bench_cycle")
	upsert, get, del, params := plainStore(b, "bench_cycle").Statements()
	pool := be.Pool()
	compareRounds(b, []string{"bare", "backend"}, []func(w, i int) error{
		func(w, i int) error {
			id := "b" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
			vals := map[string]any{"message_id": id, "data": body, "size": int64(len(body)), "now": time.Now()}
			if _, err := pool.Exec(ctx, upsert, bind(params[0], vals)...); err != nil {
				return err
			}
			var (
				data    []byte
				size    int64
				version *int64
			)
			if err := pool.QueryRow(ctx, get, bind(params[1], vals)...).Scan(&data, &size, &version); err != nil {
				return err
			}
			var n int64
			return pool.QueryRow(ctx, del, bind(params[2], vals)...).Scan(&n)
		},
		func(w, i int) error {
			return cycle(ctx, be, "c"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
		},
	})
}

// bind lays out named values in the order of a statement's parameters.
func bind(params []string, vals map[string]any) []any {
	args := make([]any, len(params))
	for i, p := range params {
		args[i] = vals[p]
	}
	return args
}

type routerSet struct {
	router *host
	pool   *pgxpool.Pool // the router's pool
	ctxs   []context.Context
}

// benchLayout is the layout of benchFactory's Routers.
func benchLayout(mode schema.Isolation) schema.Layout {
	l, err := schema.NewLayout(mode, "bench_"+fmt.Sprint(int(mode)), fmt.Sprintf("bench_tables_%d", int(mode)))
	if err != nil {
		panic(err) // fixed, valid names
	}
	return l
}

// benchFactory is the benchmarks' Factory for mode on dsn, without its
// own pool's options (see ownPool).
func benchFactory(dsn string, mode schema.Isolation) *tenant.Factory {
	return tenant.NewFactory(dsn).WithIsolation(mode).
		WithTableName("bench_" + fmt.Sprint(int(mode))).WithTableSchema(fmt.Sprintf("bench_tables_%d", int(mode)))
}

// ownPool sizes the pool a benchmark Factory opens itself.
func ownPool(f *tenant.Factory) *tenant.Factory {
	return f.WithConnectionLimits(benchClients, benchClients)
}

// parallelTenants calls fn for tenant ids 0..n-1 from benchClients goroutines.
func parallelTenants(b testing.TB, n int, fn func(i int, id string) error) {
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		errs = make(chan error, benchClients)
	)
	for range benchClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i, fmt.Sprintf("tenant-%05d", i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// provisioned returns a Router of mode with n tenants provisioned, using
// statement mode m and a statement cache of capacity per connection. The
// tenants' objects are created once per mode and n; a Router with another
// statement strategy reuses them and warms its cache with one write per
// tenant.
func provisioned(b *testing.B, mode schema.Isolation, n int, m pgx.QueryExecMode, capacity int) *routerSet {
	base := memo(b, fmt.Sprintf("router:%v:%d", mode, n), func() *routerSet {
		dsn := benchDatabase(b)
		pool := benchPool(b, dsn, pg.PoolOptions{StatementCache: tenant.DefaultStatementCacheCapacity})
		r, err := openHost(benchFactory(dsn, mode).WithPool(pool))
		if err != nil {
			b.Fatal(err)
		}
		pgtest.AtExit(func() { _ = r.Close() })
		set := &routerSet{router: r, pool: pool, ctxs: make([]context.Context, n)}
		start := time.Now()
		parallelTenants(b, n, func(i int, id string) error {
			set.ctxs[i] = tenant.WithTenant(context.Background(), id)
			return r.Provision(context.Background(), id)
		})
		b.Logf("provisioned %d tenants (%v) in %v", n, mode, time.Since(start).Round(time.Millisecond))
		return set
	})
	return memo(b, fmt.Sprintf("router:%v:%d:%v:%d", mode, n, m, capacity), func() *routerSet {
		dsn := benchDatabase(b)
		pool := benchPool(b, dsn, pg.PoolOptions{Mode: m, StatementCache: capacity})
		r, err := openHost(benchFactory(dsn, mode).WithExecMode(m).WithPool(pool))
		if err != nil {
			b.Fatal(err)
		}
		pgtest.AtExit(func() { _ = r.Close() })
		start := time.Now()
		set := &routerSet{router: r, pool: pool, ctxs: base.ctxs}
		warm(b, set, n, m, min(n, capacity/3))
		b.Logf("warmed %d connections for %d of %d tenants in %v", benchClients, min(n, capacity/3), n, time.Since(start).Round(time.Millisecond))
		return set
	})
}

// warm brings the Router to the steady state of a long-running host: every
// pool connection has run the three statements of the first k tenants (as
// many as its statement cache holds), so their plans are prepared and the
// server's catalog caches hold their tables. It runs the Router's own SQL
// text through per-connection Stores.
func warm(b *testing.B, set *routerSet, n int, m pgx.QueryExecMode, k int) {
	ctx, r := context.Background(), set.router
	parallelTenants(b, n, func(i int, id string) error {
		_, err := r.StoreData(tenant.WithTenant(ctx, id), "warm", bytes.NewReader(nil)) // caches the tenant
		return err
	})
	warmStores(b, set, k, func(db pg.DB, i int) *engine.Store {
		return tenantStore(b, r, db, fmt.Sprintf("tenant-%05d", i), m, true)
	})
}

// warmRuns is how often warmStores runs each statement on each
// connection: PostgreSQL plans a prepared statement afresh for its first 5
// executions (custom plans) before it settles on a generic plan, and a
// long-running host's statements have long settled.
const warmRuns = 6

// warmStores has every connection of the set's pool run warmRuns cycles
// through the stores made by store for the first k tenants, so that their
// statements are prepared, with settled plans, on every connection.
func warmStores(b *testing.B, set *routerSet, k int, store func(db pg.DB, i int) *engine.Store) {
	ctx := context.Background()
	conns := make([]*pgxpool.Conn, 0, benchClients)
	for len(conns) < benchClients {
		c, err := set.pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for ci, c := range conns {
		wid := fmt.Sprintf("warm-%d", ci)
		wg.Go(func() {
			defer c.Release()
			for i := range k {
				s := store(c, i)
				if s.Target().Partition != "" {
					return // one statement set for all tenants: nothing to warm
				}
				for range warmRuns {
					if err := storeCycle(ctx, s, wid, nil); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkRouterCycle measures store+read+delete cycles of 1 KiB with 16
// clients, each cycle for a random tenant out of 1, 100, 1 000 or 10 000, in
// every isolation mode, in interleaved rounds of three variants on the same
// server state: the plain backend on one table ("plain"), the router
// ("router"), and one precompiled engine store per tenant on the router's
// pool, picked by index ("stores": the same tables without the router).
// router/plain is the router's whole cost; stores/plain what many tables
// cost the server; router/stores what the router adds. Run one mode per
// process (see scripts/bench-router.sh): thousands of provisioned tenants
// leave autovacuum work behind that slows whatever runs next.
func BenchmarkRouterCycle(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	ctx := context.Background()
	for _, mode := range modes {
		for _, n := range []int{1, 100, 1000, 10000} {
			b.Run(fmt.Sprintf("mode=%v/tenants=%d", mode, n), func(b *testing.B) {
				set := provisioned(b, mode, n, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
				plain := plainBackend(b, "bench_router_base")
				stores := make([]*engine.Store, n)
				for i := range stores {
					stores[i] = tenantStore(b, set.router, set.pool, fmt.Sprintf("tenant-%05d", i), pgx.QueryExecModeCacheStatement, true)
				}
				compareRounds(b, []string{"plain", "router", "stores"}, []func(w, i int) error{
					func(w, i int) error { return cycle(ctx, plain, "p"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body) },
					func(w, i int) error {
						return cycle(set.ctxs[rand.IntN(len(set.ctxs))], set.router, "r"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
					},
					func(w, i int) error {
						return storeCycle(ctx, stores[rand.IntN(n)], "s"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
					},
				})
			})
		}
	}
}

func routerCycles(b *testing.B, set *routerSet, body []byte) {
	runParallel(b, func(w, i int) error {
		ctx := set.ctxs[rand.IntN(len(set.ctxs))]
		return cycle(ctx, set.router, "c"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
	})
}

// BenchmarkStatementStrategy compares pgx statement modes and cache sizes
// for per-tenant SQL text at 1 000 and 10 000 tenants.
func BenchmarkStatementStrategy(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	type strategy struct {
		name     string
		mode     pgx.QueryExecMode
		capacity int
	}
	strategies := []strategy{
		{"cache-statement-512", pgx.QueryExecModeCacheStatement, 512},
		{"cache-statement-4096", pgx.QueryExecModeCacheStatement, 4096},
		{"cache-describe-4096", pgx.QueryExecModeCacheDescribe, 4096},
	}
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant} {
		for _, n := range []int{1000, 10000} {
			for _, s := range strategies {
				b.Run(fmt.Sprintf("mode=%v/tenants=%d/%s", mode, n, s.name), func(b *testing.B) {
					routerCycles(b, provisioned(b, mode, n, s.mode, s.capacity), body)
				})
			}
		}
	}
}

// BenchmarkColdTenant measures the first write of a new tenant (creating
// its objects) and reports the p50 and p99 latencies.
func BenchmarkColdTenant(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	for _, mode := range modes {
		b.Run(fmt.Sprintf("mode=%v", mode), func(b *testing.B) {
			set := provisioned(b, mode, 1, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
			var lat []time.Duration
			i := 0
			for b.Loop() {
				i++
				ctx := tenant.WithTenant(context.Background(), fmt.Sprintf("cold-%d-%d", time.Now().UnixNano(), i))
				start := time.Now()
				if _, err := set.router.StoreData(ctx, "m", bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 99).Microseconds())/1000, "p99-ms")
		})
	}
}

func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}
