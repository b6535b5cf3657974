package integration

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

func TestMigrateAllResumes(t *testing.T) {
	t.Parallel()
	const n = 1000
	rb := setupRouter(t, schema.SchemaPerTenant)
	r := newHost(t, rb.factory.WithConnectionLimits(8, 0))
	bg := context.Background()
	parallelTenants(t, n, func(i int, id string) error { return r.Provision(bg, id) })

	// Turn every tenant back into a version-1 tenant: registry and objects.
	if _, err := rb.pool.Exec(bg, "UPDATE pgtenant.tenants SET version = 1"); err != nil {
		t.Fatal(err)
	}
	if _, err := rb.pool.Exec(bg, `DO $$ DECLARE t record; BEGIN
		FOR t IN SELECT c.oid::regclass AS rel FROM pg_catalog.pg_class c WHERE c.relkind = 'r' AND c.reloptions IS NOT NULL
			AND c.relname = 'retryspool_data' LOOP
			EXECUTE format('ALTER TABLE %s RESET (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)', t.rel);
		END LOOP; END $$`); err != nil {
		t.Fatal(err)
	}
	tuned := func() int {
		return rb.count(t, `SELECT count(*) FROM pg_catalog.pg_class WHERE relname = 'retryspool_data'
			AND reloptions @> ARRAY['autovacuum_vacuum_scale_factor=0.05']`)
	}
	if got := tuned(); got != 0 {
		t.Fatalf("%d tables still tuned after the reset", got)
	}

	// First run: interrupted after 300 tenants.
	ctx, cancel := context.WithCancel(bg)
	var calls atomic.Int64
	res1, err := r.MigrateAll(ctx, tenant.BatchOptions{Concurrency: 4, Progress: func(done, total int, id string, err error) {
		calls.Add(1)
		if total != n {
			t.Errorf("progress total %d, want %d", total, n)
		}
		if done == 300 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted MigrateAll = %v, want context.Canceled", err)
	}
	if res1.Migrated < 300 || res1.Migrated >= n || len(res1.Failed) != 0 {
		t.Fatalf("first run: %+v", res1)
	}
	if got := calls.Load(); got != int64(res1.Migrated) {
		t.Fatalf("Progress was called %d times for %d tenants migrated", got, res1.Migrated)
	}
	if v2 := rb.count(t, "SELECT count(*) FROM pgtenant.tenants WHERE version = $1", schema.CurrentVersion); v2 != res1.Migrated {
		t.Fatalf("registry has %d tenants at the current version, first run migrated %d", v2, res1.Migrated)
	}
	if got := tuned(); got != res1.Migrated {
		t.Fatalf("%d tables migrated, registry says %d", got, res1.Migrated)
	}

	// Second run resumes: skips what is current, migrates the rest.
	res2, err := r.MigrateAll(bg, tenant.BatchOptions{Concurrency: 8})
	if err != nil || len(res2.Failed) != 0 {
		t.Fatalf("resumed MigrateAll: %+v, %v", res2, err)
	}
	if res2.Current != res1.Migrated || res2.Migrated != n-res1.Migrated {
		t.Fatalf("resumed run: %+v after first run %+v", res2, res1)
	}
	if got := tuned(); got != n {
		t.Fatalf("%d of %d tables migrated", got, n)
	}
	// A third run has nothing to do.
	res3, err := r.MigrateAll(bg, tenant.BatchOptions{})
	if err != nil || res3.Migrated != 0 || res3.Current != n {
		t.Fatalf("third run: %+v, %v", res3, err)
	}
	// Migrated tenants still work.
	ctxT := tenant.WithTenant(bg, fmt.Sprintf("tenant-%05d", n-1))
	if _, err := r.StoreData(ctxT, "after", bodyReader(1, 10)); err != nil {
		t.Fatal(err)
	}
}

// TestTenantTablesLoseTheCreatedIndex checks migration 6 in every mode: a
// new tenant's message table has no created index (no statement reads it),
// a tenant created before version 6 loses it in MigrateAll (per-tenant
// modes) or when a Factory opens on its shared table, and its data stays.
func TestTenantTablesLoseTheCreatedIndex(t *testing.T) {
	t.Parallel()
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant, schema.SharedTable} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			rb := setupRouter(t, mode)
			bg := context.Background()
			r := rb.router(t)
			ctx := tenant.WithTenant(bg, "acme")
			conformance.MustStore(t, r, ctx, "kept", []byte("body"))
			loc, err := r.Locate("acme")
			if err != nil {
				t.Fatal(err)
			}
			indexes := func() int {
				return rb.count(t, `SELECT count(*) FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
					ON a.attrelid = i.indrelid AND a.attnum = i.indkey[i.indnatts - 1]
					WHERE i.indrelid = $1::pg_catalog.regclass AND a.attname = 'created'`, loc.Table.Sanitize())
			}
			if n := indexes(); n != 0 {
				t.Fatalf("a new tenant's message table has %d created indexes", n)
			}

			// The tenant as version 5 left it.
			lead := ""
			if mode == schema.SharedTable {
				lead = schema.TenantColumn + ", "
			}
			idx := schema.Table{Schema: loc.Table.Schema, Name: "idx_" + loc.Table.Name + "_created"}
			if _, err := rb.pool.Exec(bg, "CREATE INDEX "+pgx.Identifier{idx.Name}.Sanitize()+" ON "+loc.Table.Sanitize()+" ("+lead+"created)"); err != nil {
				t.Fatal(err)
			}
			if _, err := rb.pool.Exec(bg, "UPDATE pgtenant.tenants SET version = 5"); err != nil {
				t.Fatal(err)
			}
			if indexes() != 1 {
				t.Fatal("the version-5 index was not made")
			}
			if mode == schema.SharedTable {
				// A Factory opening on the shared table upgrades it (a
				// fresh one: rb.factory's Opens share its first setup).
				newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(2, 0))
			} else {
				res, err := r.MigrateAll(bg, tenant.BatchOptions{})
				if err != nil || res.Migrated != 1 {
					t.Fatalf("MigrateAll: %+v, %v", res, err)
				}
			}
			if n := indexes(); n != 0 {
				t.Fatalf("after the upgrade the message table has %d created indexes", n)
			}
			conformance.MustRead(t, r, ctx, "kept", []byte("body"))
		})
	}
}
