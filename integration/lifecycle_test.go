package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

func TestRouterStatsAndPurge(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		a, b := tenant.WithTenant(bg, "alpha"), tenant.WithTenant(bg, "beta")
		for i := range 5 {
			conformance.MustStore(t, r, a, fmt.Sprintf("m%d", i), []byte(strings.Repeat("a", 10*(i+1))))
		}
		if _, err := r.StoreData(a, "big", bodyReader(1, 2*chunk+1)); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, r, b, "m0", []byte("b"))

		st, err := r.Stats(bg, "alpha")
		if err != nil {
			t.Fatal(err)
		}
		if st.Messages != 6 || st.Bytes != 150+2*chunk+1 || st.Oldest.IsZero() || st.Newest.Before(st.Oldest) {
			t.Fatalf("alpha stats: %+v", st)
		}
		if st, err := r.Stats(bg, "nobody"); err != nil || st.Messages != 0 {
			t.Fatalf("stats of an unknown tenant: %+v, %v", st, err)
		}

		// Age three of alpha's messages (the large one among them) and one of beta's.
		p, _ := r.Locate("alpha")
		pb, _ := r.Locate("beta")
		age := func(p tenant.Location, ids ...string) {
			where := "message_id = ANY($1)"
			args := []any{ids}
			if p.Partition != "" {
				where += " AND tenant_id = $2"
				args = append(args, p.Partition)
			}
			if _, err := rb.pool.Exec(bg, "UPDATE "+p.Table.Sanitize()+" SET updated = now() - interval '2 hours' WHERE "+where, args...); err != nil {
				t.Fatal(err)
			}
		}
		age(p, "m0", "m1", "big")
		age(pb, "m0")
		n, err := r.Purge(bg, "alpha", time.Hour)
		if err != nil || n != 3 {
			t.Fatalf("Purge = %d, %v; want 3", n, err)
		}
		conformance.MustNotFind(t, r, a, "big")
		conformance.MustRead(t, r, a, "m2", []byte(strings.Repeat("a", 30)))
		conformance.MustRead(t, r, b, "m0", []byte("b")) // another tenant's old message stays
		chunks := p.Chunks
		if left := rb.count(t, "SELECT count(*) FROM "+chunks.Sanitize()); left != 0 {
			t.Fatalf("%d chunk rows left after purging the large message", left)
		}
		if n, err := r.Purge(bg, "nobody", time.Hour); err != nil || n != 0 {
			t.Fatalf("Purge of an unknown tenant = %d, %v", n, err)
		}

		over, err := r.Overview(bg)
		if err != nil {
			t.Fatal(err)
		}
		if len(over) != 2 || over[0].Tenant != "alpha" || over[1].Tenant != "beta" {
			t.Fatalf("Overview: %+v", over)
		}
		// A few tenants: exact counts in every mode, and in the per-tenant
		// modes the table's size on disk.
		if over[0].Messages != 3 || over[0].Bytes != 30+40+50 || over[1].Messages != 1 || over[0].Estimated || over[1].Estimated {
			t.Fatalf("Overview counts: %+v", over)
		}
		if (mode != schema.SharedTable) != (over[0].DiskBytes > 0) {
			t.Fatalf("Overview sizes on disk: %+v", over)
		}
	})
}

// TestRouterDropMany drops 300 tenants on a server whose shared lock table
// cannot hold their objects' locks in one transaction (checked first, as a
// control): DropMany succeeds only because it drops one tenant per
// transaction.
func TestRouterDropMany(t *testing.T) {
	t.Parallel()
	const n = 300
	// The lock table has about max_locks_per_transaction x (max_connections
	// + background workers) = 10 x 42 slots: far fewer than the ~3 000
	// relations of 300 tenants, plenty for one tenant's ~12 at a time.
	srv := pgtest.NewServer(t, pgtest.FastShutdown, "max_connections=20", "max_locks_per_transaction=10")
	pool := pgtest.NewPool(t, srv.DSN(), func(c *pgxpool.Config) { c.MaxConns = 2 })
	r := newHost(t, tenant.NewFactory(srv.DSN()).WithConnectionLimits(8, 0))
	bg := context.Background()
	ids := make([]string, n)
	parallelTenants(t, n, func(i int, id string) error {
		ids[i] = id
		_, err := r.StoreData(tenant.WithTenant(bg, id), "m", strings.NewReader(id))
		return err
	})
	conformance.MustStore(t, r, tenant.WithTenant(bg, "survivor"), "m", []byte("stays"))
	count := func(sql string) int {
		var n int
		if err := pool.QueryRow(bg, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Control: all 300 tenants' schemas in one transaction do not fit.
	schemas := make([]string, n)
	for i, id := range ids {
		loc, err := r.Locate(id)
		if err != nil {
			t.Fatal(err)
		}
		schemas[i] = pgx.Identifier{loc.Table.Schema}.Sanitize()
	}
	tx, err := pool.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(bg, "DROP SCHEMA "+strings.Join(schemas, ", ")+" CASCADE")
	_ = tx.Rollback(bg)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53200" {
		t.Fatalf("dropping every tenant in one transaction = %v; want 53200 (out of shared memory): the server is too large for this test", err)
	}
	if left := count("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname LIKE 'h\\_tenant%'"); left != n {
		t.Fatalf("the control left %d of %d tenant schemas", left, n)
	}

	res, err := r.DropMany(bg, ids, tenant.BatchOptions{Concurrency: 8})
	if err != nil || len(res.Failed) != 0 || res.Dropped != len(ids) {
		t.Fatalf("DropMany: %v, %+v", err, res)
	}
	if got, _ := r.List(bg); len(got) != 1 || got[0] != "survivor" {
		t.Fatalf("List after DropMany = %v", got)
	}
	if left := count("SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname LIKE 'h\\_tenant%'"); left != 0 {
		t.Fatalf("%d tenant schemas left", left)
	}
	if _, err := r.StoreData(tenant.WithTenant(bg, ids[0]), "m", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantDeleted) {
		t.Fatalf("write to a dropped tenant = %v", err)
	}
	conformance.MustRead(t, r, tenant.WithTenant(bg, "survivor"), "m", []byte("stays"))
}

func TestRouterQuota(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := newHost(t, rb.factory.WithQuota(3*chunk, 4))
		bg := context.Background()
		a, b := tenant.WithTenant(bg, "capped"), tenant.WithTenant(bg, "other")
		for i := range 3 {
			conformance.MustStore(t, r, a, fmt.Sprintf("m%d", i), []byte("small"))
		}
		// A large (chunked) body that fits: 2 MiB.
		if _, err := r.StoreData(a, "big", bodyReader(1, 2*chunk)); err != nil {
			t.Fatal(err)
		}
		// A fifth message: over the message count.
		if _, err := r.StoreData(a, "m3", strings.NewReader("x")); !errors.Is(err, tenant.ErrQuotaExceeded) {
			t.Fatalf("fifth message = %v, want ErrQuotaExceeded", err)
		}
		conformance.MustNotFind(t, r, a, "m3")
		// Replacing a message is not a new one; growing it past the bytes is refused
		// and leaves the old version.
		conformance.MustStore(t, r, a, "m0", []byte("replaced"))
		if _, err := r.StoreData(a, "big", bodyReader(2, 3*chunk)); !errors.Is(err, tenant.ErrQuotaExceeded) {
			t.Fatalf("growing big past the quota = %v", err)
		}
		mustMatch(t, r, a, "big", 1, 2*chunk)
		w, err := r.GetDataWriter(a, "m1")
		if err != nil {
			t.Fatal(err)
		}
		_, werr := io.Copy(w, bodyReader(3, 4*chunk))
		if cerr := w.Close(); !errors.Is(werr, tenant.ErrQuotaExceeded) || !errors.Is(cerr, tenant.ErrQuotaExceeded) {
			t.Fatalf("writer over the quota: Write %v, Close %v", werr, cerr)
		}
		conformance.MustRead(t, r, a, "m1", []byte("small"))
		// Another tenant has its own quota; deleting frees room.
		conformance.MustStore(t, r, b, "m3", []byte("fine"))
		if err := r.DeleteData(a, "m2"); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, r, a, "m3", []byte("now it fits"))
	})
}
