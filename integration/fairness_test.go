package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/schema"
	"github.com/pgtenant/pgtenant/tenant"
)

// quietP99 runs serial store+read+delete cycles for a quiet tenant while a
// noisy one floods the same router from 64 goroutines, and returns the quiet
// tenant's p99 and p50 cycle latency.
func quietP99(t testing.TB, f *tenant.Factory, cycles int) (p99, p50 time.Duration) {
	r, err := f.NewRouter()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
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

func TestTenantConcurrencyFairness(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	base := tenant.NewFactory(rb.dsn).WithConnectionLimits(8, 8)
	unlimited, _ := quietP99(t, base, 200)
	limited, _ := quietP99(t, base.WithTenantConcurrency(4), 200)
	t.Logf("quiet tenant p99 while another floods: unlimited %v, limited to 4 per tenant %v", unlimited, limited)
	if limited >= unlimited {
		t.Fatalf("per-tenant limit did not help the quiet tenant: p99 %v with the limit, %v without", limited, unlimited)
	}
}

func TestTenantConcurrencyWaitHonoursContext(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, schema.SchemaPerTenant)
	r, err := tenant.NewFactory(rb.dsn).WithConnectionLimits(4, 0).WithTenantConcurrency(1).NewRouter()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := tenant.WithTenant(context.Background(), "solo")
	w, err := r.GetDataWriter(ctx, "held") // holds the tenant's only place until Close
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := r.StoreData(short, "m", bytes.NewReader([]byte("x"))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StoreData while the place is held = %v, want DeadlineExceeded", err)
	}
	other := tenant.WithTenant(context.Background(), "other")
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
