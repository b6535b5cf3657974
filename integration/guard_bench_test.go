package integration

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/engine"
	"github.com/pgtenant/pgtenant/internal/pg"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// BenchmarkGuardCost measures what the registry guard costs the steady
// path: store+read+delete cycles of 1 KiB, 16 clients, random tenant of
// 100, in interleaved rounds of the router (every statement guarded,
// writes locking the tenant's registry row FOR KEY SHARE) and of engine
// stores on the same tables without a guard (what the per-tenant modes ran
// before the guard).
func BenchmarkGuardCost(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	ctx := context.Background()
	for _, mode := range modes {
		b.Run(fmt.Sprintf("mode=%v", mode), func(b *testing.B) {
			const n = 100
			set := provisioned(b, mode, n, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
			stores := make([]*engine.Store, n)
			for i := range stores {
				stores[i] = tenantStore(b, set.router, set.pool, fmt.Sprintf("tenant-%05d", i), pgx.QueryExecModeCacheStatement, false)
			}
			warmStores(b, set, n, func(db pg.DB, i int) *engine.Store {
				return tenantStore(b, set.router, db, fmt.Sprintf("tenant-%05d", i), pgx.QueryExecModeCacheStatement, false)
			})
			compareRounds(b, []string{"unguarded", "guarded"}, []func(w, i int) error{
				func(w, i int) error {
					return storeCycle(ctx, stores[rand.IntN(n)], "u"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
				},
				func(w, i int) error {
					return cycle(set.ctxs[rand.IntN(n)], set.router, "g"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
				},
			})
		})
	}
}

// BenchmarkQuota compares writes with quotas off and on, in interleaved
// rounds on the same 100 tenants: with a quota every write and delete is
// a pipeline of two statements in one round trip (the lock on the
// tenant's usage row, then the write that checks and updates the usage).
// Each variant has a host of its own (a pool of 16) that touched every
// tenant once before the rounds, so that both run prepared statements.
func BenchmarkQuota(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.SharedTable} {
		b.Run(fmt.Sprintf("mode=%v", mode), func(b *testing.B) {
			const n = 100
			set := provisioned(b, mode, n, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
			f := ownPool(benchFactory(benchDatabase(b), mode))
			var ops []func(w, i int) error
			for k, host := range []*tenant.Factory{f, f.WithQuota(1<<40, 1<<40)} {
				h, err := openHost(host)
				if err != nil {
					b.Fatal(err)
				}
				defer h.Close()
				touchAll(b, n, func(i int) error { return cycle(set.ctxs[i], h, "touch", body) })
				ops = append(ops, func(w, i int) error {
					return cycle(set.ctxs[rand.IntN(n)], h, strconv.Itoa(k)+"-"+strconv.Itoa(w)+"-"+strconv.Itoa(i), body)
				})
			}
			compareRounds(b, []string{"no-quota", "quota"}, ops)
		})
	}
}

// storeCycle is cycle on an engine store.
func storeCycle(ctx context.Context, s *engine.Store, id string, body []byte) error {
	if err := s.Put(ctx, id, body); err != nil {
		return err
	}
	if _, err := s.Get(ctx, id); err != nil {
		return err
	}
	return s.Delete(ctx, id)
}
