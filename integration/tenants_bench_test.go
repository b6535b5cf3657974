package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// BenchmarkTenants measures what issue #23 asks of one server holding
// many tenants, each figure side by side with one plain table in the same
// run. Per mode and tenant count (1 000 in every mode by default;
// PGTENANT_BENCH_TENANTS=10000 or a list such as 1000,10000 for others,
// PGTENANT_BENCH_MODES=schema,table,shared to choose modes):
//
//   - provision-tenants/s and provision-failures: Admin.ProvisionMany of
//     the tenants with 16 creators, from an empty store;
//   - relations/tenant: pg_class rows the tenants added (TOAST included),
//     per tenant;
//   - cold-p50-ms, cold-p99-ms: the first write of 200 new tenants, one at
//     a time, next to the existing ones (it creates their objects), after
//     the rounds, with the router's pool alone open;
//   - router/plain: store+read+delete cycles of 1 KiB from 16 clients on
//     a random tenant, counted from a cold start: each variant opens a
//     fresh pool of 16 connections, touches every tenant once (the plain
//     backend runs as many cycles), then the variants run in interleaved
//     rounds, PGTENANT_BENCH_ROUNDS (3) of PGTENANT_BENCH_ROUND (8 s);
//     reported as the median ratio and the quartiles over the rounds;
//   - MiB/backend: the private memory of each variant's server backends
//     after the rounds (from /proc, median over the backends);
//   - migrate-tenants/s (per-tenant modes): MigrateAll with 16 workers of
//     every tenant set back to version 1 (migration 2's ALTER TABLEs, the
//     checks of the later steps).
//
// Variants: "plain" (backend on one table), "router" (the Factory's
// defaults), "custom-plans" (the router with plan_cache_mode=auto, i.e.
// without the force_generic_plan pgtenant sets on its own connections),
// and the router with the other affinity: "no-affinity" in the per-tenant
// modes, "affinity-1" (groups of one connection) in SharedTable.
func BenchmarkTenants(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	counts := []int{1000}
	if v := os.Getenv("PGTENANT_BENCH_TENANTS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				b.Fatalf("PGTENANT_BENCH_TENANTS=%q: want tenant counts", v)
			}
			counts = append(counts, n)
		}
	}
	modes := []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant, schema.SharedTable}
	if v := os.Getenv("PGTENANT_BENCH_MODES"); v != "" {
		modes = nil
		for _, m := range strings.Split(v, ",") {
			mode, err := schema.ParseIsolation(m)
			if err != nil {
				b.Fatal(err)
			}
			modes = append(modes, mode)
		}
	}
	for _, n := range counts {
		for _, mode := range modes {
			b.Run(fmt.Sprintf("mode=%v/tenants=%d", mode, n), func(b *testing.B) { tenantsRun(b, mode, n, body) })
		}
	}
}

// tenantsRun is one BenchmarkTenants run, on a database of its own; its
// rounds run in b.Loop (compareRoundsFor).
func tenantsRun(b *testing.B, mode schema.Isolation, n int, body []byte) {
	ctx := context.Background()
	dsn := pgtest.ProcessDatabase(b, fmt.Sprintf("tenants_%v_%d", int(mode), n))
	admin := newAdmin(b, tenant.NewFactory(dsn).WithIsolation(mode).WithConnectionLimits(benchClients, 0))
	pool := pgtest.NewPool(b, dsn, nil)
	relations := func() int64 {
		var c int64
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_class").Scan(&c); err != nil {
			b.Fatal(err)
		}
		return c
	}
	// Provisioning, from an empty store.
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%05d", i)
	}
	before := relations()
	start := time.Now()
	res, err := admin.ProvisionMany(ctx, ids, tenant.BatchOptions{Concurrency: benchClients})
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	perTenant := float64(relations()-before) / float64(n)
	// Metrics go in after the rounds' b.Loop, which would reset them.
	defer func() {
		b.ReportMetric(float64(res.Provisioned)/took.Seconds(), "provision-tenants/s")
		b.ReportMetric(float64(len(res.Failed)), "provision-failures")
		b.ReportMetric(perTenant, "relations/tenant")
	}()
	b.Logf("provisioned %d tenants in %v, %d failed", res.Provisioned, took.Round(time.Millisecond), len(res.Failed))
	for id, err := range res.Failed {
		b.Logf("provision %s: %v", id, err)
		break
	}

	// The variants, each on a fresh pool, each touching every tenant once.
	app := func(name string) string { return fmt.Sprintf("tenants_%s_%v_%d", name, int(mode), n) }
	// The default's opposite on affinity: off in the per-tenant modes,
	// groups of 1 in SharedTable.
	flipped, flippedAffinity := "no-affinity", 0
	if mode == schema.SharedTable {
		flipped, flippedAffinity = "affinity-1", 1
	}
	names := []string{"plain", "router", "custom-plans", flipped}
	plain, err := backend.NewFactory(withParam(b, dsn, "application_name", app("plain"))).
		WithConnectionLimits(benchClients, benchClients).WithTableName("bench_tenants_plain").Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	ops := []func(w, i int) error{
		func(w, i int) error { return cycle(ctx, plain, "p"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body) },
	}
	ctxs := make([]context.Context, n)
	for i, id := range ids {
		ctxs[i] = tenant.WithTenant(ctx, id)
	}
	touch := []func(i int) error{
		func(i int) error { return cycle(ctx, plain, "touch-"+strconv.Itoa(i), body) },
	}
	var router *host
	var others []*host // the variants other than the router
	for _, name := range names[1:] {
		d := withParam(b, dsn, "application_name", app(name))
		if name == "custom-plans" {
			d = withParam(b, d, "plan_cache_mode", "auto")
		}
		f := tenant.NewFactory(d).WithIsolation(mode).WithConnectionLimits(benchClients, benchClients)
		if name == flipped {
			f = f.WithConnectionAffinity(flippedAffinity)
		}
		r, err := openHost(f)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		if router == nil {
			router = r
		} else {
			others = append(others, r)
		}
		ops = append(ops, func(w, i int) error {
			return cycle(ctxs[rand.IntN(n)], r, name+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
		})
		touch = append(touch, func(i int) error { return cycle(ctxs[i], r, "touch", body) })
	}
	for k, name := range names {
		start := time.Now()
		touchAll(b, n, touch[k])
		b.Logf("%s: touched %d tenants in %v", name, n, time.Since(start).Round(time.Millisecond))
	}
	compareRoundsFor(b, 3, 8*time.Second, names, ops)
	for _, name := range names {
		if mib, backends, err := backendMemory(b, app(name)); err == nil {
			b.ReportMetric(mib, name+"-MiB/backend")
			b.Logf("%s: %d backends, %.1f MiB private memory each (median)", name, backends, mib)
		}
	}

	// Cold first writes next to the n tenants, with the router's pool
	// alone open, as on a host: every other variant's backends, idle with
	// the caches of their tenants, would have to take in the DDL's
	// catalog invalidations too (measured apart: 48 such backends raise
	// a first write's p90 at 10 000 tenants from 33 to 56 ms).
	if err := plain.Close(); err != nil {
		b.Fatal(err)
	}
	for _, h := range others {
		if err := h.Close(); err != nil {
			b.Fatal(err)
		}
	}
	// Their server backends exit after the client closes; wait until
	// they have, so that none is still exiting during the writes.
	closed := []string{app("plain")}
	for _, name := range names[2:] {
		closed = append(closed, app(name))
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		var left int
		if err := pool.QueryRow(ctx, "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE application_name = ANY($1)", closed).Scan(&left); err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d backends of the closed variants still there after 30 s", left)
		}
		time.Sleep(10 * time.Millisecond) // polling the server's backends
	}
	var lat []time.Duration
	for i := range 200 {
		ctx := tenant.WithTenant(ctx, fmt.Sprintf("cold-%05d", i))
		start := time.Now()
		if _, err := router.StoreData(ctx, "m", bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(percentile(lat, 50).Microseconds())/1000, "cold-p50-ms")
	b.ReportMetric(float64(percentile(lat, 99).Microseconds())/1000, "cold-p99-ms")

	// MigrateAll over every tenant, from version 1: migration 2's ALTER
	// TABLEs on each tenant's tables, and the checks of the later steps.
	if mode == schema.SharedTable {
		return
	}
	if _, err := pool.Exec(ctx, "UPDATE "+schema.RegistrySchema+".tenants SET version = 1"); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	mres, err := admin.MigrateAll(ctx, tenant.BatchOptions{Concurrency: benchClients})
	if err != nil || len(mres.Failed) > 0 {
		b.Fatalf("MigrateAll: %v, %d failed", err, len(mres.Failed))
	}
	migrating := time.Since(start)
	b.ReportMetric(float64(mres.Migrated)/migrating.Seconds(), "migrate-tenants/s")
	b.Logf("MigrateAll: %d tenants migrated from version 1 in %v", mres.Migrated, migrating.Round(time.Millisecond))
}

// touchAll calls fn for 0..n-1 from benchClients goroutines.
func touchAll(b *testing.B, n int, fn func(i int) error) {
	parallelTenants(b, n, func(i int, _ string) error { return fn(i) })
}
