package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// quietP99 runs serial store+read+delete cycles for a quiet tenant while a
// noisy one floods the same router from 64 goroutines, and returns the quiet
// tenant's p99 and p50 cycle latency.
func quietP99(t testing.TB, f *tenant.Factory, cycles int) (p99, p50 time.Duration) {
	r := newHost(t, f)
	bg := context.Background()
	noisy, quiet := tenant.WithTenant(bg, "noisy"), tenant.WithTenant(bg, "quiet")
	body := bytes.Repeat([]byte("n"), 16<<10)
	for _, ctx := range []context.Context{noisy, quiet} { // create both first
		if err := cycle(ctx, r, "warm", body); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			for i := 0; i < 100_000; i++ { // bounded; stops when the quiet tenant is done
				select {
				case <-stop:
					return
				default:
				}
				if err := cycle(noisy, r, fmt.Sprintf("n%d-%d", g, i), body); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	lat := make([]time.Duration, 0, cycles)
	for i := range cycles {
		start := time.Now()
		if err := cycle(quiet, r, fmt.Sprintf("q%d", i), []byte("quiet")); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(lat)
	return percentile(lat, 99), percentile(lat, 50)
}

// inFlight is a pgx tracer that counts, per tenant (read from the query's
// context), the statements in flight at once, and keeps the maximum.
type inFlight struct {
	mu       sync.Mutex
	cur, max map[string]int
}

func newInFlight() *inFlight { return &inFlight{cur: map[string]int{}, max: map[string]int{}} }

func (f *inFlight) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	id, _ := tenant.FromContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur[id]++
	f.max[id] = max(f.max[id], f.cur[id])
	return ctx
}

func (f *inFlight) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	id, _ := tenant.FromContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur[id]--
}

func (f *inFlight) peak(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max[id]
}

// TestTenantConcurrencyFairness floods one tenant from 64 goroutines on a
// pool of 8 with WithTenantConcurrency(4): the flood never has more than 4
// statements in flight (observed on the connections by a tracer), so 4
// connections stay free for the quiet tenant, whose cycles all complete.
// The latency effect is measured by BenchmarkTenantFairness.
func TestTenantConcurrencyFairness(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	tracer := newInFlight()
	r := newHost(t, tenant.NewFactory(rb.dsn).WithConnectionLimits(8, 8).WithTenantConcurrency(4).WithQueryTracer(tracer))
	bg := context.Background()
	noisy, quiet := tenant.WithTenant(bg, "noisy"), tenant.WithTenant(bg, "quiet")
	for _, ctx := range []context.Context{noisy, quiet} {
		if err := cycle(ctx, r, "warm", []byte("w")); err != nil {
			t.Fatal(err)
		}
	}
	body := bytes.Repeat([]byte("n"), 16<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 65)
	for g := range 64 {
		wg.Go(func() {
			for i := range 10 {
				if err := cycle(noisy, r, fmt.Sprintf("n%d-%d", g, i), body); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			if err := cycle(quiet, r, fmt.Sprintf("q%d", i), []byte("quiet")); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := tracer.peak("noisy"); got > 4 || got < 2 {
		t.Fatalf("the flooding tenant had %d statements in flight at once, want at most its limit of 4 (and a real flood)", got)
	}
	if got := tracer.peak("quiet"); got != 1 {
		t.Fatalf("the quiet tenant had %d statements in flight, want 1 (it runs serially)", got)
	}
}

// TestTenantConcurrencyWaitHonoursContext holds a provisioned tenant's only
// place with an open writer: a call of the same tenant waits in the
// limiter, sending no statement, until its deadline; another tenant goes
// on; the place comes back at Close.
func TestTenantConcurrencyWaitHonoursContext(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	tracer := &statementCounter{}
	r := newHost(t, tenant.NewFactory(rb.dsn).WithConnectionLimits(4, 0).WithTenantConcurrency(1).WithQueryTracer(tracer))
	bg := context.Background()
	for _, id := range []string{"solo", "other"} {
		if err := r.Provision(bg, id); err != nil {
			t.Fatal(err)
		}
	}
	ctx := tenant.WithTenant(bg, "solo")
	conformance.MustStore(t, r, ctx, "warm", []byte("cached")) // the tenant is ensured and cached
	w, err := r.GetDataWriter(ctx, "held")                     // holds the tenant's only place until Close
	if err != nil {
		t.Fatal(err)
	}
	before := tracer.n.Load()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = r.StoreData(short, "m", bytes.NewReader([]byte("x")))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for a place") {
		t.Fatalf("StoreData while the place is held = %v, want DeadlineExceeded while waiting for a place", err)
	}
	if sent := tracer.n.Load() - before; sent != 0 {
		t.Fatalf("the waiting call sent %d statements: it did not wait in the limiter", sent)
	}
	other := tenant.WithTenant(bg, "other")
	if _, err := r.StoreData(other, "m", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatalf("another tenant is blocked: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.StoreData(ctx, "m", bytes.NewReader([]byte("x"))); err != nil {
		t.Fatalf("after Close the place is free again: %v", err)
	}
}

// BenchmarkTenantFairness reports the quiet tenant's p50 and p99 while a
// noisy one floods, without and with a per-tenant limit of 4 (pool of 8).
func BenchmarkTenantFairness(b *testing.B) {
	dsn := benchDatabase(b)
	for _, limit := range []int{0, 4} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			f := tenant.NewFactory(dsn).WithConnectionLimits(8, 8).WithTenantConcurrency(limit).WithTableName("fair")
			var p99, p50 time.Duration
			for b.Loop() {
				p99, p50 = quietP99(b, f, 300)
			}
			b.ReportMetric(float64(p50.Microseconds())/1000, "quiet-p50-ms")
			b.ReportMetric(float64(p99.Microseconds())/1000, "quiet-p99-ms")
		})
	}
}
