package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	datastorage "schneider.vip/retryspool/storage/data"
)

// BenchmarkScale measures one server holding 10 000 tenants in the
// per-tenant modes (run one mode per process, see scripts/bench-scale.sh):
//
//   - the bulk provisioning of the 10 000 (logged by provisioned, 16
//     clients) and the catalog they leave (logged);
//   - provision-more: Provision of one more tenant at that scale, one client;
//   - cycle: store+read+delete cycles of 1 KiB, 16 clients, each for a
//     random tenant of the 10 000, after warming (steady state);
//   - backend-touching=K/mode: one server backend's life: a fresh
//     connection (statement cache 4096, as the Router's) runs a cycle in K
//     tenants in exec mode CacheStatement (prepared statements on the
//     server) or CacheDescribe (none);
//     backend-MiB is its memory afterwards (pg_backend_memory_contexts),
//     catcache-MiB the part under CacheMemoryContext (catalog, relation and
//     plan caches). The backend frees it all when it exits, which is what
//     MaxConnLifetime bounds in time.
func BenchmarkScale(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 1<<10)
	const n = 10000
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant} {
		b.Run(fmt.Sprintf("mode=%v/tenants=%d", mode, n), func(b *testing.B) {
			set := provisioned(b, mode, n, pgx.QueryExecModeCacheStatement, tenant.DefaultStatementCacheCapacity)
			memo(b, fmt.Sprintf("catalog:%v", mode), func() bool {
				var rels, catalog, db int64
				if err := set.pool.QueryRow(context.Background(), `SELECT
					(SELECT count(*) FROM pg_class),
					(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'pg_catalog'),
					pg_database_size(current_database())`).Scan(&rels, &catalog, &db); err != nil {
					b.Fatal(err)
				}
				b.Logf("%v, %d tenants: %d relations, catalog %d MiB, database %d MiB", mode, n, rels, catalog>>20, db>>20)
				return true
			})
			b.Run("provision-more", func(b *testing.B) {
				ctx := context.Background()
				i := 0
				for b.Loop() {
					i++
					if err := set.router.Provision(ctx, fmt.Sprintf("extra-%d-%d", time.Now().UnixNano(), i)); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("cycle", func(b *testing.B) { routerCycles(b, set, body) })
			for _, c := range []struct {
				k    int
				mode pgx.QueryExecMode
			}{
				{0, pgx.QueryExecModeCacheStatement},
				{1000, pgx.QueryExecModeCacheStatement},
				{n, pgx.QueryExecModeCacheStatement},
				{1000, pgx.QueryExecModeCacheDescribe},
				{n, pgx.QueryExecModeCacheDescribe},
			} {
				b.Run(fmt.Sprintf("backend-touching=%d/%v", c.k, c.mode), func(b *testing.B) {
					var mem, cache int64
					for b.Loop() {
						mem, cache = backendLife(b, set, c.k, c.mode, body)
					}
					b.ReportMetric(float64(mem)/(1<<20), "backend-MiB")
					b.ReportMetric(float64(cache)/(1<<20), "catcache-MiB")
				})
			}
		})
	}
}

// backendLife opens a connection, runs one cycle in each of the first k
// tenants through per-tenant Stores (the Router's SQL), and returns the
// backend's memory: in all, and under CacheMemoryContext.
func backendLife(b *testing.B, set *routerSet, k int, mode pgx.QueryExecMode, body []byte) (total, cache int64) {
	ctx := context.Background()
	cfg := set.pool.Config().ConnConfig.Copy()
	cfg.StatementCacheCapacity = tenant.DefaultStatementCacheCapacity
	cfg.DescriptionCacheCapacity = tenant.DefaultStatementCacheCapacity
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	for i := range k {
		s := tenantStore(b, set.router, conn, fmt.Sprintf("tenant-%05d", i), mode, true)
		if err := s.Put(ctx, "life", body); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Get(ctx, "life"); err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(ctx, "life"); err != nil && !errors.Is(err, datastorage.ErrDataNotFound) {
			b.Fatal(err)
		}
	}
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT sum(total_bytes) FROM pg_backend_memory_contexts),
		(SELECT sum(total_bytes) FROM pg_backend_memory_contexts WHERE name = 'CacheMemoryContext' OR parent = 'CacheMemoryContext')`).
		Scan(&total, &cache); err != nil {
		b.Fatal(err)
	}
	return total, cache
}
