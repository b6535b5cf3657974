package tenant

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgtenant/pgtenant/internal/affinity"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	datastorage "schneider.vip/retryspool/storage/data"
)

// meterName is the instrumentation scope of pgtenant's metrics.
const meterName = "github.com/pgtenant/pgtenant/tenant"

// observer records metrics and logs. With the defaults (no MeterProvider,
// no Logger) both are no-ops.
type observer struct {
	log           *slog.Logger
	tenantAttr    bool
	ops           metric.Int64Counter
	duration      metric.Float64Histogram
	bytesIn       metric.Int64Counter
	bytesOut      metric.Int64Counter
	ensures       metric.Int64Counter
	ensureTime    metric.Float64Histogram
	cacheHits     metric.Int64Counter
	cacheMisses   metric.Int64Counter
	cacheEvicts   metric.Int64Counter
	registrations []metric.Registration
}

// observerConfig is what the Factory says about metrics and logs.
type observerConfig struct {
	meterProvider metric.MeterProvider
	logger        *slog.Logger
	tenantAttr    bool
}

func newObserver(cfg observerConfig, stat func() affinity.Stat) (*observer, error) {
	mp, log, tenantAttr := cfg.meterProvider, cfg.logger, cfg.tenantAttr
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := mp.Meter(meterName)
	o := &observer{log: log, tenantAttr: tenantAttr}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	o.ops, err = m.Int64Counter("pgtenant.operations", metric.WithDescription("Backend operations by kind and result."))
	add(err)
	o.duration, err = m.Float64Histogram("pgtenant.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of backend operations (for readers and writers: until Close)."))
	add(err)
	o.bytesIn, err = m.Int64Counter("pgtenant.bytes.in", metric.WithUnit("By"), metric.WithDescription("Body bytes stored."))
	add(err)
	o.bytesOut, err = m.Int64Counter("pgtenant.bytes.out", metric.WithUnit("By"), metric.WithDescription("Body bytes read."))
	add(err)
	o.ensures, err = m.Int64Counter("pgtenant.tenant.ensures", metric.WithDescription("Checks or creations of a tenant's objects, by result."))
	add(err)
	o.ensureTime, err = m.Float64Histogram("pgtenant.tenant.ensure.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of tenant ensures."))
	add(err)
	o.cacheHits, err = m.Int64Counter("pgtenant.cache.hits", metric.WithDescription("Writes whose tenant was in the LRU."))
	add(err)
	o.cacheMisses, err = m.Int64Counter("pgtenant.cache.misses", metric.WithDescription("Writes whose tenant was not in the LRU."))
	add(err)
	o.cacheEvicts, err = m.Int64Counter("pgtenant.cache.evictions", metric.WithDescription("Tenants evicted from the LRU (size or staleness)."))
	add(err)
	waits, err := m.Int64ObservableCounter("pgtenant.pool.acquire.waits",
		metric.WithDescription("Connection acquires that had to wait for a connection (pgxpool EmptyAcquireCount)."))
	add(err)
	waitTime, err := m.Float64ObservableCounter("pgtenant.pool.acquire.duration", metric.WithUnit("s"),
		metric.WithDescription("Total time spent acquiring connections (pgxpool AcquireDuration)."))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		s := stat()
		ob.ObserveInt64(waits, s.EmptyAcquireCount)
		ob.ObserveFloat64(waitTime, s.AcquireDuration.Seconds())
		return nil
	}, waits, waitTime)
	if err != nil {
		return nil, err
	}
	o.registrations = append(o.registrations, reg)
	return o, nil
}

func (o *observer) close() {
	for _, r := range o.registrations {
		_ = r.Unregister()
	}
}

// attrs returns the attributes of an event of tenant id.
func (o *observer) attrs(id string, kv ...attribute.KeyValue) metric.MeasurementOption {
	if o.tenantAttr {
		kv = append(kv, attribute.String("tenant", id))
	}
	return metric.WithAttributes(kv...)
}

// result names an operation's outcome for the "result" attribute.
func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, datastorage.ErrDataNotFound):
		return "not_found"
	case errors.Is(err, ErrTenantDeleted):
		return "tenant_deleted"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrQuotaExceeded):
		return "quota_exceeded"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "cancelled"
	case errors.Is(err, ErrConnection):
		return "connection"
	}
	return "error"
}

// op records one finished operation.
func (o *observer) op(ctx context.Context, kind, id string, start time.Time, err error) {
	a := o.attrs(id, attribute.String("op", kind), attribute.String("result", result(err)))
	o.ops.Add(ctx, 1, a)
	o.duration.Record(ctx, time.Since(start).Seconds(), a)
}

// ensure records one tenant ensure.
func (o *observer) ensure(ctx context.Context, id string, start time.Time, err error) {
	a := o.attrs(id, attribute.String("result", result(err)))
	o.ensures.Add(ctx, 1, a)
	o.ensureTime.Record(ctx, time.Since(start).Seconds(), a)
	if err != nil {
		o.log.WarnContext(ctx, "pgtenant: tenant ensure failed", "tenant", id, "err", err)
	} else {
		o.log.DebugContext(ctx, "pgtenant: tenant ensured", "tenant", id, "duration", time.Since(start))
	}
}
