package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgtenant/pgtenant/backend"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/internal/pgtest"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	datastorage "schneider.vip/retryspool/storage/data"
)

// hostileObjects shadow, in schema public, the operators, functions and
// aggregates that pgtenant's statements use, the way an attacker with
// CREATE on public could (the CVE-2018-1058 class). Each records its call
// in public.stolen and answers wrongly: = always true, now() in 2000,
// count and sum 0, to_regclass NULL.
var hostileObjects = []string{
	`CREATE TABLE public.stolen (what text, a text, b text)`,
	`CREATE FUNCTION public.evil_eq(a varchar, b varchar) RETURNS bool LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('=varchar', a, b); SELECT true $$`,
	`CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.evil_eq)`,
	`CREATE FUNCTION public.evil_eq_text(a text, b text) RETURNS bool LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('=text', a, b); SELECT true $$`,
	`CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_eq_text)`,
	`CREATE FUNCTION public.evil_ne(a bigint, b bigint) RETURNS bool LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('<>', a::text, b::text); SELECT false $$`,
	`CREATE OPERATOR public.<> (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.evil_ne)`,
	`CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('now', '', ''); SELECT '2000-01-01'::timestamptz $$`,
	`CREATE FUNCTION public.evil_count(bigint) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('count', '', ''); SELECT 0::bigint $$`,
	`CREATE AGGREGATE public.count(*) (SFUNC = public.evil_count, STYPE = bigint, INITCOND = '0')`,
	`CREATE FUNCTION public.evil_sum(bigint, bigint) RETURNS bigint LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('sum', '', ''); SELECT 0::bigint $$`,
	`CREATE AGGREGATE public.sum(bigint) (SFUNC = public.evil_sum, STYPE = bigint, INITCOND = '0')`,
	`CREATE FUNCTION public.pg_advisory_xact_lock(text) RETURNS void LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('lock', $1, '') $$`,
	`CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('to_regclass', $1, ''); SELECT NULL::regclass $$`,
	`CREATE FUNCTION public.set_config(text, text, boolean) RETURNS text LANGUAGE sql AS
		$$ INSERT INTO public.stolen VALUES ('set_config', $1, $2); SELECT $2 $$`,
}

// withSearchPath returns dsn with search_path set to path, or without one
// (the server's default "$user", public) when path is empty.
func withSearchPath(t *testing.T, dsn, path string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Del("search_path")
	if path != "" {
		q.Set("search_path", path)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestSearchPathHijack runs the conformance suite and the administration
// calls in every mode against a database whose public schema shadows the
// operators and functions pgtenant uses, with the server's default
// search_path, with search_path=public,pg_catalog, and on a caller-owned
// pool with the latter. Nothing may call the shadowing objects, and every
// answer must be right: counts, quotas, purge times.
func TestSearchPathHijack(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	inspect := pgtest.NewPool(t, dsn, nil)
	bg := context.Background()
	for _, stmt := range hostileObjects {
		if _, err := inspect.Exec(bg, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	paths := map[string]string{"default": "", "public-first": "public,pg_catalog"}
	for name, path := range paths {
		hostile := withSearchPath(t, dsn, path)
		for _, mode := range modes {
			for _, owned := range []bool{false, true} {
				label := fmt.Sprintf("%s/%v/own-pool=%v", name, mode, !owned)
				table := fmt.Sprintf("hijack_%s_%d_%v", strings.ReplaceAll(name, "-", "_"), int(mode), owned)
				f := tenant.NewFactory(hostile).WithIsolation(mode).WithTableName(table)
				if owned {
					pool := pgtest.NewPool(t, hostile, func(c *pgxpool.Config) { c.AfterConnect = nil })
					f = f.WithPool(pool)
				} else {
					f = f.WithConnectionLimits(4, 0)
				}
				t.Run(label, func(t *testing.T) {
					var n atomic.Int64
					conformance.Exercise(t, func(t *testing.T) (datastorage.Backend, context.Context) {
						r, err := f.Create()
						if err != nil {
							t.Fatal(err)
						}
						return r, tenant.WithTenant(bg, fmt.Sprintf("tenant-%d", n.Add(1)))
					})
					t.Run("Administration", func(t *testing.T) {
						t.Parallel()
						hijackAdministration(t, f, mode, table) // TablePerTenant variants share a store: one tenant each
					})
				})
			}
		}
	}
	t.Cleanup(func() {
		rows, err := inspect.Query(bg, "SELECT what, a, b FROM public.stolen LIMIT 5")
		if err != nil {
			t.Fatal(err)
		}
		calls, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ What, A, B string }])
		if err != nil {
			t.Fatal(err)
		}
		if len(calls) > 0 {
			t.Errorf("shadowing objects in public were called: %+v", calls)
		}
	})
}

// hijackAdministration checks the answers that shadowed aggregates and
// functions would falsify: exact stats, quotas, purge times, migrations,
// drops.
func hijackAdministration(t *testing.T, f *tenant.Factory, mode schema.Isolation, id string) {
	r := newHost(t, f.WithQuota(1<<20, 3))
	bg := context.Background()
	ctx := tenant.WithTenant(bg, id)
	for i := range 3 {
		conformance.MustStore(t, r, ctx, fmt.Sprint("m", i), bytes.Repeat([]byte("x"), 100))
	}
	if _, err := r.StoreData(ctx, "m3", strings.NewReader("one too many")); !errors.Is(err, tenant.ErrQuotaExceeded) {
		t.Fatalf("fourth message under a quota of 3 = %v, want ErrQuotaExceeded", err)
	}
	if st, err := r.Stats(bg, id); err != nil || st.Messages != 3 || st.Bytes != 300 {
		t.Fatalf("Stats = %+v, %v; want 3 messages, 300 bytes", st, err)
	}
	if n, err := r.Purge(bg, id, time.Hour); err != nil || n != 0 {
		t.Fatalf("Purge of fresh messages = %d, %v; want 0", n, err)
	}
	over, err := r.Overview(bg)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(over, func(st tenant.Stats) bool { return st.Tenant == id })
	if i < 0 || (mode == schema.SharedTable && (over[i].Messages != 3 || over[i].Bytes != 300)) {
		t.Fatalf("Overview = %+v", over)
	}
	if _, err := r.MigrateAll(bg, tenant.BatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Drop(bg, id); err != nil {
		t.Fatal(err)
	}
	conformance.MustNotFind(t, r, ctx, "m0")
	if _, err := r.StoreData(ctx, "m0", strings.NewReader("x")); !errors.Is(err, tenant.ErrTenantDeleted) {
		t.Fatalf("write after Drop = %v, want ErrTenantDeleted", err)
	}
}

// TestTombstoneHoldsWhenDropFails keeps Drop's second step from finishing
// (a streaming reader holds the tenant's table on host A; on host B a
// streaming write spans the drop) and checks, on both hosts, that the
// tombstone alone refuses every write and hides every message. In
// SharedTable the drop takes no table lock, so the reader does not stop it.
func TestTombstoneHoldsWhenDropFails(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		hostA := newHost(t, rb.factory.WithLockTimeout(300*time.Millisecond))
		hostB := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(4, 0))
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "leaving")
		if _, err := hostA.StoreData(ctx, "big", bodyReader(1, 2*chunk+1)); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, hostB, ctx, "small", []byte("cached on B"))

		reader, err := hostA.GetDataReader(ctx, "big") // holds the table in a transaction
		if err != nil {
			t.Fatal(err)
		}
		defer reader.Close()
		if _, err := reader.Read(make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		spanning, err := hostB.GetDataWriter(ctx, "spanning")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(spanning, bodyReader(2, 2*chunk)); err != nil { // its transaction is open
			t.Fatal(err)
		}

		err = hostA.Drop(bg, "leaving")
		if mode == schema.SharedTable {
			if err != nil {
				t.Fatalf("Drop in SharedTable = %v: it must not wait for table locks", err)
			}
		} else if err == nil || !strings.Contains(err.Error(), "Drop again") {
			t.Fatalf("Drop with the table held = %v, want a failed second step", err)
		}
		for name, r := range map[string]*host{"A": hostA, "B": hostB} {
			if _, err := r.StoreData(ctx, "late", strings.NewReader("late write")); !errors.Is(err, tenant.ErrTenantDeleted) {
				t.Errorf("host %s: write after the tombstone = %v, want ErrTenantDeleted", name, err)
			}
			w, err := r.GetDataWriter(ctx, "late-writer")
			if err == nil {
				_, _ = w.Write([]byte("late"))
				err = w.Close()
			}
			if !errors.Is(err, tenant.ErrTenantDeleted) {
				t.Errorf("host %s: writer after the tombstone = %v, want ErrTenantDeleted", name, err)
			}
			for _, id := range []string{"small", "big", "late"} {
				conformance.MustNotFind(t, r, ctx, id)
			}
			if err := r.DeleteData(ctx, "small"); !errors.Is(err, datastorage.ErrDataNotFound) {
				t.Errorf("host %s: delete after the tombstone = %v, want ErrDataNotFound", name, err)
			}
			if st, err := r.Stats(bg, "leaving"); err != nil || st.Messages != 0 {
				t.Errorf("host %s: Stats after the tombstone = %+v, %v", name, st, err)
			}
		}
		if err := spanning.Close(); !errors.Is(err, tenant.ErrTenantDeleted) {
			t.Fatalf("a streaming write spanning the drop = %v, want ErrTenantDeleted", err)
		}
		_ = reader.Close()
		if mode != schema.SharedTable {
			if err := hostA.Drop(bg, "leaving"); err != nil {
				t.Fatalf("Drop again: %v", err)
			}
		}
		// Provision brings the tenant back empty.
		if err := hostB.Provision(bg, "leaving"); err != nil {
			t.Fatal(err)
		}
		if st, err := hostB.Stats(bg, "leaving"); err != nil || st.Messages != 0 {
			t.Fatalf("a provisioned tenant holds %+v, %v", st, err)
		}
		conformance.MustStore(t, hostB, ctx, "small", []byte("back"))
		conformance.MustRead(t, hostA, ctx, "small", []byte("back"))
	})
}

// TestProvisionAfterFailedDropStartsEmpty provisions a tenant whose drop
// failed halfway: what the drop left is removed first.
func TestProvisionAfterFailedDropStartsEmpty(t *testing.T) {
	t.Parallel()
	for _, mode := range []schema.Isolation{schema.SchemaPerTenant, schema.TablePerTenant} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			rb := setupRouter(t, mode)
			r := newHost(t, rb.factory.WithLockTimeout(200*time.Millisecond))
			bg := context.Background()
			ctx := tenant.WithTenant(bg, "phoenix")
			conformance.MustStore(t, r, ctx, "old", []byte("before the drop"))
			loc, _ := r.Locate("phoenix")
			tx, err := rb.pool.Begin(bg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(bg, "SELECT count(*) FROM "+loc.Table.Sanitize()); err != nil {
				t.Fatal(err)
			}
			if err := r.Drop(bg, "phoenix"); err == nil {
				t.Fatal("Drop succeeded under the lock")
			}
			_ = tx.Rollback(bg)
			if n := rb.count(t, "SELECT count(*) FROM "+loc.Table.Sanitize()); n != 1 {
				t.Fatalf("the failed drop left %d rows, the test needs 1", n)
			}
			if err := r.Provision(bg, "phoenix"); err != nil {
				t.Fatal(err)
			}
			conformance.MustNotFind(t, r, ctx, "old")
			if n := rb.count(t, "SELECT count(*) FROM "+loc.Table.Sanitize()); n != 0 {
				t.Fatalf("the provisioned tenant holds %d old rows", n)
			}
		})
	}
}

// TestSharedDropDoesNotBlockOthers drops a SharedTable tenant while another
// tenant has a large write in flight: the drop finishes at once, the other
// tenant's inline writes go on in normal time, and its streaming write
// commits. The dropped tenant's own write in flight is refused.
func TestSharedDropDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SharedTable)
	r := newHost(t, rb.factory.WithLockTimeout(5*time.Second))
	bg := context.Background()
	a, b := tenant.WithTenant(bg, "leaving"), tenant.WithTenant(bg, "staying")
	for i := range 20 {
		conformance.MustStore(t, r, a, fmt.Sprint("a", i), []byte("a"))
	}
	if _, err := r.StoreData(a, "a-big", bodyReader(3, 2*chunk+5)); err != nil {
		t.Fatal(err)
	}
	conformance.MustStore(t, r, b, "b0", []byte("b"))
	open := func(ctx context.Context, id string, seed uint64) io.WriteCloser {
		w, err := r.GetDataWriter(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, bodyReader(seed, 2*chunk)); err != nil {
			t.Fatal(err)
		}
		return w
	}
	bStream, aStream := open(b, "b-stream", 1), open(a, "a-stream", 2)

	dctx, cancel := context.WithTimeout(bg, 3*time.Second)
	defer cancel()
	if err := r.Drop(dctx, "leaving"); err != nil {
		t.Fatalf("Drop with another tenant's write in flight = %v", err)
	}
	wctx, wcancel := context.WithTimeout(b, 2*time.Second)
	defer wcancel()
	for i := range 5 {
		if _, err := r.StoreData(wctx, fmt.Sprint("b-during", i), strings.NewReader("b")); err != nil {
			t.Fatalf("the other tenant's inline write during a drop = %v", err)
		}
	}
	if _, err := io.Copy(bStream, bodyReader(9, 10)); err != nil {
		t.Fatal(err)
	}
	if err := bStream.Close(); err != nil {
		t.Fatalf("the other tenant's streaming write across a drop = %v", err)
	}
	if err := aStream.Close(); !errors.Is(err, tenant.ErrTenantDeleted) {
		t.Fatalf("the dropped tenant's streaming write = %v, want ErrTenantDeleted", err)
	}
	if n := rb.count(t, "SELECT count(*) FROM public.retryspool_data WHERE tenant_id = 'leaving'"); n != 0 {
		t.Fatalf("%d of the dropped tenant's rows left", n)
	}
	if n := rb.count(t, "SELECT count(*) FROM public.c_retryspool_data WHERE tenant_id = 'leaving'"); n != 0 {
		t.Fatalf("%d of the dropped tenant's chunks left", n)
	}
	conformance.MustRead(t, r, b, "b0", []byte("b"))
}

// TestRouterCloseWithOpenStreams closes the last Router of a Factory while
// a chunked reader and a chunked writer are open: Close returns at once,
// the streams fail with ErrClosed, the message being written keeps its old
// version, and the pool's connections are gone.
func TestRouterCloseWithOpenStreams(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		ctx := tenant.WithTenant(context.Background(), "streams")
		closeEndsStreams(t, rb.router(t), ctx, func() datastorage.Backend {
			return newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(1, 0))
		})
		waitFor(t, "the closed Router's connections to go", func() bool { return rb.serverConns(t) <= 1 })
	})
}

// TestBackendCloseWithOpenStreams is TestRouterCloseWithOpenStreams for
// the single-table backend: its Close ends open streams too, instead of
// waiting for them.
func TestBackendCloseWithOpenStreams(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	open := func() datastorage.Backend {
		b := newBackend(t, backend.NewFactory(dsn).WithTableName("closing"))
		return b
	}
	closeEndsStreams(t, open(), context.Background(), open)
}

// closeEndsStreams stores a large body in b, opens a reader and a writer
// on it, and closes b: Close returns at once, the streams fail with
// ErrClosed, and another backend (reopen) reads the old body intact.
func closeEndsStreams(t *testing.T, b datastorage.Backend, ctx context.Context, reopen func() datastorage.Backend) {
	t.Helper()
	if _, err := b.StoreData(ctx, "big", bodyReader(1, 3*chunk)); err != nil {
		t.Fatal(err)
	}
	reader, err := b.GetDataReader(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Read(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	writer, err := b.GetDataWriter(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(writer, bodyReader(2, 2*chunk)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		_ = reader.Close() // let Close finish, then fail
		_ = writer.Close()
		<-closed
		t.Fatal("Close did not return within 20 s with streams open")
	}
	if _, err := io.ReadAll(reader); !errors.Is(err, tenant.ErrClosed) {
		t.Errorf("Read after Close = %v, want ErrClosed", err)
	}
	if _, err := writer.Write([]byte("more")); !errors.Is(err, tenant.ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
	if err := writer.Close(); !errors.Is(err, tenant.ErrClosed) {
		t.Errorf("writer Close after Close = %v, want ErrClosed", err)
	}
	_ = reader.Close()
	mustMatch(t, reopen(), ctx, "big", 1, 3*chunk)
}

// TestQuotaExact writes from 32 goroutines at once, on one host and on two,
// against a byte bound and a message bound: exactly as many writes as fit
// are stored, the others refused.
func TestQuotaExact(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		const size = 64 << 10
		hosts := func(maxBytes, maxMsgs int64) []*host {
			var rs []*host
			for range 2 {
				r := newHost(t, tenant.NewFactory(rb.dsn).WithIsolation(mode).WithConnectionLimits(8, 0).WithQuota(maxBytes, maxMsgs))
				rs = append(rs, r)
			}
			return rs
		}
		race := func(rs []*host, tenantID string, body func(i int) io.Reader) (ok, refused int) {
			var (
				wg  sync.WaitGroup
				mu  sync.Mutex
				bad []error
			)
			ctx := tenant.WithTenant(context.Background(), tenantID)
			for i := range 32 {
				wg.Go(func() {
					_, err := rs[i%len(rs)].StoreData(ctx, fmt.Sprint("m", i), body(i))
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case errors.Is(err, tenant.ErrQuotaExceeded):
						refused++
					default:
						bad = append(bad, err)
					}
				})
			}
			wg.Wait()
			for _, err := range bad {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					t.Errorf("%v: %s %s", err, pgErr.Detail, pgErr.Where)
					continue
				}
				t.Error(err)
			}
			return ok, refused
		}
		small := func(int) io.Reader { return bytes.NewReader(bytes.Repeat([]byte("q"), size)) }
		for _, n := range []int{1, 2} {
			rs := hosts(1<<20, 0)[:n]
			id := fmt.Sprintf("bytes-%d-hosts", n)
			if ok, refused := race(rs, id, small); ok != 16 || refused != 16 {
				t.Errorf("%s: 32 writes of 64 KiB under 1 MiB: %d stored, %d refused; want 16 and 16", id, ok, refused)
			}
			if st, err := rs[0].Stats(context.Background(), id); err != nil || st.Bytes != 1<<20 {
				t.Errorf("%s: %+v, %v; want exactly 1 MiB stored", id, st, err)
			}
		}
		rs := hosts(0, 4)
		if ok, refused := race(rs, "messages", small); ok != 4 || refused != 28 {
			t.Errorf("32 writers under a bound of 4 messages: %d stored, %d refused", ok, refused)
		}
		// Large (chunked) bodies of 2 MiB under 5 MiB: two fit.
		rs = hosts(5<<20, 0)
		if ok, refused := race(rs, "large", func(i int) io.Reader { return bodyReader(uint64(i), 2<<20) }); ok != 2 || refused != 30 {
			t.Errorf("32 writers of 2 MiB under 5 MiB: %d stored, %d refused", ok, refused)
		}
		// Deleting frees room, exactly.
		ctx := tenant.WithTenant(context.Background(), "messages")
		st, _ := rs[0].Stats(context.Background(), "messages")
		if st.Messages != 4 {
			t.Fatalf("messages tenant holds %d", st.Messages)
		}
		r := hosts(0, 4)[0]
		ids := []string{}
		for i := range 32 {
			if _, err := conformance.Read(t, r, ctx, fmt.Sprint("m", i)); err == nil {
				ids = append(ids, fmt.Sprint("m", i))
			}
		}
		if err := r.DeleteData(ctx, ids[0]); err != nil {
			t.Fatal(err)
		}
		conformance.MustStore(t, r, ctx, "after-delete", []byte("fits"))
		if _, err := r.StoreData(ctx, "one-more", strings.NewReader("x")); !errors.Is(err, tenant.ErrQuotaExceeded) {
			t.Fatalf("a fifth message = %v", err)
		}
	})
}

// TestCancelledStreamingReadReturnsContextError cancels a streaming read
// halfway: once the reader has let go of its connection, reads return the
// context's error, not ErrClosed.
func TestCancelledStreamingReadReturnsContextError(t *testing.T) {
	t.Parallel()
	for _, c := range streamBackends(t, backend.DefaultMaxMessageSize) {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.b.StoreData(c.ctx, "big", bodyReader(1, 8<<20)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(c.ctx)
			r, err := c.b.GetDataReader(ctx, "big")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			cancel()
			_, err = io.Copy(io.Discard, r)
			if !errors.Is(err, context.Canceled) || errors.Is(err, tenant.ErrClosed) {
				t.Fatalf("read after cancel = %v, want context.Canceled", err)
			}
		})
	}
}

// TestErrorMessagesAreClean collects errors from many failure paths: none
// holds a NUL byte or a doubled "pgtenant: pgtenant:" prefix.
func TestErrorMessagesAreClean(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	r := rb.router(t)
	bg := context.Background()
	cancelled, cancel := context.WithCancel(tenant.WithTenant(bg, "never-created"))
	cancel()
	var errs []error
	collect := func(err error) { errs = append(errs, err) }
	_, err := r.StoreData(cancelled, "m", strings.NewReader("x")) // waits for the tenant's creation
	collect(err)
	_, err = r.StoreData(tenant.WithTenant(bg, "a b"), "m", strings.NewReader("x"))
	collect(err)
	_, err = r.StoreData(bg, "m", strings.NewReader("x"))
	collect(err)
	_, err = r.StoreData(tenant.WithTenant(bg, "ok"), "", strings.NewReader("x"))
	collect(err)
	_, err = r.GetDataReader(tenant.WithTenant(bg, "nobody"), "m")
	collect(err)
	if err := r.Drop(bg, "gone"); err != nil {
		t.Fatal(err)
	}
	_, err = r.StoreData(tenant.WithTenant(bg, "gone"), "m", strings.NewReader("x"))
	collect(err)
	_, err = openHost(tenant.NewFactory("postgres://nobody@127.0.0.1:1/x?connect_timeout=2"))
	collect(err)
	_, err = openHost(tenant.NewFactory(rb.dsn).WithTableName("t_reserved"))
	collect(err)
	for _, err := range errs {
		if err == nil {
			t.Fatal("a failure path returned nil")
		}
		msg := err.Error()
		if strings.ContainsRune(msg, 0) || strings.Contains(msg, "pgtenant: pgtenant:") {
			t.Errorf("error message %q", msg)
		}
	}
}

// TestRefusedRouterLeavesNoMetricCallback asks for a Router in a text exec
// mode with a meter provider: it is refused, and no pool metric callback is
// left registered behind.
func TestRefusedRouterLeavesNoMetricCallback(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	if _, err := openHost(rb.factory.WithMeterProvider(mp).WithExecMode(pgx.QueryExecModeExec)); !errors.Is(err, backend.ErrTextMode) {
		t.Fatalf("text mode = %v, want ErrTextMode", err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if _, found := sum(rm, "pgtenant.pool.acquire.waits"); found {
		t.Fatal("a refused Router left its pool metric callback registered")
	}
}

// TestTombstoneWaitsForWritesInFlight holds a write in flight (its message
// row is locked by another session after the write's guard has passed) and
// drops the tenant: the tombstone waits for the write, so the write is
// acknowledged before the tombstone, never after it, and the drop then
// removes it.
func TestTombstoneWaitsForWritesInFlight(t *testing.T) {
	t.Parallel()
	forEachMode(t, func(t *testing.T, mode schema.Isolation) {
		rb := setupRouter(t, mode)
		r := rb.router(t)
		bg := context.Background()
		ctx := tenant.WithTenant(bg, "busy")
		conformance.MustStore(t, r, ctx, "m", []byte("v1"))
		loc, _ := r.Locate("busy")
		where := "message_id = 'm'"
		if loc.Partition != "" {
			where += " AND tenant_id = 'busy'"
		}
		blocker, err := rb.pool.Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer blocker.Rollback(bg)
		if _, err := blocker.Exec(bg, "SELECT 1 FROM "+loc.Table.Sanitize()+" WHERE "+where+" FOR UPDATE"); err != nil {
			t.Fatal(err)
		}
		waiting := func(n int) func() bool {
			return func() bool {
				return rb.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) >= n
			}
		}
		wrote := make(chan error, 1)
		go func() {
			_, err := r.StoreData(ctx, "m", strings.NewReader("v2"))
			wrote <- err
		}()
		waitFor(t, "the write to wait for the message row", waiting(1))
		dropped := make(chan error, 1)
		go func() { dropped <- r.Drop(bg, "busy") }()
		waitFor(t, "the drop to wait too", waiting(2))
		if state := rb.count(t, "SELECT count(*) FROM pgtenant.tenants WHERE tenant_id = 'busy' AND state = 'active'"); state != 1 {
			t.Fatal("the tombstone committed while a write that passed its guard was still in flight")
		}
		if err := blocker.Rollback(bg); err != nil {
			t.Fatal(err)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("the write in flight = %v, want it acknowledged before the tombstone", err)
		}
		if err := <-dropped; err != nil {
			t.Fatal(err)
		}
		if mode == schema.SharedTable {
			if n := rb.count(t, "SELECT count(*) FROM public.retryspool_data WHERE tenant_id = 'busy'"); n != 0 {
				t.Fatalf("%d rows of the dropped tenant left", n)
			}
		}
		conformance.MustNotFind(t, r, ctx, "m")
	})
}
