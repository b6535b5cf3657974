package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	datastorage "schneider.vip/retryspool/storage/data"
)

// backendBundle is what a backend test needs: a database, a pool on it
// (search_path ”) and a fresh table name per call of next.
type backendBundle struct {
	dsn  string
	pool *pgxpool.Pool
	n    atomic.Int64
}

func setupBackend(t *testing.T) *backendBundle {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	return &backendBundle{dsn: dsn, pool: pgtest.NewPool(t, dsn, nil)}
}

func (bb *backendBundle) factory() *backend.Factory {
	return backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName(fmt.Sprintf("data_%d", bb.n.Add(1)))
}

func TestBackendConformance(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
		b, err := bb.factory().Create()
		if err != nil {
			t.Fatal(err)
		}
		return b, context.Background()
	})
}

func TestBackendOwnPoolConformance(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
		b, err := backend.NewFactory(bb.dsn).WithConnectionLimits(3, 0).
			WithTableName(fmt.Sprintf("own_%d", bb.n.Add(1))).Create()
		if err != nil {
			t.Fatal(err)
		}
		return b, context.Background()
	})
}

func TestBackendTableNames(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	ctx := context.Background()

	t.Run("SchemaQualified", func(t *testing.T) {
		b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("queue.data"))
		conformance.MustStore(t, b, ctx, "m", []byte("in queue.data"))
		var n int
		if err := bb.pool.QueryRow(ctx, `SELECT count(*) FROM "queue"."data"`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("rows in queue.data: %d, %v", n, err)
		}
	})

	t.Run("Hostile", func(t *testing.T) {
		for _, name := range []string{
			"data; DROP TABLE x", `da"ta`, "data--", "1data", "a.b.c", "pg_catalog.data", "", ".data",
			strings.Repeat("t", 64), "dätä",
			"pgtenant.tenants", "t_acme", "public.c_data", "m_data", "h_x.data", // names pgtenant derives or owns
		} {
			_, err := backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName(name).Create()
			if !errors.Is(err, schema.ErrInvalidName) {
				t.Errorf("WithTableName(%q).Create() = %v, want ErrInvalidName", name, err)
			}
		}
	})

	t.Run("ExistingLegacyTable", func(t *testing.T) {
		// RetrySpool's original backend created its table with unquoted
		// names; pgtenant folds case the same way and uses it as it is.
		for _, stmt := range []string{
			`CREATE TABLE public.Legacy_Data (message_id VARCHAR(255) PRIMARY KEY, data BYTEA NOT NULL,
				size BIGINT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT NOW(), updated TIMESTAMPTZ NOT NULL DEFAULT NOW())`,
			`CREATE INDEX idx_Legacy_Data_created ON public.Legacy_Data(created)`,
			`INSERT INTO public.Legacy_Data (message_id, data, size) VALUES ('old', 'legacy body', 11)`,
		} {
			if _, err := bb.pool.Exec(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("Legacy_Data"))
		conformance.MustRead(t, b, ctx, "old", []byte("legacy body"))
		var created1, created2 string
		_ = bb.pool.QueryRow(ctx, `SELECT created::text FROM public.legacy_data WHERE message_id = 'old'`).Scan(&created1)
		conformance.MustStore(t, b, ctx, "old", []byte("replaced"))
		var updatedAfter bool
		if err := bb.pool.QueryRow(ctx, `SELECT created::text, updated > created FROM public.legacy_data WHERE message_id = 'old'`).
			Scan(&created2, &updatedAfter); err != nil {
			t.Fatal(err)
		}
		if created1 != created2 || !updatedAfter {
			t.Errorf("upsert: created %s -> %s, updated > created: %v; want created kept and updated refreshed", created1, created2, updatedAfter)
		}
	})

	t.Run("Layout", func(t *testing.T) {
		newBackend(t, backend.NewFactory(bb.dsn).WithPool(bb.pool).WithTableName("layout_check"))
		rows, err := bb.pool.Query(ctx, `SELECT column_name || ' ' || data_type || ' ' || is_nullable
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'layout_check' ORDER BY ordinal_position`)
		if err != nil {
			t.Fatal(err)
		}
		cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		want := "message_id character varying NO,data bytea NO,size bigint NO,created timestamp with time zone NO,updated timestamp with time zone NO,chunked_version bigint YES"
		if got := strings.Join(cols, ","); got != want {
			t.Errorf("columns:\n got %s\nwant %s", got, want)
		}
		var idx []string
		rows, _ = bb.pool.Query(ctx, `SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'layout_check' ORDER BY 1`)
		if idx, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(idx, ","); got != "idx_layout_check_created,idx_layout_check_updated,layout_check_pkey" {
			t.Errorf("indexes: %s", got)
		}
	})
}

func TestBackendConcurrentCreate(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	// Several processes starting at once: independent pools, one table.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			b, err := backend.NewFactory(bb.dsn).WithConnectionLimits(2, 0).WithTableName("raced.data").Create()
			if err == nil {
				err = b.Close()
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestBackendPoolOwnership(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	ctx := context.Background()
	b, err := bb.factory().Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bb.pool.Ping(ctx); err != nil {
		t.Fatalf("caller's pool closed by Backend.Close: %v", err)
	}

	own, err := backend.NewFactory(bb.dsn).WithConnectionLimits(2, 0).WithTableName("owned").Create()
	if err != nil {
		t.Fatal(err)
	}
	pool := own.(*backend.Backend).Pool()
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pool.Ping(ctx); err == nil {
		t.Fatal("own pool still open after Close")
	}
}

func TestBackendRefusesTextModes(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	for _, m := range []pgx.QueryExecMode{pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
		if _, err := bb.factory().WithExecMode(m).Create(); !errors.Is(err, backend.ErrTextMode) {
			t.Errorf("mode %v: Create = %v, want ErrTextMode", m, err)
		}
	}
	b := newBackend(t, bb.factory().WithExecMode(pgx.QueryExecModeCacheDescribe))
	conformance.MustStore(t, b, context.Background(), "d", []byte("describe mode"))
	conformance.MustRead(t, b, context.Background(), "d", []byte("describe mode"))
}

func TestBackendInvalidIDsRunNoSQL(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	pool := pgtest.NewPool(t, bb.dsn, nil)
	b, err := backend.NewFactory(bb.dsn).WithPool(pool).WithTableName("nosql").Create()
	if err != nil {
		t.Fatal(err)
	}
	pool.Close() // any SQL would now fail with "closed pool"
	ctx := context.Background()
	for name, id := range conformance.InvalidMessageIDs {
		_, err := b.StoreData(ctx, id, strings.NewReader("x"))
		if !errors.Is(err, backend.ErrInvalidMessageID) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestBackendVanishedTable(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	ctx := context.Background()
	b := newBackend(t, bb.factory().WithTableName("vanish"))
	conformance.MustStore(t, b, ctx, "m", []byte("x"))
	if _, err := bb.pool.Exec(ctx, `DROP TABLE public.vanish`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.StoreData(ctx, "m", strings.NewReader("y")); !errors.Is(err, backend.ErrTableMissing) {
		t.Errorf("StoreData on a dropped table = %v, want ErrTableMissing", err)
	}
}

func TestBackendStalePlanRetried(t *testing.T) {
	t.Parallel()
	bb := setupBackend(t)
	ctx := context.Background()
	pool := pgtest.NewPool(t, bb.dsn, func(c *pgxpool.Config) { c.MaxConns = 1 })
	b := newBackend(t, backend.NewFactory(bb.dsn).WithPool(pool).WithTableName("stale"))
	conformance.MustStore(t, b, ctx, "m", []byte("body"))
	conformance.MustRead(t, b, ctx, "m", []byte("body")) // prepares the SELECT on the only connection
	// Changing the column's type changes the prepared SELECT's result type:
	// the server answers 0A000 once, pgx drops the statement, the retry works.
	if _, err := pool.Exec(ctx, `ALTER TABLE public.stale ALTER COLUMN data TYPE text USING encode(data, 'escape')`); err != nil {
		t.Fatal(err)
	}
	conformance.MustRead(t, b, ctx, "m", []byte("body"))
}
