package integration

import (
	"bytes"
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// BenchmarkSharedGuardCost isolates the cost of SharedTable's registry
// guard: the same serial store+read+delete cycle on the plain backend, on
// the shared table without the guard, and through the router (with it).
func BenchmarkSharedGuardCost(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	set := provisioned(b, schema.SharedTable, 1, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
	unguarded := tenantStore(b, set.router, set.pool, "tenant-00000", pgx.QueryExecModeCacheStatement)
	plain := plainStore(b, "bench_guard_plain")
	ctx := context.Background()
	run := func(b *testing.B, put func() error, get func() error, del func() error) {
		for b.Loop() {
			if err := put(); err != nil {
				b.Fatal(err)
			}
			if err := get(); err != nil {
				b.Fatal(err)
			}
			if err := del(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("plain", func(b *testing.B) {
		run(b, func() error { return plain.Put(ctx, "g", body) },
			func() error { _, err := plain.Get(ctx, "g"); return err },
			func() error { return plain.Delete(ctx, "g") })
	})
	b.Run("shared-unguarded", func(b *testing.B) {
		run(b, func() error { return unguarded.Put(ctx, "g", body) },
			func() error { _, err := unguarded.Get(ctx, "g"); return err },
			func() error { return unguarded.Delete(ctx, "g") })
	})
	b.Run("shared-router", func(b *testing.B) {
		tctx := set.ctxs[0]
		run(b, func() error { _, err := set.router.StoreData(tctx, "g", bytes.NewReader(body)); return err },
			func() error {
				r, err := set.router.GetDataReader(tctx, "g")
				if err == nil {
					r.Close()
				}
				return err
			},
			func() error { return set.router.DeleteData(tctx, "g") })
	})
}
