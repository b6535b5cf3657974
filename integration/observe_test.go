package integration

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/pgtenant/pgtenant/integration/conformance"
	"github.com/pgtenant/pgtenant/tenant"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sum returns the sum of an int64 counter's points whose attributes
// include want.
func sum(rm metricdata.ResourceMetrics, name string, want ...attribute.KeyValue) (int64, bool) {
	var total int64
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			found = true
			data, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
		points:
			for _, dp := range data.DataPoints {
				for _, kv := range want {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total, found
}

func TestRouterObservability(t *testing.T) {
	t.Parallel()
	rb := setupRouter(t, tenant.SchemaPerTenant)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	var logs lockedBuffer
	tracer := &statementCounter{}
	r, err := openHost(rb.factory.WithMeterProvider(mp).WithTenantAttribute(true).WithQueryTracer(tracer).
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bg := context.Background()
	ctx := tenant.WithTenant(bg, "metered")
	conformance.MustStore(t, r, ctx, "a", []byte("12345"))
	conformance.MustStore(t, r, ctx, "b", []byte("678"))
	conformance.MustRead(t, r, ctx, "a", []byte("12345"))
	conformance.MustNotFind(t, r, ctx, "missing")
	w, err := r.GetDataWriter(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, strings.NewReader("written")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteData(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := r.Drop(bg, "metered"); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(bg, &rm); err != nil {
		t.Fatal(err)
	}
	tn := attribute.String("tenant", "metered")
	checks := []struct {
		name string
		want int64
		kv   []attribute.KeyValue
	}{
		{"pgtenant.operations", 2, []attribute.KeyValue{attribute.String("op", "store"), attribute.String("result", "ok"), tn}},
		{"pgtenant.operations", 1, []attribute.KeyValue{attribute.String("op", "read"), attribute.String("result", "ok")}},
		{"pgtenant.operations", 1, []attribute.KeyValue{attribute.String("op", "read"), attribute.String("result", "not_found")}},
		{"pgtenant.operations", 1, []attribute.KeyValue{attribute.String("op", "write"), attribute.String("result", "ok")}},
		{"pgtenant.operations", 1, []attribute.KeyValue{attribute.String("op", "delete"), attribute.String("result", "ok")}},
		{"pgtenant.bytes.in", 5 + 3 + 7, nil},
		{"pgtenant.bytes.out", 5, nil},
		{"pgtenant.tenant.ensures", 1, []attribute.KeyValue{attribute.String("result", "ok")}},
		{"pgtenant.cache.misses", 1, nil},
		{"pgtenant.cache.hits", 2, nil},
		{"pgtenant.cache.evictions", 1, nil},
	}
	for _, c := range checks {
		got, found := sum(rm, c.name, c.kv...)
		if !found || got != c.want {
			t.Errorf("%s %v = %d (found %v), want %d", c.name, c.kv, got, found, c.want)
		}
	}
	if _, found := sum(rm, "pgtenant.pool.acquire.waits"); !found {
		t.Error("pool acquire waits not reported")
	}
	if tracer.n.Load() == 0 {
		t.Error("the QueryTracer saw no query")
	}
	for _, want := range []string{"tenant ensured", "tenant dropped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
